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

"""vTPM state backups: the store, manifests, retention, restore safety."""

import hashlib
import json
import os
import stat
from unittest import mock

import fixtures
from oslotest import base

from nova_vtpm.swtpm import backup
from nova_vtpm.swtpm import capabilities
from nova_vtpm.swtpm import exception
from nova_vtpm.swtpm import state
from nova_vtpm.tests.unit import test_swtpm_state as state_tests

UUID = state_tests.UUID
FACTS = capabilities.HostFacts('0.7.1', '0.7.1', '0.9.2', ('tpm-2.0',), ())
CERT = b'EK-CERT' * 150


def sha(data):
    return hashlib.sha256(data).hexdigest()


def fake_identity(cert=CERT, permall=None):
    return state.Identity(
        ek_cert_der=cert, ek_cert_sha256=sha(cert),
        ek_cert_nv_index=0x01C00002, ek_cert_subject='CN=vm:' + UUID,
        ek_pub=b'pub', ek_pub_sha256=sha(b'pub'), ek_handle=0x81010001,
        nv_indices=(0x01C00002,), persistent_handles=(0x81010001,),
        permall_sha256=sha(permall) if permall else None)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class LocalDirectoryStoreTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.root = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                 'store')
        self.store = backup.LocalDirectoryStore(self.root)

    def test_loaded_by_entry_point(self):
        store = backup.load_store('local', root=self.root)
        self.assertIsInstance(store, backup.LocalDirectoryStore)
        self.assertEqual(self.root, store.root)

    def test_put_get_list_delete(self):
        files = {'tpm2-00.permall': b'abc', 'tpm2-00.volatilestate': b'v'}
        self.store.put(UUID, 'b1', files, {'backup_id': 'b1',
                                           'created_at': '2'})
        self.store.put(UUID, 'b0', {'tpm2-00.permall': b'x'},
                       {'backup_id': 'b0', 'created_at': '1'})
        manifest, got = self.store.get(UUID, 'b1')
        self.assertEqual(files, got)
        self.assertEqual('b1', manifest['backup_id'])
        self.assertEqual(['b0', 'b1'],
                         [m['backup_id'] for m in self.store.list(UUID)])
        self.assertEqual([], self.store.list('other'))
        self.store.delete(UUID, 'b0')
        self.store.delete(UUID, 'b0')
        self.assertEqual(['b1'],
                         [m['backup_id'] for m in self.store.list(UUID)])
        self.assertRaises(exception.BackupNotFound, self.store.get, UUID,
                          'b0')

    def test_modes(self):
        self.store.put(UUID, 'b1', {'tpm2-00.permall': b'abc'}, {})
        path = os.path.join(self.root, UUID, 'b1')
        self.assertEqual(0o700, mode(self.root))
        self.assertEqual(0o700, mode(os.path.dirname(path)))
        self.assertEqual(0o700, mode(path))
        for name in os.listdir(path):
            self.assertEqual(0o600, mode(os.path.join(path, name)))

    def test_names_are_single_path_components(self):
        for bad in ('../x', 'a/b', '', '.hidden', 'x' * 200, None):
            self.assertRaises(exception.InvalidStoreName, self.store.put,
                              UUID, bad, {}, {})
        self.assertRaises(exception.InvalidStoreName, self.store.put,
                          '..', 'b', {}, {})
        self.assertRaises(exception.InvalidStoreName, self.store.put,
                          UUID, 'b', {'../evil': b''}, {})
        self.assertRaises(exception.InvalidStoreName, self.store.put,
                          UUID, 'b', {'manifest.json': b''}, {})

    def test_put_is_all_or_nothing(self):
        real_write = backup._write_file
        calls = []

        def failing_write(path, data, mode=0o600):
            calls.append(path)
            if len(calls) == 2:
                raise OSError(28, 'No space left on device')
            real_write(path, data, mode)

        with mock.patch.object(backup, '_write_file', failing_write):
            self.assertRaises(OSError, self.store.put, UUID, 'b1',
                              {'a': b'1', 'b': b'2'}, {})
        self.assertEqual([], self.store.list(UUID))
        self.assertEqual([], os.listdir(os.path.join(self.root, UUID)))

    def test_put_refuses_to_overwrite(self):
        self.store.put(UUID, 'b1', {'a': b'1'}, {})
        self.assertRaises(FileExistsError, self.store.put, UUID, 'b1',
                          {'a': b'2'}, {})


