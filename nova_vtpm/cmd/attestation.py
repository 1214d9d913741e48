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

"""``nova-vtpm attestation list|show``: Keylime enrolment of the servers.

What the keylime hook recorded for each attested server: its enrolment
state (waiting, enrolled, refused, failed, removed), the verifier's
operational state, attestation status and count as last seen (at the last
event or reconciliation), the last successful attestation and the last
failure's reason, and the failure action applied. ``--live`` asks the
verifier for its current view instead (``[nova_vtpm_keylime]``).
"""

from nova_vtpm.cmd import common

STATES = ('waiting', 'enrolled', 'refused', 'failed', 'removed')

_COLUMNS = [('instance_uuid', 'Instance'), ('mode', 'Mode'),
            ('state', 'Enrolment'), ('verifier_state', 'Verifier state'),
            ('attestation_status', 'Attestation'),
            ('attestation_count', 'Count'),
            ('last_success_at', 'Last success'),
            ('action', 'Action'), ('failure', 'Last failure')]

_SHOW_KEYS = ('instance_uuid', 'mode', 'state', 'host', 'project_id',
              'tpm_policy', 'agent_ip', 'agent_port', 'ek_subject',
              'waiting_since', 'enrolled_at', 'operational_state',
              'operational_state_name', 'attestation_status',
              'attestation_count', 'last_success', 'last_failure_reason',
              'last_failure_at', 'action', 'action_at', 'updated_at',
              'live')
_TIMES = ('waiting_since', 'enrolled_at', 'last_success', 'last_failure_at',
          'action_at', 'updated_at')


def add_parser(subparsers):
    parser = subparsers.add_parser(
        'attestation', help='Keylime enrolment and attestation of servers.',
        description='What the keylime hook recorded for each attested '
                    'server: enrolment state, verifier operational state, '
                    'attestation status and count, last success, last '
                    'failure reason.')
    sub = parser.add_subparsers(dest='action', metavar='ACTION')
    sub.required = True
    p = sub.add_parser('list', help='List attested servers.')
    p.add_argument('--state', choices=STATES,
                   help='Only servers in this enrolment state.')
    p.add_argument('--all', action='store_true',
                   help='Include removed (deleted) servers.')
    p.add_argument('--live', action='store_true',
                   help="Ask the verifier for each agent's current status "
                        '(one bulk call).')
    common.add_format(p)
    p.set_defaults(func=do_list)
    p = sub.add_parser('show', help='One server.')
    p.add_argument('uuid', help='The instance UUID.')
    p.add_argument('--live', action='store_true',
                   help="Ask the verifier for the agent's current status.")
    common.add_format(p)
    p.set_defaults(func=do_show)


def _verifier(conf):
    from nova_vtpm.keylime import client
    if not conf.nova_vtpm_keylime.verifier_url:
        raise SystemExit(common.error(
            '--live needs [nova_vtpm_keylime] verifier_url and its TLS '
            'files'))
    return client.VerifierClient.from_conf(conf)


def _live(status):
    if status is None:
        return {'known': False}
    return {'known': True, 'operational_state': status.operational_state,
            'operational_state_name': status.state_name,
            'attestation_status': status.attestation_status,
            'attestation_count': status.attestation_count,
            'last_success': status.last_successful_attestation,
            'last_event_id': status.last_event_id}


def _merge_live(row, live):
    row['live'] = live
    if live.get('known'):
        for key in ('operational_state', 'operational_state_name',
                    'attestation_status', 'attestation_count'):
            row[key] = live[key]
        if live.get('last_success'):
            row['last_success'] = float(live['last_success'])
    else:
        row['operational_state_name'] = 'not in verifier'
    return row


def _keylime_error(e):
    return common.error('cannot reach the Keylime verifier: %s' % e)


def _for_table(row):
    row = dict(row)
    name = row.get('operational_state_name')
    if name and row.get('operational_state') is not None:
        name = '%s (%s)' % (name, row['operational_state'])
    row['verifier_state'] = name
    row['last_success_at'] = (common.fmt_time(row['last_success'])
                              if row.get('last_success') else None)
    reason = row.get('last_failure_reason')
    if reason and len(reason) > 60:
        reason = reason[:57] + '...'
    row['failure'] = reason
    return row


def do_list(args, conf):
    from nova_vtpm.keylime import client
    rows = common.journal(conf).list_attestations(
        state=args.state, include_removed=args.all or
        args.state == 'removed')
    if args.live:
        try:
            statuses = _verifier(conf).list_agents(bulk=True)
        except client.KeylimeError as e:
            return _keylime_error(e)
        rows = [_merge_live(row, _live(statuses.get(row['instance_uuid'])))
                for row in rows]
    if args.format == 'json':
        common.print_json(rows)
        return common.EXIT_OK
    common.print_table([_for_table(r) for r in rows], _COLUMNS)
    return common.EXIT_OK


def do_show(args, conf):
    from nova_vtpm.keylime import client
    row = common.journal(conf).get_attestation(args.uuid)
    if row is None:
        return common.error('nova-vtpm has no attestation record of '
                            'instance %s' % args.uuid)
    if args.live:
        verifier = _verifier(conf)
        try:
            status = verifier.get_agent(args.uuid)
        except client.AgentNotFound:
            status = None
        except client.KeylimeError as e:
            return _keylime_error(e)
        row = _merge_live(row, _live(status))
    if args.format == 'json':
        common.print_json(row)
        return common.EXIT_OK
    for key in _TIMES:
        if row.get(key) is not None:
            row[key] = common.fmt_time(row[key])
    common.print_record(row, [k for k in _SHOW_KEYS if k in row])
    return common.EXIT_OK
