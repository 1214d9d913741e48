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

"""``nova-vtpm events``: what the agent received and what became of it."""

import json

from nova_vtpm.cmd import common
from nova_vtpm import journal as journal_mod

_COLUMNS = [('id', 'ID'), ('received', 'Received (UTC)'),
            ('event_type', 'Event'), ('instance_uuid', 'Instance'),
            ('host', 'Host'), ('state', 'State'), ('reason', 'Reason')]


def add_parser(subparsers):
    parser = subparsers.add_parser(
        'events', help="The agent's journal of events.",
        description='Events recorded by the agent and the outcome of each '
                    "hook's work on them.")
    sub = parser.add_subparsers(dest='action', metavar='ACTION')
    sub.required = True

    p = sub.add_parser('list', help='List events, newest first.')
    p.add_argument('--state', choices=journal_mod.EVENT_STATES,
                   help='Only events in this state.')
    p.add_argument('--instance', metavar='UUID',
                   help='Only events of this instance.')
    p.add_argument('--limit', type=int, default=50,
                   help='At most this many events (default 50; 0: all).')
    common.add_format(p)
    p.set_defaults(func=do_list)

    p = sub.add_parser('show', help='One event with its work per hook.')
    p.add_argument('id', type=int, help='The event ID.')
    common.add_format(p)
    p.set_defaults(func=do_show)

    p = sub.add_parser('retry', help="Make an event's failed or waiting "
                                     'work due again now.')
    p.add_argument('id', type=int, help='The event ID.')
    p.set_defaults(func=do_retry)


def do_list(args, conf):
    rows = common.journal(conf).list_events(
        state=args.state, instance_uuid=args.instance, limit=args.limit)
    if args.format == 'json':
        common.print_json(rows)
        return common.EXIT_OK
    for row in rows:
        row['received'] = common.fmt_time(row['received_at'])
        if row.get('reason') and len(row['reason']) > 60:
            row['reason'] = row['reason'][:57] + '...'
    common.print_table(rows, _COLUMNS)
    return common.EXIT_OK


def do_show(args, conf):
    event = common.journal(conf).get_event(args.id)
    if event is None:
        return common.error('no event %d' % args.id)
    try:
        event['payload'] = json.loads(event['payload'])
    except (TypeError, ValueError):
        pass
    if args.format == 'json':
        common.print_json(event)
        return common.EXIT_OK
    record = dict(event)
    record['received_at'] = common.fmt_time(event['received_at'])
    record['timestamp'] = common.fmt_time(event['timestamp'])
    common.print_record(record, [
        'id', 'message_id', 'event_type', 'lifecycle', 'instance_uuid',
        'host', 'publisher_id', 'timestamp', 'received_at', 'state',
        'reason'])
    if event['work']:
        print('')
        for work in event['work']:
            work['next_attempt'] = common.fmt_time(work['next_attempt_at'])
        common.print_table(event['work'], [
            ('hook', 'Hook'), ('state', 'State'), ('attempts', 'Attempts'),
            ('next_attempt', 'Next attempt (UTC)'), ('reason', 'Reason')])
    return common.EXIT_OK


def do_retry(args, conf):
    j = common.journal(conf)
    if j.get_event(args.id) is None:
        return common.error('no event %d' % args.id)
    n = j.retry_event(args.id)
    if not n:
        print('Event %d has no failed or waiting work.' % args.id)
        return common.EXIT_PROBLEMS
    print('Event %d: %d work item(s) due again now.' % (args.id, n))
    return common.EXIT_OK
