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

"""A vTPM state directory: facts about it, and the TPM identity it holds.

libvirt keeps a vTPM's state in ``<root>/<instance uuid>/tpm2`` (TPM 2.0)
or ``.../tpm1.2``. The TPM 2.0 state is ``tpm2-00.permall`` (the
permanent state, about 6 KB), perhaps ``tpm2-00.volatilestate`` and
``tpm2-00.savestate``, and a 0-byte ``.lock`` that a running swtpm holds
with a POSIX write lock.

Each state file begins with swtpm's blob header (swtpm_nvstore.c), 10
bytes, big-endian::

    u8 version; u8 min_version; u16 hdrsize (10); u16 flags; u32 totlen

followed by TLVs (u16 tag, u32 length, data). Flags: 0x01 encrypted, 0x02
migration-encrypted, 0x04 migration data, 0x08 256-bit file key, 0x10
256-bit migration key; libvirt's state has 0x0009. :meth:`StateDir.inspect`
reads only that, and never needs the key.

:meth:`StateDir.read_identity` reads the TPM's identity OFFLINE: it copies
the state files into a private 0700 directory, runs a private swtpm on the
copy with the key derived from the secret, and reads the EK certificate
and EK public key; the original is only ever read. The copy mirrors the
original exactly, a missing or empty directory included, so that swtpm
itself says what libvirt's swtpm would say, and a failure is mapped to a
:class:`~nova_vtpm.swtpm.exception.StateUnreadable` kind with swtpm's log
lines.
"""

import dataclasses
import errno
import fcntl
import grp
import hashlib
import os
import pwd
import shutil
import stat
import struct
import tempfile
import time

from oslo_log import log as logging

from nova_vtpm.swtpm import exception
from nova_vtpm.swtpm import keys
from nova_vtpm.swtpm import protocol

LOG = logging.getLogger(__name__)

DEFAULT_ROOT = '/var/lib/libvirt/swtpm'
VERSION_DIRS = {'2.0': 'tpm2', '1.2': 'tpm1.2'}
PERMALL = {'2.0': 'tpm2-00.permall', '1.2': 'tpm-00.permall'}
LOCK_FILE = '.lock'
# swtpm refuses bigger state blobs; nothing legitimate is larger.
MAX_STATE_FILE = 512 * 1024

HEADER = struct.Struct('>BBHHI')
HEADER_VERSION = 2
TLV_HEADER = struct.Struct('>HI')
FLAG_ENCRYPTED = 0x01
FLAG_MIGRATION_ENCRYPTED = 0x02
FLAG_MIGRATION_DATA = 0x04
FLAG_ENCRYPTED_256BIT_KEY = 0x08
FLAG_MIGRATION_256BIT_KEY = 0x10
TAG_DATA = 1
TAG_ENCRYPTED_DATA = 2
TAG_HMAC = 3
TAG_IVEC_ENCRYPTED_DATA = 6

# Where TPM 2.0 EK certificates live (TCG EK Credential Profile; swtpm
# puts its secp384r1 one at 0x01c00016), and the persistent EK handles.
EK_CERT_INDICES = (0x01C00002, 0x01C0001C, 0x01C0000A, 0x01C00016)
EK_HANDLES = (0x81010001, 0x81010002, 0x81010016)


@dataclasses.dataclass(frozen=True)
class BlobHeader(object):
    """swtpm's state blob header, and what is wrong with the blob."""

    version: int
    min_version: int
    hdrsize: int
    flags: int
    totlen: int
    file_size: int
    tlv_tags: tuple
    problems: tuple

    @property
    def encrypted(self):
        return bool(self.flags & FLAG_ENCRYPTED)

    @property
    def key_bits(self):
        """128 or 256 for an encrypted blob, None otherwise."""
        if not self.encrypted:
            return None
        return 256 if self.flags & FLAG_ENCRYPTED_256BIT_KEY else 128

    @property
    def newer_format(self):
        return self.min_version > HEADER_VERSION

    def to_dict(self):
        return {'version': self.version, 'min_version': self.min_version,
                'flags': '0x%04x' % self.flags, 'totlen': self.totlen,
                'encrypted': self.encrypted, 'key_bits': self.key_bits,
                'tlv_tags': list(self.tlv_tags),
                'problems': list(self.problems)}


