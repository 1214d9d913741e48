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

"""``nova-vtpm migration preflight``: can a vTPM server move there?"""

import sys
import uuid as uuidlib

from nova_vtpm.cmd import common

_MARK = {'ok': 'ok', 'warn': 'WARN', 'fail': 'FAIL', 'unknown': '??'}


def add_parser(subparsers):
    parser = subparsers.add_parser(
        'migration', help='Migration checks for vTPM servers.',
        description='Checks before moving a vTPM server.')
    sub = parser.add_subparsers(dest='action', metavar='ACTION')
    sub.required = True
    p = sub.add_parser(
        'preflight', help='Can this server move to that host?',
        description='Answer yes or no, with reasons, for a migration of a '
                    "vTPM server: the destination's swtpm, libtpms and "
                    'Nova settings (from the facts its compute agent '
                    'published) against the source and the server. '
                    'Without --destination, every host that published its '
                    'facts is checked. Exit status: 0 yes, 1 no, 2 usage '
                    'or configuration error.')
    p.add_argument('server', help='The instance UUID.')
    p.add_argument('--destination', metavar='HOST',
                   help='The destination host (as Nova names it).')
    p.add_argument('--type', dest='migration_type', default='live',
                   choices=('live', 'cold'),
                   help='live migration (default) or cold migration/resize.')
    p.add_argument('--instances-from', dest='instances_from',
                   default='auto', choices=('auto', 'nova', 'journal'),
                   help='Where the server (host, flavor) comes from: Nova '
                        'when [nova_vtpm_service] is configured, else the '
                        'journal inventory (auto, the default).')
    p.add_argument('--max-age', type=int, metavar='SECONDS',
                   help='Facts older than this are stale (default: '
                        '[nova_vtpm_facts] max_age).')
    common.add_format(p)
    p.set_defaults(func=do_preflight)


def do_preflight(args, conf):
    from nova_vtpm.clients import openstack
    from nova_vtpm import preflight

    try:
        uuidlib.UUID(args.server)
    except ValueError:
        return common.error('%r is not a server UUID' % args.server)
    journal = common.journal(conf)
    clients = openstack.Clients(conf)
    try:
        report = preflight.preflight(
            conf, journal, args.server, destination=args.destination,
            migration_type=args.migration_type, clients=clients,
            source=args.instances_from, max_age=args.max_age)
    except preflight.ServerNotFound as e:
        return common.error(str(e))
    if args.format == 'json':
        common.print_json(report.to_dict())
    else:
        _print_report(report)
    return common.EXIT_OK if report.ok else common.EXIT_PROBLEMS


def _print_report(report):
    out = sys.stdout.write
    server = report.server
    vtpm = server.vtpm
    out('Server %s on %s (from %s): %s; %s migration\n' % (
        server.uuid, server.host or '-', server.source,
        'vTPM %s %s, secret security %s' % (
            vtpm.version, vtpm.model, vtpm.secret_security)
        if vtpm else 'no vTPM', report.migration_type))
    for warning in report.warnings:
        out('warning: %s\n' % warning)
    for verdict in report.verdicts:
        out('\nDestination %s: %s\n' % (
            verdict.destination, 'YES' if verdict.ok else 'NO'))
        for check in verdict.checks:
            out('  %-4s  %-15s %s\n' % (
                _MARK.get(check.status, check.status), check.name,
                check.reason))
    out('\n')
    if server.vtpm is None:
        out('Answer: yes (no vTPM)\n')
    elif report.destination:
        out('Answer: %s\n' % ('yes' if report.ok else 'no'))
    elif report.accepting:
        out('Answer: yes; hosts that can take it: %s\n'
            % ', '.join(report.accepting))
    else:
        out('Answer: no; no host can take it\n')
