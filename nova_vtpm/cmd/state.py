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

"""``nova-vtpm state``: the vTPM states of this compute host.

* ``list``: the recorded identities and their backups;
* ``backup <server>``: check and back up now;
* ``verify <server>``: the state opens with the current secret and holds
  the recorded TPM (exit 1 otherwise, with swtpm's own words);
* ``restore <server>``: put a backup back, once Nova says the server is
  SHUTOFF, and prove the result.

Run on the compute host that has the state, as root (or the swtpm user),
with the configuration of that host's agent.
"""

import sys

from nova_vtpm.clients import openstack
from nova_vtpm.cmd import common
from nova_vtpm.hooks import base as hooks_base
from nova_vtpm.hooks import manager as manager_mod
from nova_vtpm.hooks import swtpm_state
from nova_vtpm import secrets as secrets_mod
from nova_vtpm.swtpm import exception as swtpm_exc

_LIST_COLUMNS = [
    ('instance_uuid', 'Instance'), ('host', 'Host'),
    ('secret_security', 'Mode'), ('fingerprint_short', 'Identity'),
    ('last_result', 'Result'), ('verified', 'Verified (UTC)'),
    ('backups', 'Backups'), ('last_backup_id', 'Last backup'),
    ('deleted', 'Deleted (UTC)')]
_BACKUP_COLUMNS = [
    ('backup_id', 'Backup'), ('created_at', 'Created'), ('reason', 'Reason'),
    ('host', 'Host'), ('fingerprint_short', 'Identity'), ('size', 'Bytes'),
    ('matches', 'Recorded TPM')]


def add_parser(subparsers):
    parser = subparsers.add_parser(
        'state', help='vTPM state identities, backups and restore.',
        description="The vTPM states of this compute host: their recorded "
                    'TPM identities, backups, checks and restore. Run on '
                    'the compute host, as root.')
    sub = parser.add_subparsers(dest='action', metavar='ACTION')
    sub.required = True

    p = sub.add_parser('list', help='Recorded identities and backups.')
    p.add_argument('--instance', metavar='UUID',
                   help='Only this instance, with each of its backups.')
    common.add_format(p)
    p.set_defaults(func=do_list)

    for name, func, text in (
            ('backup', do_backup, 'Check the state and back it up now.'),
            ('verify', do_verify, 'Check that the state opens with the '
                                  'current secret and holds the recorded '
                                  'TPM; exit 1 otherwise.')):
        p = sub.add_parser(name, help=text, description=text)
        _add_server_args(p)
        common.add_format(p)
        p.set_defaults(func=func)

    p = sub.add_parser(
        'restore', help='Restore a backup (the server must be SHUTOFF).',
        description='Restore a backup into the state directory: refused '
                    'unless Nova says the server is SHUTOFF; the backup is '
                    'checked against its manifest, swapped in atomically '
                    '(owner [nova_vtpm_state] swtpm_user/swtpm_group, files '
                    '0600) and proven to open with the current secret and '
                    'to hold the recorded TPM.')
    _add_server_args(p)
    p.add_argument('--backup', metavar='ID',
                   help='The backup to restore (default: the newest with '
                        'the recorded identity).')
    p.add_argument('--skip-nova-check', action='store_true',
                   help='Do not ask Nova whether the server is SHUTOFF '
                        '(Nova or this host is down). DANGEROUS: restoring '
                        'under a running guest loses what it wrote since.')
    common.add_format(p)
    p.set_defaults(func=do_restore)


def _add_server_args(p):
    p.add_argument('server', metavar='SERVER_UUID', help='The server.')
    p.add_argument('--secret-security', choices=secrets_mod.MODES,
                   help="The server's hw:tpm_secret_security (default: as "
                        'recorded, else from Nova, else user).')
    p.add_argument('--secret-file', metavar='PATH',
                   help="A file holding the server's vTPM secret (the "
                        'Barbican payload), for user mode where only the '
                        'owner can read it.')


def _hook(conf):
    group = conf.nova_vtpm_agent
    context = manager_mod.HookContext(conf, common.journal(conf),
                                      group.host, 'compute',
                                      openstack.Clients(conf))
    return swtpm_state.SwtpmStateHook(context)


def _read_secret(path):
    with open(path, 'rb') as f:
        data = f.read()
    # A trailing newline from an editor or "echo" is not part of it.
    return data.rstrip(b'\r\n')


