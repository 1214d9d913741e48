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

"""Backups of vTPM state: ciphertext only, verified, restorable.

A backup is the state files of one instance copied AS-IS (still encrypted
with the instance's key: nothing here decrypts them) plus a JSON manifest:
the instance, each file's size and sha256, the TPM identity fingerprint if
it was read, the swtpm and libtpms versions, the time and the reason.

Backups live in a :class:`StateStore`, loaded by name from the stevedore
namespace ``nova_vtpm.state_stores`` (``local``:
:class:`LocalDirectoryStore`, the default).

:func:`restore` never leaves a half-written state: it checks the backup,
writes it into a new sibling directory, proves that the new state opens
with the secret and holds the expected TPM, and only then swaps it in by
rename; the original is kept until the swap has succeeded.
"""

import abc
import datetime
import grp
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import stat
import tempfile

from oslo_log import log as logging
from stevedore import driver

from nova_vtpm.swtpm import capabilities
from nova_vtpm.swtpm import exception
from nova_vtpm.swtpm import keys
from nova_vtpm.swtpm import state as state_mod

LOG = logging.getLogger(__name__)

STORE_NAMESPACE = 'nova_vtpm.state_stores'
DEFAULT_STORE = 'local'
MANIFEST = 'manifest.json'
MANIFEST_FORMAT = 1
DIR_MODE = 0o700
FILE_MODE = 0o600
# Directories libvirt creates above a state dir are traversable (0711).
PARENT_MODE = 0o711

_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$')


def check_name(name):
    """A uuid, backup id or file name safe as one path component."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise exception.InvalidStoreName(name=name)
    return name


def new_backup_id(now=None):
    """A sortable, unique backup id: ``20261204T210027123456Z-1a2b3c``."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return '%s-%s' % (now.strftime('%Y%m%dT%H%M%S%fZ'), secrets.token_hex(3))


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path, data, mode=FILE_MODE):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                 mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


class StateStore(abc.ABC):
    """Where vTPM state backups are kept.

    A backup is addressed by (instance uuid, backup id) and is a set of
    files ({name: bytes}) with a manifest (a JSON-able dict). Stores must
    make :meth:`put` all-or-nothing: a backup is listed only once all of it
    is stored.
    """

    @abc.abstractmethod
    def put(self, instance_uuid, backup_id, files, manifest):
        """Store a backup; fails if it already exists."""

    @abc.abstractmethod
    def get(self, instance_uuid, backup_id):
        """(manifest, {name: bytes}) of a backup.

        :raises BackupNotFound: if there is no such backup.
        """

    @abc.abstractmethod
    def get_manifest(self, instance_uuid, backup_id):
        """The manifest of a backup.

        :raises BackupNotFound: if there is no such backup.
        """

    @abc.abstractmethod
    def list(self, instance_uuid):
        """The manifests of an instance's backups, oldest first."""

    @abc.abstractmethod
    def delete(self, instance_uuid, backup_id):
        """Delete a backup; deleting a missing backup is not an error."""