class BackupTest(state_tests._StateDirBase):

    def setUp(self):
        super().setUp()
        self.store = backup.LocalDirectoryStore(
            os.path.join(self.useFixture(fixtures.TempDir()).path, 's'))

    def backup(self, **kwargs):
        kwargs.setdefault('host_facts', FACTS)
        return backup.backup(self.sd, self.store, **kwargs)

    def test_manifest(self):
        files = self.make()
        permall = files['tpm2-00.permall']
        manifest = self.backup(identity=fake_identity(permall=permall),
                               reason='post-migration')
        self.assertEqual(UUID, manifest['instance_uuid'])
        self.assertEqual('post-migration', manifest['reason'])
        self.assertEqual([{'name': 'tpm2-00.permall', 'size': len(permall),
                           'sha256': sha(permall)}], manifest['files'])
        self.assertEqual(sha(CERT), manifest['fingerprint'])
        self.assertTrue(manifest['identity']['read_from_these_files'])
        self.assertTrue(manifest['encrypted'])
        self.assertEqual(256, manifest['key_bits'])
        self.assertEqual('0.9.2', manifest['swtpm']['libtpms_version'])
        self.assertEqual(os.getuid(), manifest['owner']['uid'])
        stored, got = self.store.get(UUID, manifest['backup_id'])
        self.assertEqual(manifest, stored)
        # Ciphertext as-is; no lock file.
        self.assertEqual({'tpm2-00.permall': permall}, got)
        json.dumps(stored)

    def test_refuses_missing_empty_and_damaged(self):
        exc = self.assertRaises(exception.StateUnreadable, self.backup)
        self.assertEqual(exception.MISSING_DIR, exc.kind)
        self.make({'.lock': b''})
        exc = self.assertRaises(exception.StateUnreadable, self.backup)
        self.assertEqual(exception.EMPTY_STATE, exc.kind)
        with open(os.path.join(self.sd.path, 'tpm2-00.permall'), 'wb') as f:
            f.write(state_tests.blob()[:-100])
        exc = self.assertRaises(exception.StateUnreadable, self.backup)
        self.assertEqual(exception.TRUNCATED_OR_CORRUPT, exc.kind)
        self.assertEqual([], self.store.list(UUID))

    def test_verify_detects_tampering(self):
        self.make()
        manifest = self.backup()
        backup_id = manifest['backup_id']
        self.assertEqual(manifest, backup.verify(self.store, UUID,
                                                 backup_id))
        path = os.path.join(self.store.root, UUID, backup_id,
                            'tpm2-00.permall')
        data = bytearray(open(path, 'rb').read())
        data[100] ^= 1
        with open(path, 'wb') as f:
            f.write(data)
        exc = self.assertRaises(exception.BackupCorrupt, backup.verify,
                                self.store, UUID, backup_id)
        self.assertIn('tpm2-00.permall has sha256', str(exc))
        os.unlink(path)
        exc = self.assertRaises(exception.BackupCorrupt, backup.verify,
                                self.store, UUID, backup_id)
        self.assertIn('tpm2-00.permall is missing', str(exc))

    def test_verify_extra_file_and_bad_manifest(self):
        self.make()
        backup_id = self.backup()['backup_id']
        folder = os.path.join(self.store.root, UUID, backup_id)
        with open(os.path.join(folder, 'intruder'), 'wb') as f:
            f.write(b'x')
        exc = self.assertRaises(exception.BackupCorrupt, backup.verify,
                                self.store, UUID, backup_id)
        self.assertIn('intruder is not in the manifest', str(exc))
        with open(os.path.join(folder, 'manifest.json'), 'w') as f:
            f.write('{not json')
        self.assertRaises(exception.BackupCorrupt, backup.verify,
                          self.store, UUID, backup_id)

    def test_prune(self):
        self.make()
        ids = [self.backup()['backup_id'] for _ in range(5)]
        self.assertEqual(ids[:3], backup.prune(self.store, UUID, keep=2))
        self.assertEqual(ids[3:], [m['backup_id']
                                   for m in self.store.list(UUID)])
        self.assertEqual([], backup.prune(self.store, UUID, keep=2))
        self.assertRaises(ValueError, backup.prune, self.store, UUID, 0)


