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

"""swtpm state facts without a TPM: blob headers, kinds, offline reads."""

import hashlib
import os
import stat
import struct
import subprocess
import sys
from unittest import mock

import fixtures
from oslotest import base

from nova_vtpm.swtpm import exception
from nova_vtpm.swtpm import protocol
from nova_vtpm.swtpm import state

UUID = '6f1c5a9e-2b1d-4d7e-9a3c-0e4f5b6a7c8d'
# The hazard table's texts (swtpm 0.7.1), as swtpm logs them.
HMAC_LOG = ('Verification of HMAC failed. Data integrity is compromised\n'
            'SWTPM_NVRAM_LoadData: Error from SWTPM_NVRAM_GetDecryptedData '
            'rc = 33\n'
            'libtpms/tpm2: Entering failure mode; code: 8, location: '
            'NvPowerOn line 126\n')
NO_KEY_LOG = ('Could not find plain data in byte stream.\n'
              'SWTPM_NVRAM_LoadData: Error from SWTPM_NVRAM_GetDecryptedData '
              'rc = 9\n')
AES128_LOG = ('Wrong decryption key. Need 256 bit key.\n'
              'SWTPM_NVRAM_LoadData: Error from SWTPM_NVRAM_GetDecryptedData '
              'rc = 40\n')
TRUNC_LOG = ('Could not decrypt 6136 bytes. outlen1=6128, outlen2=0.\n'
             'SWTPM_NVRAM_LoadData: Error from SWTPM_NVRAM_GetDecryptedData '
             'rc = 9\n')
LOCK_LOG = ('SWTPM_NVRAM_Lock_Dir: Could not open lockfile: No such file or '
            'directory\nError: Could not initialize libtpms.\n')


def tlv(tag, data):
    return struct.pack('>HI', tag, len(data)) + data


def blob(flags=0x0009, tlvs=None, version=2, min_version=1, hdrsize=10,
         totlen=None):
    """A swtpm state blob: header + TLVs (encrypted layout by default)."""
    if tlvs is None:
        tlvs = [(2, b'\xaa' * 6128), (3, b'\xbb' * 32), (6, b'\xcc' * 16)]
    body = b''.join(tlv(t, d) for t, d in tlvs)
    if totlen is None:
        totlen = 10 + len(body)
    return struct.pack('>BBHHI', version, min_version, hdrsize, flags,
                       totlen) + body


class BlobHeaderTest(base.BaseTestCase):

    def test_libvirt_state(self):
        header = state.parse_blob_header(blob())
        self.assertEqual(0x0009, header.flags)
        self.assertTrue(header.encrypted)
        self.assertEqual(256, header.key_bits)
        self.assertEqual((2, 3, 6), header.tlv_tags)
        self.assertEqual((), header.problems)
        self.assertFalse(header.newer_format)
        self.assertEqual('0x0009', header.to_dict()['flags'])

    def test_aes128_and_plain(self):
        self.assertEqual(128, state.parse_blob_header(
            blob(flags=0x0001)).key_bits)
        plain = state.parse_blob_header(blob(flags=0, tlvs=[(1, b'x' * 9)]))
        self.assertFalse(plain.encrypted)
        self.assertIsNone(plain.key_bits)
        self.assertEqual((), plain.problems)

    def test_truncated(self):
        data = blob()
        header = state.parse_blob_header(data[:-100])
        self.assertIn('truncated', header.problems[0])
        self.assertIn('overruns', header.problems[1])

    def test_trailing_data(self):
        header = state.parse_blob_header(blob() + b'\0')
        self.assertIn('trailing data', header.problems[0])

    def test_newer_format(self):
        header = state.parse_blob_header(blob(min_version=3))
        self.assertTrue(header.newer_format)

    def test_bad_header_size_and_missing_tags(self):
        self.assertIn('header size', state.parse_blob_header(
            blob(hdrsize=12)).problems[0])
        self.assertIn('missing', state.parse_blob_header(
            blob(tlvs=[(2, b'x')])).problems[0])

    def test_too_short(self):
        self.assertIsNone(state.parse_blob_header(b'\x02\x01\x00'))

    def test_garbage_never_raises(self):
        for data in (b'\xff' * 10, b'\x02\x01\x00\x0a\x00\x09' + b'\xff' * 30,
                     os.urandom(200)):
            state.parse_blob_header(data)


