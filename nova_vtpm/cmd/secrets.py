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

"""``nova-vtpm secrets audit``: vTPM secrets and states left behind."""

import sys

from nova_vtpm.cmd import common

_COLUMNS = [('kind', 'Kind'), ('id', 'Secret / directory'),
            ('instance', 'Instance'), ('status', 'Status'),
            ('action', 'Action'), ('reason', 'Why')]


def add_parser(subparsers):
    parser = subparsers.add_parser(
        'secrets', help='vTPM secret hygiene.',
        description='vTPM secrets and states left behind.')
    sub = parser.add_subparsers(dest='action', metavar='ACTION')
    sub.required = True
    p = sub.add_parser(
        'audit', help='Find (and remove) orphaned vTPM secrets and states.',
        description='Find Barbican secrets named "vTPM secret for instance '
                    '<uuid>" whose instance is gone, libvirt secrets of '
                    'usage type vtpm and state directories under the state '
                    'root without an instance on this host. Instance '
                    'existence comes from Nova (all projects) or, when Nova '
                    'is not configured or unreachable, from the journal '
                    'inventory (then only recorded deletions count). '
                    'Secret values are never read. Exit status: 0 nothing '
                    'left to remove, 1 orphans left or a part of the audit '
                    'failed, 2 usage or configuration error.')
    p.add_argument('--fix', action='store_true',
                   help='Remove the orphans (Barbican DELETE, virsh '
                        'secret-undefine, the directory) and report each '
                        'action.')
    p.add_argument('--host', help="This host's name as Nova knows it "
                                  '(default: [nova_vtpm_agent] host).')
    p.add_argument('--only', action='append', metavar='PART',
                   choices=('barbican', 'libvirt', 'state_dir'),
                   help='Audit only this part (repeatable): barbican, '
                        'libvirt, state_dir. Default: all.')
    p.add_argument('--instances-from', dest='instances_from',
                   default='auto', choices=('auto', 'nova', 'journal'),
                   help='Where instance existence comes from (default auto: '
                        'Nova when configured and reachable, else the '
                        'journal inventory).')
    p.add_argument('--all', dest='show_all', action='store_true',
                   help='Table format: also list what is in use.')
    common.add_format(p)
    p.set_defaults(func=do_audit)


def do_audit(args, conf):
    from nova_vtpm import audit
    from nova_vtpm.clients import openstack

    journal = common.journal(conf)
    clients = openstack.Clients(conf)
    host = args.host or conf.nova_vtpm_agent.host
    auditor = audit.Auditor(conf, journal, clients, host,
                            instances_from=args.instances_from,
                            sections=args.only or audit.SECTIONS)
    try:
        report = auditor.run(fix=args.fix)
    except ValueError as e:
        return common.error(str(e))
    if args.format == 'json':
        common.print_json(report.to_dict())
    else:
        _print_report(report, args.show_all)
    return common.EXIT_OK if report.ok else common.EXIT_PROBLEMS


def _print_report(report, show_all):
    from nova_vtpm import audit

    out = sys.stdout.write
    out('vTPM secrets audit of host %s (%s); instances from %s%s\n' % (
        report.host, ', '.join(report.sections), report.instance_source,
        '; fixing' if report.fix else ''))
    for warning in report.warnings:
        out('warning: %s\n' % warning)
    for note in report.notes:
        out('note: %s\n' % note)
    for section, error in sorted(report.errors.items()):
        out('error: %s: %s\n' % (section, error))
    rows = [f.to_dict() for f in report.findings
            if show_all or f.status not in (audit.IN_USE,)]
    out('\n')
    if rows:
        common.print_table(rows, _COLUMNS)
    else:
        out('Nothing found.\n')
    counts = report.counts()
    out('\n%s\n' % (', '.join('%s %d' % kv for kv in sorted(counts.items()))
                    or 'No vTPM secrets or states found.'))
    left = report.remaining_orphans
    if report.fix:
        fixed = [f for f in report.findings if f.fixed]
        out('Removed %d orphan(s); %d left.\n' % (len(fixed), len(left)))
    elif left:
        out('%d orphan(s): run with --fix to remove them.\n' % len(left))