class RestoreTest(state_tests._StateDirBase):
    """restore() with read_identity mocked: the file-system choreography."""

    def setUp(self):
        super().setUp()
        self.store = backup.LocalDirectoryStore(
            os.path.join(self.useFixture(fixtures.TempDir()).path, 's'))
        self.files = self.make()
        self.permall = self.files['tpm2-00.permall']
        self.manifest = backup.backup(
            self.sd, self.store, identity=fake_identity(permall=self.permall),
            host_facts=FACTS)
        self.backup_id = self.manifest['backup_id']
        self.read = self.useFixture(fixtures.MockPatchObject(
            state.StateDir, 'read_identity', autospec=True,
            side_effect=self._read)).mock
        self.read_paths = []

    def _read(self, sd, secret, **kwargs):
        self.read_paths.append(sd.path)
        return fake_identity(permall=self.permall)

    def set_original(self, content):
        path = os.path.join(self.sd.path, 'tpm2-00.permall')
        with open(path, 'wb') as f:
            f.write(content)
        return path

    def parent_listing(self):
        return sorted(os.listdir(os.path.dirname(self.sd.path)))

    def assertOriginal(self, content):
        with open(os.path.join(self.sd.path, 'tpm2-00.permall'), 'rb') as f:
            self.assertEqual(content, f.read())
        self.assertEqual(['tpm2'], self.parent_listing())

    def test_restore_over_a_damaged_state(self):
        self.set_original(b'damaged')
        identity = backup.restore(self.store, self.backup_id, self.sd,
                                  b'secret')
        self.assertEqual(sha(CERT), identity.fingerprint)
        self.assertOriginal(self.permall)
        # Proven on the new directory before the swap, not on the original.
        self.assertNotEqual(self.sd.path, self.read_paths[0])
        self.assertIn('.tpm2.restore-', self.read_paths[0])
        self.assertEqual(0o700, mode(self.sd.path))
        self.assertEqual(0o600, mode(os.path.join(self.sd.path,
                                                  'tpm2-00.permall')))
        self.assertEqual(['tpm2-00.permall'], os.listdir(self.sd.path))

    def test_restore_into_a_missing_directory(self):
        os.unlink(os.path.join(self.sd.path, 'tpm2-00.permall'))
        os.unlink(os.path.join(self.sd.path, '.lock'))
        os.rmdir(self.sd.path)
        os.rmdir(os.path.dirname(self.sd.path))
        backup.restore(self.store, self.backup_id, self.sd, b'secret')
        self.assertOriginal(self.permall)
        self.assertEqual(0o711, mode(os.path.dirname(self.sd.path)))

    def test_keeps_the_original_owner(self):
        if os.geteuid() != 0:
            self.skipTest('needs root to chown')
        os.chown(self.sd.path, 65534, 65534)
        backup.restore(self.store, self.backup_id, self.sd, b'secret')
        for path in (self.sd.path,
                     os.path.join(self.sd.path, 'tpm2-00.permall')):
            st = os.stat(path)
            self.assertEqual((65534, 65534), (st.st_uid, st.st_gid))

    def test_wrong_secret_leaves_the_original(self):
        self.set_original(b'original')
        unreadable = exception.StateUnreadable(
            exception.WRONG_KEY, 'p', 'no',
            client_error='TPM result from PTM_INIT: 0x101')
        self.read.side_effect = unreadable
        exc = self.assertRaises(exception.RestoreFailed, backup.restore,
                                self.store, self.backup_id, self.sd, b'bad')
        self.assertIs(unreadable, exc.cause)
        self.assertIn('The original state was left in place', str(exc))
        self.assertOriginal(b'original')

    def test_known_good_sha_is_passed_to_the_read(self):
        backup.restore(self.store, self.backup_id, self.sd, b'secret')
        self.assertEqual(sha(self.permall),
                         self.read.call_args[1]['known_good_sha256'])

    def test_other_tpm_is_refused(self):
        self.set_original(b'original')
        self.read.side_effect = None
        self.read.return_value = fake_identity(cert=b'another TPM')
        exc = self.assertRaises(exception.RestoreFailed, backup.restore,
                                self.store, self.backup_id, self.sd, b's')
        self.assertIsInstance(exc.cause, exception.IdentityChanged)
        self.assertOriginal(b'original')

    def test_explicit_expected_fingerprint(self):
        self.assertRaises(exception.RestoreFailed, backup.restore,
                          self.store, self.backup_id, self.sd, b's',
                          expected_fingerprint='0' * 64)

    def test_tampered_backup_is_refused_before_anything(self):
        self.set_original(b'original')
        path = os.path.join(self.store.root, UUID, self.backup_id,
                            'tpm2-00.permall')
        with open(path, 'r+b') as f:
            f.seek(50)
            f.write(b'\0\0\0')
        self.assertRaises(exception.BackupCorrupt, backup.restore,
                          self.store, self.backup_id, self.sd, b's')
        self.assertOriginal(b'original')
        self.read.assert_not_called()

    def test_failed_swap_puts_the_original_back(self):
        self.set_original(b'original')
        real_rename = os.rename
        calls = []

        def rename(src, dst):
            calls.append((src, dst))
            if len(calls) == 2:
                raise OSError(5, 'I/O error')
            real_rename(src, dst)

        with mock.patch.object(os, 'rename', rename):
            self.assertRaises(OSError, backup.restore, self.store,
                              self.backup_id, self.sd, b's')
        self.assertOriginal(b'original')

    def test_failed_check_after_swap_puts_the_original_back(self):
        self.set_original(b'original')
        with mock.patch.object(backup, '_check_restored',
                               return_value=['files differ']):
            exc = self.assertRaises(exception.RestoreFailed, backup.restore,
                                    self.store, self.backup_id, self.sd,
                                    b's')
        self.assertIn('files differ', str(exc))
        self.assertOriginal(b'original')

    def test_running_swtpm_is_refused(self):
        with mock.patch.object(state, 'state_in_use', return_value=True):
            self.assertRaises(exception.StateInUse, backup.restore,
                              self.store, self.backup_id, self.sd, b's')
        self.read.assert_not_called()

    def test_backup_of_another_instance(self):
        other = state.StateDir(self.root, 'other-instance')
        backup.restore(self.store, self.backup_id, other, b's',
                       instance_uuid=UUID)
        with open(os.path.join(other.path, 'tpm2-00.permall'), 'rb') as f:
            self.assertEqual(self.permall, f.read())
