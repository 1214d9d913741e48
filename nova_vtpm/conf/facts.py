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

"""Host facts: what each compute host's swtpm can do, for migration checks.

Every compute agent publishes its host's facts (swtpm and libtpms versions
and capabilities, Nova's ``[libvirt] swtpm_enabled`` and
``supported_tpm_secret_security``, the file system of the state root) as a
``nova_vtpm.host.facts`` notification on the agent's own topic and
exchange; every agent records the latest facts of each host in the journal,
where ``nova-vtpm migration preflight`` reads them.
"""

from oslo_config import cfg

from nova_vtpm.conf import groups

GROUP_NAME = 'nova_vtpm_facts'

facts_group = cfg.OptGroup(
    GROUP_NAME,
    title='nova-vtpm host facts',
    help=__doc__)

FACTS_OPTS = [
    cfg.BoolOpt(
        'publish',
        default=True,
        help="""
Whether a compute agent (``[nova_vtpm_agent] role = compute``) publishes its
host's facts. Controllers never publish; every agent records what it
receives.
"""),
    cfg.IntOpt(
        'publish_interval',
        default=600, min=0,
        help="""
Seconds between two publications of this host's facts (they are also
published when the agent starts). Package upgrades under a running agent are
seen at the next publication. 0: only at start.

Related options:

* ``max_age``
"""),
    cfg.IntOpt(
        'max_age',
        default=1800, min=1,
        help="""
Seconds after which ``nova-vtpm migration preflight`` counts a host's facts
as stale (its agent may be down or its packages changed since): a stale
destination is refused. Keep it above ``publish_interval``.
"""),
]


def register_opts(conf):
    conf.register_group(groups.fresh(facts_group))
    conf.register_opts(FACTS_OPTS, group=GROUP_NAME)


def list_opts():
    return {facts_group: FACTS_OPTS}