def _nova_server(hook, uuid):
    clients = hook.context.clients
    if clients is None or not clients.configured:
        return None
    return clients.nova().servers.get(uuid)


def _server_vtpm(hook, args):
    """(version, mode) of the server: recorded, inventory, Nova, default."""
    uuid = args.server
    record = hook.journal.get_identity(uuid) or {}
    known = hook.journal.get_instance(uuid) or {}
    version = record.get('tpm_version') or known.get('vtpm_version')
    mode = (args.secret_security or record.get('secret_security') or
            known.get('secret_security'))
    if mode is None or version is None:
        try:
            server = _nova_server(hook, uuid)
        except Exception as e:
            sys.stderr.write('nova-vtpm: warning: cannot ask Nova about '
                             'server %s: %s\n' % (uuid, e))
            server = None
        specs = ((getattr(server, 'flavor', None) or {}).get(
            'extra_specs') or {}) if server is not None else {}
        version = version or specs.get('hw:tpm_version')
        mode = mode or specs.get('hw:tpm_secret_security')
    return version or '2.0', mode or secrets_mod.USER


def _secret(args):
    return _read_secret(args.secret_file) if args.secret_file else None


def _short(fingerprint):
    return fingerprint[:16] if fingerprint else None


def _size(manifest):
    return sum(int(f.get('size') or 0) for f in manifest.get('files') or ())


def do_list(args, conf):
    hook = _hook(conf)
    records = hook.journal.list_identities()
    if args.instance:
        records = [r for r in records if r['instance_uuid'] == args.instance]
        backups = hook.store.list(args.instance)
        record = records[0] if records else None
        if args.format == 'json':
            common.print_json({'identity': record, 'backups': backups})
            return common.EXIT_OK
        if record is None and not backups:
            return common.error('nothing is known of instance %s'
                                % args.instance)
        if record is not None:
            shown = dict(record)
            for key in ('first_seen', 'last_verified', 'last_backup_at',
                        'deleted_at', 'updated_at'):
                shown[key] = common.fmt_time(record.get(key))
            common.print_record(shown, [
                'instance_uuid', 'host', 'tpm_version', 'secret_security',
                'fingerprint', 'ek_cert_sha256', 'ek_pub_sha256',
                'ek_cert_subject', 'permall_size', 'permall_sha256',
                'first_seen', 'last_verified', 'last_result', 'last_detail',
                'alarm_action', 'last_backup_id', 'last_backup_at',
                'deleted_at'])
            print('')
        fingerprint = record.get('fingerprint') if record else None
        rows = [dict(m, fingerprint_short=_short(m.get('fingerprint')),
                     size=_size(m),
                     matches=('-' if not fingerprint or not
                              m.get('fingerprint') else
                              'yes' if m.get('fingerprint') == fingerprint
                              else 'NO'))
                for m in backups]
        common.print_table(rows, _BACKUP_COLUMNS)
        return common.EXIT_OK
    for record in records:
        try:
            record['backups'] = len(hook.store.list(record['instance_uuid']))
        except Exception as e:
            record['backups'] = 'error: %s' % e
    if args.format == 'json':
        common.print_json(records)
        return common.EXIT_OK
    for record in records:
        record['fingerprint_short'] = _short(record.get('fingerprint'))
        record['verified'] = common.fmt_time(record.get('last_verified'))
        record['deleted'] = (common.fmt_time(record['deleted_at'])
                             if record.get('deleted_at') else None)
    common.print_table(records, _LIST_COLUMNS)
    return common.EXIT_OK


def _report(args, result, extra=None):
    data = {'instance_uuid': result.instance_uuid, 'result': result.result,
            'kind': result.kind, 'detail': result.detail,
            'fingerprint': result.identity.fingerprint
            if result.identity else None,
            'expected_fingerprint': result.expected,
            'backup_id': result.backup_id}
    data.update(extra or {})
    if args.format == 'json':
        common.print_json(data)
    else:
        common.print_record(data, list(data))