def parse_blob_header(data):
    """Parse the header and walk the TLVs of a swtpm state blob.

    Never raises on bad data: what is wrong is in ``problems``.

    :param data: the whole file content.
    :returns: a :class:`BlobHeader`, or None if ``data`` is shorter than a
        header.
    """
    if len(data) < HEADER.size:
        return None
    version, min_version, hdrsize, flags, totlen = HEADER.unpack_from(data)
    problems = []
    tags = []
    if totlen != len(data):
        problems.append('header says %d bytes, the file has %d (%s)'
                        % (totlen, len(data), 'truncated'
                           if len(data) < totlen else 'trailing data'))
    if min_version > HEADER_VERSION:
        problems.append('blob needs header version %d, swtpm 0.7 knows %d'
                        % (min_version, HEADER_VERSION))
    if hdrsize != HEADER.size:
        problems.append('header size %d != %d' % (hdrsize, HEADER.size))
    elif version >= 2:
        # Version 1 blobs have no TLVs.
        pos = hdrsize
        end = min(totlen, len(data))
        while pos < end:
            if pos + TLV_HEADER.size > end:
                problems.append('partial TLV header at offset %d' % pos)
                break
            tag, length = TLV_HEADER.unpack_from(data, pos)
            tags.append(tag)
            pos += TLV_HEADER.size + length
            if pos > end:
                problems.append('TLV tag %d at offset %d overruns the blob '
                                'by %d bytes' % (tag, pos - TLV_HEADER.size
                                                 - length, pos - end))
                break
        if not problems:
            if flags & FLAG_ENCRYPTED:
                needed = (TAG_HMAC, TAG_ENCRYPTED_DATA)
            else:
                needed = (TAG_DATA,)
            missing = [t for t in needed if t not in tags]
            if missing:
                problems.append('TLV tags %s missing' % missing)
    return BlobHeader(version=version, min_version=min_version,
                      hdrsize=hdrsize, flags=flags, totlen=totlen,
                      file_size=len(data), tlv_tags=tuple(tags),
                      problems=tuple(problems))


@dataclasses.dataclass(frozen=True)
class StateFacts(object):
    """What :meth:`StateDir.inspect` found, without the key."""

    path: str
    exists: bool
    empty: bool
    files: tuple            # ((name, size), ...) of regular state files
    permall_present: bool
    permall_size: int
    permall_sha256: str
    header: BlobHeader
    uid: int
    gid: int
    mode: int
    in_use: bool

    @property
    def encrypted(self):
        return self.header.encrypted if self.header else None

    @property
    def owner(self):
        return user_name(self.uid)

    @property
    def group(self):
        return group_name(self.gid)

    def to_dict(self):
        return {
            'path': self.path, 'exists': self.exists, 'empty': self.empty,
            'files': [list(f) for f in self.files],
            'permall_present': self.permall_present,
            'permall_size': self.permall_size,
            'permall_sha256': self.permall_sha256,
            'encrypted': self.encrypted,
            'header': self.header.to_dict() if self.header else None,
            'uid': self.uid, 'gid': self.gid, 'owner': self.owner,
            'group': self.group,
            'mode': None if self.mode is None else '0%o' % self.mode,
            'in_use': self.in_use}


@dataclasses.dataclass(frozen=True)
class Identity(object):
    """The identity of the TPM a state holds.

    ``fingerprint`` is the sha256 of the EK certificate (DER) or, for a
    TPM without one, of the EK public area (TPMT_PUBLIC): what the guest's
    attestation and its sealed keys are bound to. Two states with the same
    fingerprint hold the same TPM.
    """

    ek_cert_der: bytes
    ek_cert_sha256: str
    ek_cert_nv_index: int
    ek_cert_subject: str
    ek_pub: bytes
    ek_pub_sha256: str
    ek_handle: int
    nv_indices: tuple
    persistent_handles: tuple
    permall_sha256: str

    @property
    def fingerprint(self):
        return self.ek_cert_sha256 or self.ek_pub_sha256

    def to_dict(self):
        """The identity without the certificate itself (for manifests)."""
        return {
            'fingerprint': self.fingerprint,
            'ek_cert_sha256': self.ek_cert_sha256,
            'ek_cert_nv_index': _hex_or_none(self.ek_cert_nv_index),
            'ek_cert_subject': self.ek_cert_subject,
            'ek_pub_sha256': self.ek_pub_sha256,
            'ek_handle': _hex_or_none(self.ek_handle),
            'nv_indices': ['0x%08x' % h for h in self.nv_indices],
            'persistent_handles': ['0x%08x' % h
                                   for h in self.persistent_handles],
            'permall_sha256': self.permall_sha256}