class LocalDirectoryStore(StateStore):
    """Backups in a local directory: ``<root>/<uuid>/<backup id>/``.

    Each backup directory holds ``manifest.json`` and the state files.
    Directories are 0700, files 0600. A backup is written in a hidden
    ``.incoming-*`` directory, fsynced and renamed into place.

    :param root: the directory (created 0700 if missing).
    """

    def __init__(self, root):
        self.root = os.path.abspath(root)
        os.makedirs(self.root, mode=DIR_MODE, exist_ok=True)

    def __repr__(self):
        return 'LocalDirectoryStore(%r)' % self.root

    def _path(self, instance_uuid, *backup_id):
        """The instance's directory, or a backup's with a backup id."""
        return os.path.join(self.root, check_name(instance_uuid),
                            *[check_name(b) for b in backup_id])

    def put(self, instance_uuid, backup_id, files, manifest):
        final = self._path(instance_uuid, backup_id)
        parent = os.path.dirname(final)
        os.makedirs(parent, mode=DIR_MODE, exist_ok=True)
        if os.path.lexists(final):
            raise FileExistsError('backup %s of %s exists'
                                  % (backup_id, instance_uuid))
        incoming = tempfile.mkdtemp(prefix='.incoming-', dir=parent)
        try:
            os.chmod(incoming, DIR_MODE)
            for name, data in files.items():
                if check_name(name) == MANIFEST:
                    raise exception.InvalidStoreName(name=name)
                _write_file(os.path.join(incoming, name), data)
            _write_file(os.path.join(incoming, MANIFEST),
                        json.dumps(manifest, indent=1,
                                   sort_keys=True).encode('utf-8'))
            _fsync_dir(incoming)
            os.rename(incoming, final)
            _fsync_dir(parent)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise

    def _read_manifest(self, path, instance_uuid, backup_id):
        try:
            with open(os.path.join(path, MANIFEST), 'rb') as f:
                return json.loads(f.read().decode('utf-8'))
        except FileNotFoundError:
            raise exception.BackupNotFound(
                backup_id=backup_id, instance_uuid=instance_uuid,
                store=self)
        except ValueError as exc:
            raise exception.BackupCorrupt(
                backup_id=backup_id, instance_uuid=instance_uuid,
                reason='unreadable manifest: %s' % exc)

    def get_manifest(self, instance_uuid, backup_id):
        return self._read_manifest(self._path(instance_uuid, backup_id),
                                   instance_uuid, backup_id)

    def get(self, instance_uuid, backup_id):
        path = self._path(instance_uuid, backup_id)
        manifest = self._read_manifest(path, instance_uuid, backup_id)
        files = {}
        for entry in os.scandir(path):
            if entry.name != MANIFEST and entry.is_file(
                    follow_symlinks=False):
                with open(entry.path, 'rb') as f:
                    files[entry.name] = f.read()
        return manifest, files

    def list(self, instance_uuid):
        path = self._path(instance_uuid)
        try:
            names = sorted(n for n in os.listdir(path)
                           if not n.startswith('.'))
        except FileNotFoundError:
            return []
        manifests = []
        for name in names:
            try:
                manifests.append(self._read_manifest(
                    os.path.join(path, name), instance_uuid, name))
            except exception.SwtpmError as exc:
                LOG.warning('Skipping vTPM state backup %s of %s: %s',
                            name, instance_uuid, exc)
        return sorted(manifests, key=lambda m: (m.get('created_at', ''),
                                                m.get('backup_id', '')))

    def delete(self, instance_uuid, backup_id):
        path = self._path(instance_uuid, backup_id)
        doomed = os.path.join(os.path.dirname(path),
                              '.deleting-%s' % backup_id)
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed)