def _check_errors(func):
    """Map the guard's errors to messages and exit codes."""
    def wrapper(args, conf):
        try:
            return func(args, conf)
        except (hooks_base.RetryLater,
                secrets_mod.SecretServiceUnavailable) as e:
            sys.stderr.write('nova-vtpm: %s (try again)\n' % e)
            return common.EXIT_PROBLEMS
        except hooks_base.PermanentFailure as e:
            return common.error(str(e))
        except secrets_mod.SecretUnavailable as e:
            sys.stderr.write('nova-vtpm: %s. Pass the secret with '
                             '--secret-file.\n' % e)
            return common.EXIT_PROBLEMS
        except swtpm_exc.SwtpmError as e:
            cause = getattr(e, 'cause', None)
            sys.stderr.write('nova-vtpm: %s\n' % e)
            if cause is not None:
                sys.stderr.write('nova-vtpm: cause: %s\n' % cause)
            return common.EXIT_PROBLEMS
        except OSError as e:
            return common.error(str(e))
    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


@_check_errors
def do_verify(args, conf):
    hook = _hook(conf)
    version, mode = _server_vtpm(hook, args)
    result = hook.check(args.server, version, mode, trigger='cli',
                        alarm=False, backup=False, secret=_secret(args))
    if result.result == swtpm_state.FIRST_SEEN:
        # check() recorded it: nothing to compare with before.
        result.detail = ('no identity was recorded for this instance; '
                         'recorded now: %s' % result.identity.fingerprint)
    _report(args, result, {'secret_security': mode})
    if result.result == swtpm_state.OK:
        return common.EXIT_OK
    if result.result != swtpm_state.FIRST_SEEN:
        sys.stderr.write('nova-vtpm: %s\n' % result.detail)
    return common.EXIT_PROBLEMS


@_check_errors
def do_backup(args, conf):
    hook = _hook(conf)
    version, mode = _server_vtpm(hook, args)
    result = hook.backup_now(args.server, version, mode,
                             secret=_secret(args))
    _report(args, result, {'secret_security': mode})
    if result.backup_id is None:
        sys.stderr.write('nova-vtpm: no backup made: %s\n' % result.detail)
        return common.EXIT_PROBLEMS
    return common.EXIT_OK


@_check_errors
def do_restore(args, conf):
    hook = _hook(conf)
    uuid = args.server
    if args.skip_nova_check:
        sys.stderr.write(
            '*** WARNING: --skip-nova-check: NOT asking Nova whether server '
            '%s is stopped. If its guest runs, or runs elsewhere, restoring '
            'its vTPM state here loses what the guest wrote to its TPM '
            'since the backup, or gives two hosts the same TPM. Use this '
            'only when Nova or the host is down. ***\n' % uuid)
    else:
        try:
            server = _nova_server(hook, uuid)
        except Exception as e:
            return common.error(
                'cannot ask Nova whether server %s is SHUTOFF: %s (only if '
                'Nova is down for good: --skip-nova-check)' % (uuid, e))
        if server is None:
            return common.error(
                'restore asks Nova whether the server is SHUTOFF, which '
                'needs the [nova_vtpm_service] credentials (or '
                '--skip-nova-check when Nova is down)')
        status = getattr(server, 'status', None)
        if status != 'SHUTOFF':
            sys.stderr.write(
                'nova-vtpm: server %s is %s, not SHUTOFF: stop it first '
                '("openstack server stop %s").\n' % (uuid, status, uuid))
            return common.EXIT_PROBLEMS
        server_host = getattr(server, 'OS-EXT-SRV-ATTR:host', None)
        if server_host and server_host != hook.host:
            sys.stderr.write(
                'nova-vtpm: server %s is on host %s, not on this host (%s): '
                'run the restore there.\n' % (uuid, server_host, hook.host))
            return common.EXIT_PROBLEMS
    version, mode = _server_vtpm(hook, args)
    identity, manifest = hook.restore(uuid, version, mode,
                                      backup_id=args.backup,
                                      secret=_secret(args))
    data = {'instance_uuid': uuid, 'backup_id': manifest['backup_id'],
            'backup_created_at': manifest.get('created_at'),
            'fingerprint': identity.fingerprint,
            'ek_cert_sha256': identity.ek_cert_sha256,
            'state_dir': hook.state_dir(uuid, version).path,
            'result': 'restored; the state opens with the current secret '
                      'and holds the recorded TPM'}
    if args.format == 'json':
        common.print_json(data)
    else:
        common.print_record(data, list(data))
    return common.EXIT_OK