def _hex_or_none(value):
    return None if value is None else '0x%08x' % value


def user_name(uid):
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid):
    if gid is None:
        return None
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def cert_subject(der):
    """The EK certificate's subject (``CN=<vmid>``), if it can be parsed.

    Uses ``cryptography`` when it is installed (it is not a requirement).
    """
    try:
        from cryptography import x509
    except ImportError:
        return None
    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return None


def state_in_use(path):
    """Whether a swtpm holds the lock of the state directory ``path``."""
    try:
        fd = os.open(os.path.join(path, LOCK_FILE),
                     os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return True
        raise
    finally:
        # Closing drops our own lock, if we got it.
        os.close(fd)
    return False


def read_state_files(path):
    """The regular state files of a directory: {name: bytes}.

    ``.lock`` and anything that is not a regular file are left out. Each
    file is read once (swtpm replaces files by rename, so a read is a
    consistent version even while a guest runs).

    :raises FileNotFoundError: if ``path`` does not exist.
    :raises PermissionError: if it cannot be read.
    :raises StateUnreadable: (``truncated_or_corrupt``) for a file larger
        than swtpm accepts.
    """
    files = {}
    with os.scandir(path) as entries:
        names = sorted(e.name for e in entries
                       if e.name != LOCK_FILE
                       and e.is_file(follow_symlinks=False))
    for name in names:
        fd = os.open(os.path.join(path, name), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, 'rb') as f:
            data = f.read(MAX_STATE_FILE + 1)
        if len(data) > MAX_STATE_FILE:
            raise exception.StateUnreadable(
                exception.TRUNCATED_OR_CORRUPT, path,
                '%s is larger than the %d bytes swtpm accepts'
                % (name, MAX_STATE_FILE))
        files[name] = data
    return files


class StateDir(object):
    """The swtpm state directory of one instance.

    :param root: libvirt's swtpm directory (``/var/lib/libvirt/swtpm``).
    :param instance_uuid: the instance's uuid (libvirt's domain uuid).
    :param version: the TPM version, ``2.0`` or ``1.2``.
    """

    def __init__(self, root, instance_uuid, version='2.0'):
        if version not in VERSION_DIRS:
            raise ValueError('TPM version must be one of %s, not %r'
                             % (', '.join(VERSION_DIRS), version))
        self.root = root
        self.instance_uuid = instance_uuid
        self.version = version
        self.path = os.path.join(root, instance_uuid, VERSION_DIRS[version])
        self.permall_name = PERMALL[version]

    def __repr__(self):
        return 'StateDir(%r)' % self.path

    @classmethod
    def at_path(cls, path, instance_uuid=None, version=None):
        """A StateDir for an arbitrary directory.

        :param path: the state directory.
        :param instance_uuid: default: the name of its parent directory.
        :param version: default: from its name (``tpm2``, ``tpm1.2``), else
            ``2.0``.
        """
        path = os.path.abspath(path)
        parent, leaf = os.path.split(path)
        if version is None:
            version = {v: k for k, v in VERSION_DIRS.items()}.get(leaf, '2.0')
        self = cls(os.path.dirname(parent),
                   instance_uuid or os.path.basename(parent), version)
        self.path = path
        return self

    # -- facts -------------------------------------------------------------

    def inspect(self):
        """Facts about the directory that need no key; never modifies it.

        :raises StateUnreadable: (``no_access``) if it cannot be read.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return StateFacts(
                path=self.path, exists=False, empty=True, files=(),
                permall_present=False, permall_size=None,
                permall_sha256=None, header=None, uid=None, gid=None,
                mode=None, in_use=False)
        except PermissionError as exc:
            raise exception.StateUnreadable(
                exception.NO_ACCESS, self.path, str(exc))
        try:
            files = read_state_files(self.path)
        except PermissionError as exc:
            raise exception.StateUnreadable(
                exception.NO_ACCESS, self.path, str(exc))
        permall = files.get(self.permall_name)
        header = parse_blob_header(permall) if permall is not None else None
        return StateFacts(
            path=self.path, exists=True, empty=not files,
            files=tuple((n, len(d)) for n, d in sorted(files.items())),
            permall_present=permall is not None,
            permall_size=None if permall is None else len(permall),
            permall_sha256=None if permall is None else _sha256(permall),
            header=header, uid=st.st_uid, gid=st.st_gid,
            mode=stat.S_IMODE(st.st_mode), in_use=state_in_use(self.path))

    # -- identity ----------------------------------------------------------

    def read_identity(self, secret, cipher=keys.DEFAULT_CIPHER,
                      known_good_sha256=None, timeout=10.0, tmp_dir=None,
                      swtpm=protocol.SWTPM, transport='unix'):
        """Read the identity of the TPM in this state, offline.

        The state is copied into a private 0700 temporary directory and
        opened there by a private swtpm; the original is only read, and
        the copy is removed afterwards.

        :param secret: the instance's vTPM secret (the libvirt secret
            value, bytes or str), or None for an unencrypted state.
        :param cipher: swtpm's cipher for the key (libvirt:
            ``aes-256-cbc``).
        :param known_good_sha256: sha256 of a ``permall`` known to be good
            (e.g. from the last backup): tells a wrong key from a corrupt
            file when the integrity check fails.
        :param timeout: seconds allowed for each TPM command and for
            swtpm's exit.
        :param tmp_dir: where to make the private copy (default: TMPDIR).
            A tmpfs is faster and keeps the copy off disk, but swtpm's
            AppArmor profile (Ubuntu) may only allow /tmp.
        :param swtpm: the swtpm binary.
        :param transport: how to talk to the private swtpm: ``unix``
            socket pairs, or ``tcp`` on 127.0.0.1 where swtpm's AppArmor
            profile denies unix streams with an unconfined peer.
        :returns: an :class:`Identity`.
        :raises StateUnreadable: with the kind of failure and swtpm's log.
        """
        if self.version != '2.0':
            raise exception.StateUnreadable(
                exception.UNSUPPORTED, self.path,
                'reading the identity of a TPM %s state is not supported'
                % self.version)
        key = None
        if secret is not None:
            key = keys.derive_key(secret, keys.key_bytes_for(cipher))
        started = time.monotonic()
        work = tempfile.mkdtemp(prefix='nova-vtpm-swtpm-', dir=tmp_dir)
        try:
            os.chmod(work, 0o700)
            copy, files = self._private_copy(work)
            identity = self._read_copy(copy, work, key, cipher, files,
                                       known_good_sha256, timeout, swtpm,
                                       transport)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        LOG.debug('Read the vTPM identity of %s in %.1f ms', self.path,
                  (time.monotonic() - started) * 1000.0)
        return identity

    def verify_identity(self, secret, expected_fingerprint, **kwargs):
        """Read the identity and check it is the expected TPM.

        :returns: the :class:`Identity`.
        :raises IdentityChanged: if the fingerprint differs.
        :raises StateUnreadable: as :meth:`read_identity`.
        """
        identity = self.read_identity(secret, **kwargs)
        if identity.fingerprint != expected_fingerprint:
            raise exception.IdentityChanged(self.path, expected_fingerprint,
                                            identity.fingerprint)
        return identity

    def _private_copy(self, work):
        copy = os.path.join(work, 'state')
        try:
            files = read_state_files(self.path)
        except FileNotFoundError:
            # Mirror the original: swtpm gets a missing directory too.
            return copy, None
        except PermissionError as exc:
            raise exception.StateUnreadable(
                exception.NO_ACCESS, self.path, str(exc))
        os.mkdir(copy, 0o700)
        for name, data in files.items():
            fd = os.open(os.path.join(copy, name),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, 'wb') as f:
                f.write(data)
        return copy, files

    def _read_copy(self, copy, work, key, cipher, files, known_good_sha256,
                   timeout, swtpm, transport):
        permall = (files or {}).get(self.permall_name)
        header = parse_blob_header(permall) if permall is not None else None
        permall_sha256 = None if permall is None else _sha256(permall)
        proc = protocol.SwtpmProcess(copy, work, key=key, cipher=cipher,
                                     timeout=timeout, swtpm=swtpm,
                                     transport=transport)
        try:
            proc.start()
        except protocol.ProtocolError as exc:
            raise exception.StateUnreadable(
                exception.SWTPM_FAILED, self.path, 'cannot start swtpm',
                client_error=exc.client_error)
        try:
            try:
                proc.init()
                proc.startup()
                identity = self._identity(proc, permall_sha256)
            except protocol.ProtocolError as exc:
                proc.stop()
                log = proc.log_text()
                kind, reason = classify(
                    log, exc.client_error, header,
                    key_given=key is not None, files=files,
                    permall_sha256=permall_sha256,
                    known_good_sha256=known_good_sha256)
                raise exception.StateUnreadable(
                    kind, self.path, reason, detail=log,
                    client_error=exc.client_error)
        finally:
            proc.stop()
        if identity is None:
            raise exception.StateUnreadable(
                exception.EMPTY_STATE, self.path,
                'the TPM has no EK certificate, no NV index and no '
                'persistent key' + ('' if files else
                                    ' (the directory holds no state file)'),
                detail=proc.log_text())
        return identity

    @staticmethod
    def _identity(proc, permall_sha256):
        nv_indices = proc.get_handles(protocol.HR_NV_INDEX)
        persistent = proc.get_handles(protocol.HR_PERSISTENT)
        if not nv_indices and not persistent:
            return None
        cert = cert_index = None
        for index in EK_CERT_INDICES:
            if index in nv_indices:
                cert = proc.nv_read(index)
                cert_index = index
                break
        ek_handle = next((h for h in EK_HANDLES if h in persistent), None)
        if ek_handle is not None:
            ek_pub = proc.read_public(ek_handle)
        else:
            ek_pub = proc.create_ek_rsa()
        return Identity(
            ek_cert_der=cert,
            ek_cert_sha256=_sha256(cert) if cert else None,
            ek_cert_nv_index=cert_index,
            ek_cert_subject=cert_subject(cert) if cert else None,
            ek_pub=ek_pub, ek_pub_sha256=_sha256(ek_pub),
            ek_handle=ek_handle, nv_indices=tuple(nv_indices),
            persistent_handles=tuple(persistent),
            permall_sha256=permall_sha256)


def classify(log, client_error, header, key_given, files=(),
             permall_sha256=None, known_good_sha256=None):
    """Map swtpm's log and the client's error to a failure kind.

    :returns: (kind, reason).
    """
    log = log or ''
    if 'Could not open lockfile' in log or files is None:
        return exception.MISSING_DIR, 'the state directory does not exist'
    if 'Minimum required version' in log or (header and
                                             header.newer_format):
        return (exception.UNSUPPORTED,
                'the state was written by a newer swtpm')
    if header is not None and header.problems:
        return (exception.TRUNCATED_OR_CORRUPT,
                'the state file is damaged: %s' % '; '.join(header.problems))
    if header is None and files:
        return (exception.TRUNCATED_OR_CORRUPT,
                'the state file is shorter than its header')
    if 'Could not find plain data' in log:
        if header is not None and header.encrypted and not key_given:
            return exception.NO_KEY, 'the state is encrypted, no key given'
        return (exception.TRUNCATED_OR_CORRUPT,
                'no state data found in the state file')
    if ('Could not find HMAC' in log and key_given and header is not None
            and not header.encrypted):
        return (exception.WRONG_KEY,
                'the state is not encrypted, but a key was given')
    if 'Wrong decryption key' in log:
        bits = header.key_bits if header is not None else None
        return (exception.WRONG_KEY,
                'the state needs a %s-bit key' % (bits or 'different'))
    if ('Verification of HMAC failed' in log
            or 'GetDecryptedData rc = 33' in log):
        if known_good_sha256 and permall_sha256:
            if known_good_sha256 == permall_sha256:
                return (exception.WRONG_KEY,
                        'the state file is the known good one, the key '
                        'does not open it')
            return (exception.TRUNCATED_OR_CORRUPT,
                    'the state file differs from the known good one and '
                    'fails its integrity check')
        return (exception.WRONG_KEY_OR_CORRUPT,
                'the integrity check (HMAC) of the state failed')
    if ('Could not decrypt' in log or 'Could not find HMAC' in log
            or 'CheckHeader' in log):
        return (exception.TRUNCATED_OR_CORRUPT,
                'the state file cannot be decrypted')
    if 'libtpms' in log and 'failure mode' in log:
        return (exception.UNSUPPORTED,
                'libtpms cannot use the state (it decrypted fine)')
    return exception.SWTPM_FAILED, 'swtpm failed: %s' % client_error