def load_store(name=DEFAULT_STORE, **kwargs):
    """Load a :class:`StateStore` by entry-point name.

    :param name: the name in ``nova_vtpm.state_stores`` (``local``).
    :param kwargs: the store's constructor arguments (``root=...``).
    """
    return driver.DriverManager(STORE_NAMESPACE, name, invoke_on_load=True,
                                invoke_kwds=kwargs).driver


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def backup(state_dir, store, identity=None, instance_uuid=None, reason='',
           host_facts=None, now=None):
    """Back up an instance's vTPM state files, as they are (ciphertext).

    Each file is read once; the manifest's sizes and digests are those of
    the bytes stored. A state that is missing, empty or visibly damaged is
    refused, so that a broken state never displaces good backups.

    :param state_dir: a :class:`~nova_vtpm.swtpm.state.StateDir`.
    :param store: a :class:`StateStore`.
    :param identity: the :class:`~nova_vtpm.swtpm.state.Identity` read from
        this state, if any; its fingerprint goes into the manifest.
    :param instance_uuid: defaults to the state directory's.
    :param reason: why (``post-migration``, ``periodic``, ...).
    :param host_facts: a :class:`~nova_vtpm.swtpm.capabilities.HostFacts`;
        probed (and cached) if None.
    :returns: the manifest (a dict; ``backup_id`` is in it).
    :raises StateUnreadable: if there is nothing sound to back up.
    """
    instance_uuid = check_name(instance_uuid or state_dir.instance_uuid)
    path = state_dir.path
    try:
        files = state_mod.read_state_files(path)
        st = os.stat(path)
    except FileNotFoundError:
        raise exception.StateUnreadable(
            exception.MISSING_DIR, path, 'nothing to back up')
    except PermissionError as exc:
        raise exception.StateUnreadable(exception.NO_ACCESS, path, str(exc))
    permall = files.get(state_dir.permall_name)
    if permall is None:
        raise exception.StateUnreadable(
            exception.EMPTY_STATE, path,
            'no %s to back up' % state_dir.permall_name)
    header = state_mod.parse_blob_header(permall)
    if header is None or header.problems:
        raise exception.StateUnreadable(
            exception.TRUNCATED_OR_CORRUPT, path,
            'not backing up a damaged state: %s' % (
                '; '.join(header.problems) if header
                else 'shorter than its header'))
    for name in files:
        check_name(name)
    if host_facts is None:
        host_facts = capabilities.host_facts()
    now = now or _now()
    backup_id = new_backup_id(now)
    permall_sha256 = _sha256(permall)
    identity_info = None
    if identity is not None:
        identity_info = identity.to_dict()
        identity_info['read_from_these_files'] = (
            identity.permall_sha256 == permall_sha256)
    manifest = {
        'format': MANIFEST_FORMAT,
        'backup_id': backup_id,
        'instance_uuid': instance_uuid,
        'tpm_version': state_dir.version,
        'created_at': now.isoformat(),
        'reason': reason,
        'host': socket.gethostname(),
        'source_path': path,
        'files': [{'name': name, 'size': len(data), 'sha256': _sha256(data)}
                  for name, data in sorted(files.items())],
        'encrypted': header.encrypted,
        'key_bits': header.key_bits,
        'owner': {'uid': st.st_uid, 'gid': st.st_gid,
                  'user': state_mod.user_name(st.st_uid),
                  'group': state_mod.group_name(st.st_gid)},
        'identity': identity_info,
        'fingerprint': identity.fingerprint if identity else None,
        'swtpm': host_facts.to_dict() if host_facts else None,
    }
    store.put(instance_uuid, backup_id, files, manifest)
    LOG.info('Backed up the vTPM state of instance %(uuid)s as %(id)s '
             '(%(count)d files, %(reason)s)',
             {'uuid': instance_uuid, 'id': backup_id, 'count': len(files),
              'reason': reason or 'no reason given'})
    return manifest


def _check_files(manifest, files, instance_uuid, backup_id):
    def corrupt(reason):
        return exception.BackupCorrupt(backup_id=backup_id,
                                       instance_uuid=instance_uuid,
                                       reason=reason)
    if manifest.get('format') != MANIFEST_FORMAT:
        raise corrupt('unknown manifest format %r' % manifest.get('format'))
    if (manifest.get('instance_uuid') != instance_uuid
            or manifest.get('backup_id') != backup_id):
        raise corrupt('the manifest is for %s/%s'
                      % (manifest.get('instance_uuid'),
                         manifest.get('backup_id')))
    try:
        listed = {f['name']: (int(f['size']), str(f['sha256']))
                  for f in manifest.get('files', ())}
    except (KeyError, TypeError, ValueError) as exc:
        raise corrupt('bad file list in the manifest: %r' % (exc,))
    if not listed:
        raise corrupt('the manifest lists no file')
    problems = []
    for name, (size, digest) in sorted(listed.items()):
        data = files.get(name)
        if data is None:
            problems.append('%s is missing' % name)
        elif len(data) != size:
            problems.append('%s has %d bytes, not %d'
                            % (name, len(data), size))
        elif _sha256(data) != digest:
            problems.append('%s has sha256 %s, not %s'
                            % (name, _sha256(data), digest))
    for name in sorted(set(files) - set(listed)):
        problems.append('%s is not in the manifest' % name)
    if problems:
        raise corrupt('; '.join(problems))


