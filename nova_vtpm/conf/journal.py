# Copyright 2026 The nova-vtpm Authors
#
#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

from oslo_config import cfg

from nova_vtpm.conf import groups

GROUP_NAME = 'nova_vtpm_journal'

journal_group = cfg.OptGroup(
    GROUP_NAME,
    title='nova-vtpm journal options',
    help="""
The journal records every event the agent receives and each hook's work on
it. A sqlite file serves one agent; agents that share work (controllers)
share one database server.
""")

JOURNAL_OPTS = [
    cfg.StrOpt(
        'connection',
        default='sqlite:////var/lib/nova-vtpm/journal.sqlite',
        secret=True,
        help="""
The SQLAlchemy URL of the journal database.

Possible values:

* ``sqlite:////path/to/file`` (one host);
* ``mysql+pymysql://user:password@host/nova_vtpm`` or
  ``postgresql+psycopg2://user:password@host/nova_vtpm`` (several agents).
"""),
    cfg.IntOpt(
        'retention_days',
        default=7, min=0,
        help="""
Days that finished events (done, skipped, rejected) are kept. Failed and
open events are kept until they are retried or handled. 0 keeps everything.
"""),
]


def register_opts(conf):
    conf.register_group(groups.fresh(journal_group))
    conf.register_opts(JOURNAL_OPTS, group=GROUP_NAME)


def list_opts():
    return {journal_group: JOURNAL_OPTS}
