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

"""``nova-vtpm instances``: the vTPM servers the inventory hook knows."""

from nova_vtpm.cmd import common

_COLUMNS = [('uuid', 'Instance'), ('host', 'Host'), ('vtpm', 'vTPM'),
            ('secret_security', 'Secret security'),
            ('attestation_mode', 'Attestation'), ('vm_state', 'VM state'),
            ('lifecycle', 'Last event')]


def add_parser(subparsers):
    parser = subparsers.add_parser(
        'instances', help='The vTPM servers nova-vtpm knows.',
        description='vTPM servers recorded by the inventory hook: request, '
                    'host and last lifecycle event.')
    sub = parser.add_subparsers(dest='action', metavar='ACTION')
    sub.required = True
    p = sub.add_parser('list', help='List vTPM servers.')
    p.add_argument('--host', help='Only servers on this host.')
    p.add_argument('--deleted', action='store_true',
                   help='Include deleted servers.')
    common.add_format(p)
    p.set_defaults(func=do_list)
    p = sub.add_parser('show', help='One server.')
    p.add_argument('uuid', help='The instance UUID.')
    common.add_format(p)
    p.set_defaults(func=do_show)


def do_list(args, conf):
    rows = common.journal(conf).list_instances(
        host=args.host, include_deleted=args.deleted)
    if args.format == 'json':
        common.print_json(rows)
        return common.EXIT_OK
    for row in rows:
        row['vtpm'] = ('%s %s' % (row['vtpm_version'], row['vtpm_model'])
                       if row['vtpm_version'] else 'none')
        if row['deleted_at']:
            row['vm_state'] = 'deleted'
    common.print_table(rows, _COLUMNS)
    return common.EXIT_OK


def do_show(args, conf):
    journal = common.journal(conf)
    row = journal.get_instance(args.uuid)
    if row is None:
        return common.error('no vTPM instance %s is known' % args.uuid)
    # The vTPM's identity, where this journal has it (the compute agent's
    # swtpm_state hook records it).
    identity = journal.get_identity(args.uuid)
    row['ek_fingerprint'] = identity['fingerprint'] if identity else None
    if args.format == 'json':
        common.print_json(row)
        return common.EXIT_OK
    for key in ('event_timestamp', 'deleted_at', 'updated_at'):
        row[key] = common.fmt_time(row[key])
    common.print_record(row)
    return common.EXIT_OK