def verify(store, instance_uuid, backup_id):
    """Check a backup's files against its manifest (size and sha256).

    :returns: the manifest.
    :raises BackupCorrupt: naming each file that does not match.
    :raises BackupNotFound: if there is no such backup.
    """
    manifest, files = store.get(instance_uuid, backup_id)
    _check_files(manifest, files, instance_uuid, backup_id)
    return manifest


def prune(store, instance_uuid, keep):
    """Keep the ``keep`` newest backups of an instance, delete the others.

    :returns: the ids deleted, oldest first.
    """
    if keep < 1:
        raise ValueError('keep at least one backup, not %r' % (keep,))
    manifests = store.list(instance_uuid)
    doomed = [m['backup_id'] for m in manifests[:-keep]]
    for backup_id in doomed:
        store.delete(instance_uuid, backup_id)
    if doomed:
        LOG.info('Pruned %(count)d vTPM state backups of instance %(uuid)s',
                 {'count': len(doomed), 'uuid': instance_uuid})
    return doomed


def _resolve_owner(manifest, state_dir, uid, gid):
    """uid and gid for the restored state (see :func:`restore`)."""
    if uid is not None and gid is not None:
        return uid, gid
    try:
        st = os.stat(state_dir.path)
        return (st.st_uid if uid is None else uid,
                st.st_gid if gid is None else gid)
    except FileNotFoundError:
        pass
    owner = manifest.get('owner') or {}
    if uid is None:
        uid = _lookup(owner, 'user', 'uid', _uid_of)
    if gid is None:
        gid = _lookup(owner, 'group', 'gid', _gid_of)
    return uid, gid


def _uid_of(name):
    return pwd.getpwnam(name).pw_uid


def _gid_of(name):
    return grp.getgrnam(name).gr_gid


def _lookup(owner, name_key, id_key, resolve):
    # Names first: ids differ between hosts, names (tss) do not.
    if owner.get(name_key):
        try:
            return resolve(owner[name_key])
        except KeyError:
            pass
    if owner.get(id_key) is not None:
        return owner[id_key]
    return os.getuid() if id_key == 'uid' else os.getgid()


