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

"""``nova-vtpm reconcile --once``: compare Nova with the journal now."""

from nova_vtpm.cmd import common


def add_parser(subparsers):
    p = subparsers.add_parser(
        'reconcile', help='Compare Nova with the journal and repair drift.',
        description='List every server through the Nova API (all projects, '
                    'paginated; needs the [nova_vtpm_service] credentials), '
                    "work out each one's vTPM, and give every enabled hook "
                    'the chance to repair drift.')
    p.add_argument('--once', action='store_true', required=True,
                   help='Run one reconciliation and exit.')
    common.add_format(p)
    p.set_defaults(func=do_reconcile)


def do_reconcile(args, conf):
    from nova_vtpm.cmd import agent as agent_cmd
    agent = agent_cmd.build_agent(conf)
    if agent.reconciler is None:
        return common.error('reconciliation needs the [nova_vtpm_service] '
                            'credentials (auth_type and its options)')
    agent.journal.upgrade()
    report = agent.reconciler.run()
    if args.format == 'json':
        common.print_json(report)
    else:
        print('Servers: %(servers)d, with a vTPM: %(vtpm_servers)d, '
              '%(total_seconds).2f s' % report)
        for hook, result in sorted(report['hooks'].items()):
            print('  %s: %s' % (hook, ', '.join(
                '%s=%s' % kv for kv in sorted(result.items())) or 'nothing'))
    failed = any('error' in r for r in report['hooks'].values())
    return common.EXIT_PROBLEMS if failed else common.EXIT_OK