class ClassifyTest(base.BaseTestCase):
    """Each hazard row maps to a kind."""

    def setUp(self):
        super().setUp()
        self.good = state.parse_blob_header(blob())

    def kind(self, log, header=None, key_given=True, files=('x',), **kw):
        return state.classify(log, 'TPM result from PTM_INIT: 0x101',
                              header or self.good, key_given, files=files,
                              **kw)[0]

    def test_wrong_key_without_reference_is_ambiguous(self):
        self.assertEqual(exception.WRONG_KEY_OR_CORRUPT, self.kind(HMAC_LOG))

    def test_wrong_key_with_reference(self):
        self.assertEqual(exception.WRONG_KEY, self.kind(
            HMAC_LOG, permall_sha256='a', known_good_sha256='a'))

    def test_flipped_byte_with_reference(self):
        self.assertEqual(exception.TRUNCATED_OR_CORRUPT, self.kind(
            HMAC_LOG, permall_sha256='b', known_good_sha256='a'))

    def test_no_key(self):
        self.assertEqual(exception.NO_KEY,
                         self.kind(NO_KEY_LOG, key_given=False))

    def test_aes128_on_256bit_state(self):
        kind, reason = state.classify(AES128_LOG, None, self.good, True,
                                      files=('x',))
        self.assertEqual(exception.WRONG_KEY, kind)
        self.assertIn('256-bit', reason)

    def test_truncated(self):
        self.assertEqual(exception.TRUNCATED_OR_CORRUPT, self.kind(TRUNC_LOG))
        truncated = state.parse_blob_header(blob()[:-100])
        self.assertEqual(exception.TRUNCATED_OR_CORRUPT,
                         self.kind(TRUNC_LOG, header=truncated))

    def test_missing_dir(self):
        self.assertEqual(exception.MISSING_DIR,
                         self.kind(LOCK_LOG, files=None))

    def test_newer_format_is_unsupported(self):
        self.assertEqual(exception.UNSUPPORTED, self.kind(
            '', header=state.parse_blob_header(blob(min_version=3))))

    def test_key_on_plain_state(self):
        plain = state.parse_blob_header(blob(flags=0, tlvs=[(1, b'x')]))
        self.assertEqual(exception.WRONG_KEY, self.kind(
            'Could not find HMAC or encrypted data (tag 2) in byte stream.',
            header=plain))

    def test_unknown(self):
        self.assertEqual(exception.SWTPM_FAILED, self.kind('weird'))


class StateUnreadableTest(base.BaseTestCase):

    def test_message(self):
        exc = exception.StateUnreadable(
            exception.WRONG_KEY, '/s/tpm2', 'it does not open',
            detail=HMAC_LOG + HMAC_LOG,
            client_error='TPM result from PTM_INIT: 0x101')
        text = str(exc)
        self.assertIn('/s/tpm2 (wrong_key): it does not open.', text)
        self.assertIn('libvirt secret', text)
        self.assertIn('TPM result from PTM_INIT: 0x101', text)
        self.assertEqual(1, text.count('Verification of HMAC failed'))
        # The detail keeps every line swtpm wrote.
        self.assertEqual(2, exc.detail.count('Verification of HMAC failed'))

    def test_every_kind_has_advice(self):
        for kind in exception.KINDS:
            self.assertIn(kind, str(exception.StateUnreadable(kind, 'p',
                                                              'r')))
        self.assertRaises(ValueError, exception.StateUnreadable, 'nope',
                          'p', 'r')


class _StateDirBase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.sd = state.StateDir(self.root, UUID)

    def make(self, files=None):
        os.makedirs(self.sd.path, mode=0o700)
        if files is None:
            files = {'tpm2-00.permall': blob(), '.lock': b''}
        for name, data in files.items():
            with open(os.path.join(self.sd.path, name), 'wb') as f:
                f.write(data)
        return files


