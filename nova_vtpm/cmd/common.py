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

"""Helpers shared by the ``nova-vtpm`` subcommands."""

import datetime
import json
import sys

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def add_format(parser):
    parser.add_argument('--format', choices=('table', 'json'),
                        default='table',
                        help='Output format (default: table).')


def fmt_time(value):
    if value is None:
        return '-'
    return datetime.datetime.fromtimestamp(
        value, datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S')


def print_json(data):
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True,
                                default=str) + '\n')


def print_table(rows, columns):
    """rows: list of dicts; columns: list of (key, title)."""
    cells = [[title for _, title in columns]]
    for row in rows:
        cells.append(['-' if row.get(key) is None else str(row.get(key))
                      for key, _ in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for n, row in enumerate(cells):
        sys.stdout.write('  '.join(c.ljust(w) for c, w in
                                   zip(row, widths)).rstrip() + '\n')
        if n == 0:
            sys.stdout.write('  '.join('-' * w for w in widths) + '\n')


def print_record(record, keys=None):
    keys = keys or list(record)
    width = max(len(k) for k in keys)
    for key in keys:
        value = record.get(key)
        sys.stdout.write('%s  %s\n' % (key.ljust(width),
                                       '-' if value is None else value))


def journal(conf):
    """The journal the agent writes; never a new, empty one.

    :raises: SystemExit(2) when a sqlite journal file does not exist: the
        configuration probably does not point at the agent's journal.
    """
    import os

    from nova_vtpm import journal as journal_mod
    url = conf.nova_vtpm_journal.connection
    if url.startswith('sqlite:///'):
        path = url[len('sqlite:///'):]
        if path != ':memory:' and not os.path.exists(path):
            raise SystemExit(error(
                'no journal at %s: is [nova_vtpm_journal] connection the '
                "agent's (use --config-file)?" % path))
    j = journal_mod.Journal(url)
    j.upgrade()
    return j


def error(message):
    sys.stderr.write('nova-vtpm: error: %s\n' % message)
    return EXIT_USAGE