def restore(store, backup_id, state_dir, secret, expected_fingerprint=None,
            uid=None, gid=None, instance_uuid=None,
            cipher=keys.DEFAULT_CIPHER, timeout=10.0):
    """Restore a backup into an instance's state directory, safely.

    1. The backup's files are checked against its manifest.
    2. They are written into a new sibling directory (0700, files 0600,
       fsynced), owned by ``uid``/``gid``, else by the owner of the
       current state directory, else by the owner the manifest recorded.
    3. The new state must open with ``secret`` and hold the TPM whose
       fingerprint is ``expected_fingerprint`` (default: the manifest's).
    4. Only then: the original is renamed aside, the new directory renamed
       in, the result checked, and the original removed. On any failure the
       original is put back and the new directory removed.

    A running swtpm on the state (its lock held) is refused.

    :param store: the :class:`StateStore`.
    :param backup_id: the backup to restore.
    :param state_dir: the :class:`~nova_vtpm.swtpm.state.StateDir`.
    :param secret: the instance's vTPM secret.
    :param expected_fingerprint: the TPM identity the result must have.
    :param instance_uuid: whose backup (default: the state dir's).
    :returns: the :class:`~nova_vtpm.swtpm.state.Identity` of the restored
        state.
    :raises BackupNotFound, BackupCorrupt: the backup is not usable.
    :raises StateInUse: swtpm runs on the state.
    :raises RestoreFailed: anything else; ``cause`` holds the reason (e.g.
        a :class:`~nova_vtpm.swtpm.exception.StateUnreadable` for a wrong
        secret) and the original state is in place.
    """
    instance_uuid = check_name(instance_uuid or state_dir.instance_uuid)
    manifest, files = store.get(instance_uuid, backup_id)
    _check_files(manifest, files, instance_uuid, backup_id)
    if manifest.get('tpm_version', '2.0') != state_dir.version:
        raise exception.RestoreFailed(
            backup_id=backup_id, path=state_dir.path,
            original='Nothing was changed.',
            reason='the backup is of a TPM %s, the directory is for a TPM '
                   '%s' % (manifest.get('tpm_version'), state_dir.version))
    if expected_fingerprint is None:
        expected_fingerprint = manifest.get('fingerprint')
        if expected_fingerprint is None:
            LOG.warning('vTPM state backup %s of %s has no identity: the '
                        'restored TPM is checked to open, not to be the '
                        'same TPM', backup_id, instance_uuid)
    target = state_dir.path
    if state_mod.state_in_use(target):
        raise exception.StateInUse(path=target)
    uid, gid = _resolve_owner(manifest, state_dir, uid, gid)
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=PARENT_MODE)
    known_good = next((f['sha256'] for f in manifest['files']
                       if f['name'] == state_dir.permall_name), None)

    if os.path.lexists(target):
        original = 'The original state was left in place.'
    else:
        original = 'Nothing was written to %s.' % target

    def failed(reason, cause=None):
        exc = exception.RestoreFailed(backup_id=backup_id, path=target,
                                      reason=reason, original=original)
        exc.cause = cause
        return exc

    staging = tempfile.mkdtemp(prefix='.%s.restore-'
                               % os.path.basename(target), dir=parent)
    try:
        os.chmod(staging, DIR_MODE)
        for name, data in sorted(files.items()):
            _write_file(os.path.join(staging, name), data)
            os.chown(os.path.join(staging, name), uid, gid)
        os.chown(staging, uid, gid)
        _fsync_dir(staging)
        staged = state_mod.StateDir.at_path(staging, instance_uuid,
                                            state_dir.version)
        try:
            identity = staged.read_identity(
                secret, cipher=cipher, known_good_sha256=known_good,
                timeout=timeout)
        except exception.StateUnreadable as exc:
            raise failed('the restored state does not open: %s' % exc, exc)
        if (expected_fingerprint is not None
                and identity.fingerprint != expected_fingerprint):
            cause = exception.IdentityChanged(target, expected_fingerprint,
                                              identity.fingerprint)
            raise failed(str(cause), cause)
        _swap_in(staging, target, parent, files, uid, gid, failed)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    LOG.info('Restored vTPM state backup %(id)s of instance %(uuid)s into '
             '%(path)s (TPM %(fp)s)',
             {'id': backup_id, 'uuid': instance_uuid, 'path': target,
              'fp': identity.fingerprint})
    return identity


def _swap_in(staging, target, parent, files, uid, gid, failed):
    """Rename ``staging`` to ``target``; keep the original until it worked."""
    aside = None
    if os.path.lexists(target):
        aside = os.path.join(parent, '.%s.old-%s' % (
            os.path.basename(target), secrets.token_hex(4)))
        os.rename(target, aside)
    try:
        os.rename(staging, target)
        _fsync_dir(parent)
        problems = _check_restored(target, files, uid, gid)
        if problems:
            raise failed('the restored directory does not match: %s'
                         % '; '.join(problems))
    except BaseException:
        if aside is not None:
            if os.path.lexists(target):
                os.rename(target, staging)
            os.rename(aside, target)
            _fsync_dir(parent)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _check_restored(target, files, uid, gid):
    problems = []
    st = os.stat(target)
    if (st.st_uid, st.st_gid) != (uid, gid):
        problems.append('directory owned by %d:%d' % (st.st_uid, st.st_gid))
    if stat.S_IMODE(st.st_mode) != DIR_MODE:
        problems.append('directory mode 0%o' % stat.S_IMODE(st.st_mode))
    current = state_mod.read_state_files(target)
    if current != files:
        problems.append('files differ from the backup')
    return problems