class StateDirTest(_StateDirBase):

    def test_paths(self):
        self.assertEqual(os.path.join(self.root, UUID, 'tpm2'), self.sd.path)
        self.assertEqual(os.path.join(self.root, UUID, 'tpm1.2'),
                         state.StateDir(self.root, UUID, '1.2').path)
        self.assertRaises(ValueError, state.StateDir, self.root, UUID, '3')
        other = state.StateDir.at_path('/x/y/.tpm2.restore-1', UUID)
        self.assertEqual('/x/y/.tpm2.restore-1', other.path)
        self.assertEqual('2.0', other.version)
        self.assertEqual(UUID, state.StateDir.at_path(
            self.sd.path).instance_uuid)

    def test_inspect_missing(self):
        facts = self.sd.inspect()
        self.assertFalse(facts.exists)
        self.assertFalse(facts.permall_present)
        self.assertIsNone(facts.encrypted)

    def test_inspect_empty(self):
        self.make({'.lock': b''})
        facts = self.sd.inspect()
        self.assertTrue(facts.exists)
        self.assertTrue(facts.empty)
        self.assertFalse(facts.permall_present)

    def test_inspect_state(self):
        files = self.make()
        facts = self.sd.inspect()
        self.assertFalse(facts.empty)
        self.assertEqual((('tpm2-00.permall',
                           len(files['tpm2-00.permall'])),), facts.files)
        self.assertEqual(
            hashlib.sha256(files['tpm2-00.permall']).hexdigest(),
            facts.permall_sha256)
        self.assertTrue(facts.encrypted)
        self.assertEqual(0o700, facts.mode)
        self.assertEqual(os.getuid(), facts.uid)
        self.assertFalse(facts.in_use)
        self.assertEqual('0700', facts.to_dict()['mode'])

    def test_in_use_when_another_process_holds_the_lock(self):
        self.make()
        holder = subprocess.Popen(
            [sys.executable, '-c',
             'import fcntl, os, sys\n'
             'fd = os.open(sys.argv[1], os.O_RDWR)\n'
             'fcntl.lockf(fd, fcntl.LOCK_EX)\n'
             'print("locked", flush=True)\n'
             'sys.stdin.read()\n',
             os.path.join(self.sd.path, '.lock')],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            self.assertEqual(b'locked\n', holder.stdout.readline())
            self.assertTrue(self.sd.inspect().in_use)
        finally:
            holder.stdin.close()
            holder.wait(timeout=10)
        self.assertFalse(self.sd.inspect().in_use)


class FakeSwtpm(object):
    """Stands in for protocol.SwtpmProcess; records what it was given."""

    instances = []
    init_error = None
    log = ''
    nv = {0x01C00002: b'CERT' * 100}
    persistent = {0x81010001: b'EKPUB' * 60}

    def __init__(self, state_path, work_dir, key=None, cipher=None,
                 timeout=None, swtpm=None, transport=None):
        self.state_path = state_path
        self.work_dir = work_dir
        self.key = key
        self.cipher = cipher
        self.transport = transport
        self.stopped = 0
        self.seen_files = None
        self.seen_mode = None
        FakeSwtpm.instances.append(self)

    def start(self):
        if os.path.isdir(self.state_path):
            self.seen_files = {n: open(os.path.join(self.state_path, n),
                                       'rb').read()
                               for n in os.listdir(self.state_path)}
        self.seen_mode = stat.S_IMODE(os.stat(self.work_dir).st_mode)
        return self

    def init(self):
        if self.init_error:
            raise protocol.ProtocolError(self.init_error, rc=0x101)

    def startup(self):
        pass

    def get_handles(self, first):
        source = (self.nv if first == protocol.HR_NV_INDEX
                  else self.persistent)
        return sorted(source)

    def nv_read(self, index):
        return self.nv[index]

    def read_public(self, handle):
        return self.persistent[handle]

    def create_ek_rsa(self):
        return b'CREATED-EK'

    def stop(self):
        self.stopped += 1

    def log_text(self):
        return self.log


class ReadIdentityTest(_StateDirBase):
    """read_identity on a private copy, with a fake swtpm."""

    def setUp(self):
        super().setUp()
        FakeSwtpm.instances = []
        self.fake = self.useFixture(fixtures.MockPatchObject(
            protocol, 'SwtpmProcess', FakeSwtpm)).mock
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def read(self, secret=b'secret', **kwargs):
        return self.sd.read_identity(secret, tmp_dir=self.tmp, **kwargs)

    def test_identity_from_a_copy(self):
        files = self.make()
        before = os.stat(os.path.join(self.sd.path, 'tpm2-00.permall'))
        identity = self.read()
        fake = FakeSwtpm.instances[0]
        self.assertNotEqual(self.sd.path, fake.state_path)
        self.assertTrue(fake.state_path.startswith(self.tmp))
        self.assertEqual({'tpm2-00.permall': files['tpm2-00.permall']},
                         fake.seen_files)
        self.assertEqual(0o700, fake.seen_mode)
        self.assertEqual(32, len(fake.key))
        self.assertEqual([], os.listdir(self.tmp))
        self.assertGreaterEqual(fake.stopped, 1)
        self.assertEqual(hashlib.sha256(b'CERT' * 100).hexdigest(),
                         identity.fingerprint)
        self.assertEqual(0x01C00002, identity.ek_cert_nv_index)
        self.assertEqual(hashlib.sha256(b'EKPUB' * 60).hexdigest(),
                         identity.ek_pub_sha256)
        self.assertEqual(0x81010001, identity.ek_handle)
        after = os.stat(os.path.join(self.sd.path, 'tpm2-00.permall'))
        self.assertEqual(before.st_mtime_ns, after.st_mtime_ns)
        self.assertEqual('0x01c00002',
                         identity.to_dict()['ek_cert_nv_index'])

    def test_no_cert_no_persistent_ek_uses_created_ek(self):
        self.make()
        with mock.patch.object(FakeSwtpm, 'nv', {0x01C08000: b'p'}), \
                mock.patch.object(FakeSwtpm, 'persistent', {}):
            identity = self.read()
        self.assertIsNone(identity.ek_cert_der)
        self.assertIsNone(identity.ek_handle)
        self.assertEqual(hashlib.sha256(b'CREATED-EK').hexdigest(),
                         identity.fingerprint)

    def test_fresh_tpm_is_empty_state(self):
        self.make()
        with mock.patch.object(FakeSwtpm, 'nv', {}), \
                mock.patch.object(FakeSwtpm, 'persistent', {}):
            exc = self.assertRaises(exception.StateUnreadable, self.read)
        self.assertEqual(exception.EMPTY_STATE, exc.kind)

    def test_missing_dir_is_mirrored(self):
        with mock.patch.object(FakeSwtpm, 'init_error',
                               'TPM result from PTM_INIT: 0x9'), \
                mock.patch.object(FakeSwtpm, 'log', LOCK_LOG):
            exc = self.assertRaises(exception.StateUnreadable, self.read)
        self.assertEqual(exception.MISSING_DIR, exc.kind)
        self.assertFalse(os.path.exists(FakeSwtpm.instances[0].state_path))
        self.assertIn('Could not open lockfile', exc.detail)
        self.assertEqual('TPM result from PTM_INIT: 0x9', exc.client_error)
        self.assertEqual([], os.listdir(self.tmp))

    def test_wrong_key(self):
        files = self.make()
        good = hashlib.sha256(files['tpm2-00.permall']).hexdigest()
        with mock.patch.object(FakeSwtpm, 'init_error',
                               'TPM result from PTM_INIT: 0x101'), \
                mock.patch.object(FakeSwtpm, 'log', HMAC_LOG):
            exc = self.assertRaises(exception.StateUnreadable, self.read,
                                    known_good_sha256=good)
        self.assertEqual(exception.WRONG_KEY, exc.kind)
        self.assertNotIn(FakeSwtpm.instances[0].key.hex(), str(exc))
        self.assertNotIn('secret\'', str(exc))
        self.assertEqual([], os.listdir(self.tmp))

    def test_no_secret_no_key(self):
        self.make()
        self.read(secret=None)
        self.assertIsNone(FakeSwtpm.instances[0].key)

    def test_aes128(self):
        self.make()
        self.read(cipher='aes-cbc')
        self.assertEqual(16, len(FakeSwtpm.instances[0].key))

    def test_unreadable_is_no_access(self):
        self.make()
        with mock.patch.object(state, 'read_state_files',
                               side_effect=PermissionError(13, 'denied')):
            exc = self.assertRaises(exception.StateUnreadable, self.read)
        self.assertEqual(exception.NO_ACCESS, exc.kind)

    def test_tpm12_unsupported(self):
        sd = state.StateDir(self.root, UUID, '1.2')
        exc = self.assertRaises(exception.StateUnreadable, sd.read_identity,
                                b's')
        self.assertEqual(exception.UNSUPPORTED, exc.kind)

    def test_verify_identity(self):
        self.make()
        fp = hashlib.sha256(b'CERT' * 100).hexdigest()
        self.assertEqual(fp, self.sd.verify_identity(
            b's', fp, tmp_dir=self.tmp).fingerprint)
        exc = self.assertRaises(exception.IdentityChanged,
                                self.sd.verify_identity, b's', 'f' * 64,
                                tmp_dir=self.tmp)
        self.assertEqual(fp, exc.actual)
        self.assertIn('Do not start the instance', str(exc))
