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

"""``nova-vtpm-agent``: the nova-vtpm service.

Reads nova.conf (or ``--config-file``), checks that every enabled hook
loads, and runs until SIGTERM or SIGINT, then stops cleanly (exit 0).
"""

import signal
import sys
import threading

from oslo_config import cfg
from oslo_log import log as logging

from nova_vtpm.agent import reconciler as reconciler_mod
from nova_vtpm.agent import request as request_mod
from nova_vtpm.agent import service
from nova_vtpm.clients import openstack
from nova_vtpm import conf as nova_vtpm_conf
from nova_vtpm.hooks import manager as manager_mod
from nova_vtpm import journal as journal_mod
from nova_vtpm import version

LOG = logging.getLogger(__name__)


def build_agent(conf):
    group = conf.nova_vtpm_agent
    journal = journal_mod.Journal(conf.nova_vtpm_journal.connection)
    clients = openstack.Clients(conf)
    context = manager_mod.HookContext(conf, journal, group.host, group.role,
                                      clients)
    manager = manager_mod.HookManager(
        context, group.enabled_hooks, max_attempts=group.max_attempts,
        base_delay=group.retry_base_delay, max_delay=group.retry_max_delay)
    resolver = request_mod.RequestResolver(conf, journal, clients)
    reconciler = None
    if clients.configured:
        reconciler = reconciler_mod.Reconciler(conf, journal, manager,
                                               clients, resolver)
    return service.Agent(conf, journal, manager, reconciler=reconciler,
                         resolver=resolver)


def main(argv=None):
    conf = nova_vtpm_conf.CONF
    logging.register_options(conf)
    try:
        conf(sys.argv[1:] if argv is None else argv, project='nova',
             prog='nova-vtpm-agent',
             version=version.version_info.version_string(),
             default_config_files=nova_vtpm_conf.default_config_files())
    except cfg.Error as e:
        sys.stderr.write('nova-vtpm-agent: configuration error: %s\n' % e)
        return 2
    logging.setup(conf, 'nova-vtpm-agent')
    try:
        agent = build_agent(conf)
        agent.start()
    except (manager_mod.HookLoadError, cfg.Error) as e:
        LOG.error('%s', e)
        sys.stderr.write('nova-vtpm-agent: %s\n' % e)
        return 2

    stop = threading.Event()

    def _on_signal(signum, frame):
        LOG.info('Received signal %d', signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    while not stop.wait(1):
        pass
    agent.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
