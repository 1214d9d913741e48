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

"""The swtpm state library against real swtpm 0.7.1 state.

Each state is made exactly as libvirt makes it on a guest's first start
(``swtpm_setup --tpm2 --pwdfile-fd N --cipher aes-256-cbc --tpm-state <dir>
--vmid <name>:<uuid> --createek --create-ek-cert --create-platform-cert
--lock-nvram --not-overwrite``), with a private swtpm-localca (its config
under a private ``XDG_CONFIG_HOME``, so the host's CA is never touched),
and owned by ``tss`` like libvirt's. Making one takes about 2 s, so one
state is made per test process and each test works on its own copy.

Every row of the hazard table is produced for real and must be detected
with the right kind and swtpm's own words; the original state must never
change while it is read.
"""

import atexit
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time

import fixtures
from oslotest import base

from nova_vtpm.swtpm import backup
from nova_vtpm.swtpm import capabilities
from nova_vtpm.swtpm import exception
from nova_vtpm.swtpm import keys
from nova_vtpm.swtpm import protocol
from nova_vtpm.swtpm import state

UUID = '3d5f1a2b-7c4e-4f6a-8b9c-0d1e2f3a4b5c'
VMID = 'instance-00000001:' + UUID
SECRET = b'5e4Rk0h2QpW8zN1vB7xC3mL9tY6uJ0aD'
PERMALL = 'tpm2-00.permall'
TOOLS = ('swtpm', 'swtpm_setup', 'swtpm_ioctl')
_TEMPLATE = {}
# oslotest gives each test its own TMPDIR, removed after the test: the
# state shared by the tests of a process lives in the real one.
_PROCESS_TMP = tempfile.gettempdir()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def state_owner():
    """(uid, gid) for the state: tss like libvirt, else nobody.

    None if this process cannot chown.
    """
    if os.geteuid() != 0:
        return None
    for name in ('tss', 'nobody'):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    return None


def swtpm_setup(xdg, path, secret=SECRET, vmid=VMID, ek_dir=None):
    """Manufacture a vTPM the way libvirt does; returns seconds taken."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    cmd = ['swtpm_setup', '--tpm2', '--cipher', 'aes-256-cbc',
           '--tpm-state', path, '--vmid', vmid,
           '--logfile', os.path.join(xdg, 'swtpm_setup.log'),
           '--createek', '--create-ek-cert', '--create-platform-cert',
           '--lock-nvram', '--not-overwrite']
    if ek_dir:
        cmd += ['--write-ek-cert-files', ek_dir]
    read_end, write_end = os.pipe()
    os.write(write_end, secret)
    os.close(write_end)
    cmd[2:2] = ['--pwdfile-fd', str(read_end)]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, pass_fds=(read_end,), capture_output=True, timeout=120,
            env=dict(os.environ, XDG_CONFIG_HOME=xdg))
    finally:
        os.close(read_end)
    if proc.returncode:
        with open(os.path.join(xdg, 'swtpm_setup.log')) as f:
            raise RuntimeError('swtpm_setup failed (%d): %s %s' % (
                proc.returncode, proc.stderr.decode(), f.read()[-2000:]))
    owner = state_owner()
    os.chmod(path, 0o700)
    for name in os.listdir(path):
        os.chmod(os.path.join(path, name), 0o600)
        if owner:
            os.chown(os.path.join(path, name), *owner)
    if owner:
        os.chown(path, *owner)
    return time.monotonic() - started


def private_ca():
    """A private XDG_CONFIG_HOME for swtpm_setup and swtpm-localca.

    The CA itself is created under it on first use.
    """
    xdg = tempfile.mkdtemp(prefix='nova-vtpm-swtpm-ca-', dir=_PROCESS_TMP)
    subprocess.run(['swtpm_setup', '--create-config-files',
                    'skip-if-exist,root'], check=True, capture_output=True,
                   timeout=60, env=dict(os.environ, XDG_CONFIG_HOME=xdg))
    return xdg


def template():
    """The one libvirt-made state of this test process (made once)."""
    if not _TEMPLATE:
        xdg = private_ca()
        atexit.register(shutil.rmtree, xdg, True)
        path = os.path.join(xdg, 'template', 'tpm2')
        ek_dir = os.path.join(xdg, 'ek')
        os.makedirs(ek_dir)
        seconds = swtpm_setup(xdg, path, ek_dir=ek_dir)
        with open(os.path.join(ek_dir, 'ek-rsa2048.crt'), 'rb') as f:
            ek_cert = f.read()
        _TEMPLATE.update(xdg=xdg, path=path, ek_cert=ek_cert,
                         setup_seconds=seconds)
    return _TEMPLATE


class SwtpmStateTestCase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        missing = [t for t in TOOLS if not shutil.which(t)]
        if missing:
            self.skipTest('needs %s' % ', '.join(missing))
        self.template = template()
        self.root = self.useFixture(fixtures.TempDir()).path
        self.sd = state.StateDir(self.root, UUID)
        shutil.copytree(self.template['path'], self.sd.path)
        if state_owner():
            os.chown(os.path.dirname(self.sd.path), 0, 0)
            for path in [self.sd.path] + [os.path.join(self.sd.path, n)
                                          for n in os.listdir(self.sd.path)]:
                os.chown(path, *state_owner())
        self.permall_path = os.path.join(self.sd.path, PERMALL)
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self._watch_swtpm_pids()

    def _watch_swtpm_pids(self):
        """Fail the test if a swtpm it started is still running."""
        pids = []
        real_start = protocol.SwtpmProcess.start

        def start(proc):
            result = real_start(proc)
            pids.append(proc.proc.pid)
            return result

        self.useFixture(fixtures.MockPatchObject(
            protocol.SwtpmProcess, 'start', start))

        def check():
            alive = []
            for pid in pids:
                try:
                    os.kill(pid, 0)
                    alive.append(pid)
                except ProcessLookupError:
                    pass
            self.assertEqual([], alive, 'swtpm processes left running')
        self.addCleanup(check)

    def snapshot(self, path=None):
        """Everything about a state dir that a read must not change."""
        path = path or self.sd.path
        if not os.path.exists(path):
            return None
        out = {}
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            st = os.stat(full)
            with open(full, 'rb') as f:
                out[name] = (sha(f.read()), st.st_mtime_ns, st.st_mode,
                             st.st_uid, st.st_gid)
        st = os.stat(path)
        out['.'] = (st.st_mode, st.st_uid, st.st_gid)
        return out

    def read(self, secret=SECRET, **kwargs):
        return self.sd.read_identity(secret, tmp_dir=self.tmp, **kwargs)

    def assertUnreadable(self, kind, *texts, secret=SECRET, client=None,
                         **kwargs):
        before = self.snapshot()
        exc = self.assertRaises(exception.StateUnreadable, self.read,
                                secret, **kwargs)
        self.assertEqual(kind, exc.kind, str(exc))
        for text in texts:
            self.assertIn(text, exc.detail)
        if client:
            self.assertEqual(client, exc.client_error)
        self.assertEqual(before, self.snapshot())
        self.assertEqual([], os.listdir(self.tmp))
        return exc

    def mutate_permall(self, change):
        with open(self.permall_path, 'rb') as f:
            data = bytearray(f.read())
        data = change(data)
        with open(self.permall_path, 'wb') as f:
            f.write(data)


class IdentityTest(SwtpmStateTestCase):

    def test_identity_is_the_ek_cert_swtpm_setup_wrote(self):
        before = self.snapshot()
        identity = self.read()
        self.assertEqual(self.template['ek_cert'], identity.ek_cert_der)
        self.assertEqual(sha(self.template['ek_cert']), identity.fingerprint)
        self.assertEqual(0x01C00002, identity.ek_cert_nv_index)
        self.assertEqual(0x81010001, identity.ek_handle)
        self.assertEqual('CN=' + VMID, identity.ek_cert_subject)
        self.assertIn(0x01C08000, identity.nv_indices)  # platform cert
        with open(self.permall_path, 'rb') as f:
            self.assertEqual(sha(f.read()), identity.permall_sha256)
        self.assertEqual(before, self.snapshot())

    def test_tcp_transport(self):
        """The same read over 127.0.0.1, for AppArmor-confined swtpm."""
        self.assertEqual(sha(self.template['ek_cert']),
                         self.read(transport='tcp').fingerprint)
        self.assertUnreadable(exception.WRONG_KEY_OR_CORRUPT,
                              'Verification of HMAC failed',
                              secret=b'not the secret', transport='tcp')

    def test_ek_public_matches_tpm2_tools_and_createek(self):
        """The EK public area read here is tpm2_readpublic's.

        And TPM2_CreatePrimary of the EK template reproduces it.
        """
        if not shutil.which('tpm2_readpublic'):
            self.skipTest('needs tpm2-tools')
        identity = self.read()
        copy = os.path.join(self.tmp, 'copy')
        shutil.copytree(self.sd.path, copy)
        sock = os.path.join(self.tmp, 'tpm.sock')
        key_file = os.path.join(self.tmp, 'key.hex')
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, keys.derive_key(SECRET).hex().encode())
        os.close(fd)
        swtpm = subprocess.Popen(
            ['swtpm', 'socket', '--tpm2',
             '--tpmstate', 'dir=%s,mode=0600' % copy,
             '--key', 'file=%s,format=hex,mode=aes-256-cbc' % key_file,
             '--server', 'type=unixio,path=%s' % sock,
             '--ctrl', 'type=unixio,path=%s.ctrl' % sock,
             '--log', 'file=%s' % os.path.join(self.tmp, 'log')])
        env = dict(os.environ, TPM2TOOLS_TCTI='swtpm:path=%s' % sock)
        out = os.path.join(self.tmp, 'ek.pub')
        try:
            for _ in range(200):
                if os.path.exists(sock + '.ctrl') and os.path.exists(sock):
                    break
                time.sleep(0.01)
            run = dict(check=True, timeout=30, capture_output=True, env=env)
            subprocess.run(['swtpm_ioctl', '--unix', sock + '.ctrl', '-i'],
                           **run)
            subprocess.run(['tpm2_startup', '-c'], **run)
            subprocess.run(['tpm2_readpublic', '-c', '0x81010001', '-f',
                            'tss', '-o', out], **run)
            subprocess.run(['tpm2_shutdown'], **run)
            subprocess.run(['swtpm_ioctl', '--unix', sock + '.ctrl', '-s'],
                           **run)
            swtpm.wait(timeout=30)
        finally:
            if swtpm.poll() is None:
                swtpm.kill()
                swtpm.wait()
        with open(out, 'rb') as f:
            tss_public = f.read()
        # -f tss writes a TPM2B_PUBLIC: a 2-byte size, then TPMT_PUBLIC.
        self.assertEqual(sha(tss_public[2:]), identity.ek_pub_sha256)
        # The EK template, created afresh, gives the same key.
        with protocol.SwtpmProcess(copy, self.tmp,
                                   key=keys.derive_key(SECRET)) as proc:
            proc.init()
            proc.startup()
            self.assertEqual(identity.ek_pub, proc.create_ek_rsa())

    def test_inspect(self):
        facts = self.sd.inspect()
        self.assertTrue(facts.permall_present)
        self.assertTrue(facts.encrypted)
        self.assertEqual(0x0009, facts.header.flags)
        self.assertEqual(256, facts.header.key_bits)
        self.assertEqual((), facts.header.problems)
        self.assertEqual(0o700, facts.mode)
        self.assertFalse(facts.in_use)
        if state_owner():
            self.assertEqual(state_owner(), (facts.uid, facts.gid))

    def test_host_facts(self):
        facts = capabilities.host_facts(refresh=True)
        self.assertRegex(facts.swtpm_version, r'^\d+\.\d+')
        self.assertIn('tpm-2.0', facts.swtpm_features)
        self.assertTrue(facts.has('cmdarg-key-fd'))


class HazardTest(SwtpmStateTestCase):
    """Each row of the hazard table, produced for real."""

    def test_wrong_key(self):
        with open(self.permall_path, 'rb') as f:
            good = sha(f.read())
        self.assertUnreadable(
            exception.WRONG_KEY_OR_CORRUPT,
            'Verification of HMAC failed. Data integrity is compromised',
            'SWTPM_NVRAM_LoadData: Error from SWTPM_NVRAM_GetDecryptedData '
            'rc = 33', 'libtpms/tpm2: Entering failure mode',
            secret=b'not the secret',
            client='TPM result from PTM_INIT: 0x101')
        # With the sha256 of a known good file (the last backup), it is
        # certainly the key.
        self.assertUnreadable(exception.WRONG_KEY, secret=b'not the secret',
                              known_good_sha256=good)

    def test_no_key_on_encrypted_state(self):
        self.assertUnreadable(
            exception.NO_KEY, 'Could not find plain data in byte stream.',
            secret=None, client='TPM result from PTM_INIT: 0x101')

    def test_aes128_key_on_256bit_state(self):
        self.assertUnreadable(
            exception.WRONG_KEY, 'Wrong decryption key. Need 256 bit key.',
            cipher='aes-cbc', client='TPM result from PTM_INIT: 0x101')

    def test_one_flipped_byte(self):
        with open(self.permall_path, 'rb') as f:
            good = sha(f.read())

        def flip(data):
            data[3000] ^= 0x01
            return data
        self.mutate_permall(flip)
        self.assertUnreadable(
            exception.TRUNCATED_OR_CORRUPT,
            'Verification of HMAC failed. Data integrity is compromised',
            known_good_sha256=good,
            client='TPM result from PTM_INIT: 0x101')
        # Without a reference, swtpm cannot tell it from a wrong key.
        self.assertUnreadable(exception.WRONG_KEY_OR_CORRUPT)

    def test_truncated_permall(self):
        self.mutate_permall(lambda data: data[:-100])
        exc = self.assertUnreadable(
            exception.TRUNCATED_OR_CORRUPT, 'Could not decrypt',
            client='TPM result from PTM_INIT: 0x101')
        self.assertIn('truncated', exc.reason)
        header = self.sd.inspect().header
        self.assertIn('truncated', header.problems[0])

    def test_missing_dir(self):
        shutil.rmtree(self.sd.path)
        self.assertUnreadable(
            exception.MISSING_DIR, 'Could not open lockfile',
            client='TPM result from PTM_INIT: 0x9')
        self.assertFalse(os.path.exists(self.sd.path))

    def test_empty_dir_is_a_fresh_tpm(self):
        for name in os.listdir(self.sd.path):
            os.unlink(os.path.join(self.sd.path, name))
        exc = self.assertUnreadable(exception.EMPTY_STATE)
        self.assertIn('no state file', exc.reason)
        self.assertEqual([], os.listdir(self.sd.path))

    def test_fresh_tpm_with_a_state_file(self):
        """A fresh TPM that wrote its state file looks fine on disk.

        (E.g. after a failed incoming migration and ``swtpm_ioctl -i``
        anyway.) Only reading it shows that the TPM identity is gone.
        """
        shutil.rmtree(self.sd.path)
        os.makedirs(self.sd.path, mode=0o700)
        with protocol.SwtpmProcess(self.sd.path, self.tmp,
                                   key=keys.derive_key(SECRET)) as proc:
            proc.init()
            proc.startup()
        for name in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, name))
        facts = self.sd.inspect()
        self.assertTrue(facts.permall_present)
        self.assertTrue(facts.encrypted)
        self.assertEqual((), facts.header.problems)
        self.assertUnreadable(exception.EMPTY_STATE)

    def test_setup_again_with_the_same_vmid_is_a_new_tpm(self):
        """libvirt's cold start on a deleted state: a new EK, same CN."""
        old = self.read()
        shutil.rmtree(self.sd.path)
        swtpm_setup(self.template['xdg'], self.sd.path)
        new = self.read()
        self.assertNotEqual(old.fingerprint, new.fingerprint)
        self.assertNotEqual(old.ek_pub_sha256, new.ek_pub_sha256)
        self.assertEqual(old.ek_cert_subject, new.ek_cert_subject)
        exc = self.assertRaises(exception.IdentityChanged,
                                self.sd.verify_identity, SECRET,
                                old.fingerprint, tmp_dir=self.tmp)
        self.assertEqual(new.fingerprint, exc.actual)


class BackupRestoreTest(SwtpmStateTestCase):

    def setUp(self):
        super().setUp()
        self.store = backup.LocalDirectoryStore(
            os.path.join(self.useFixture(fixtures.TempDir()).path, 'store'))
        self.identity = self.read()
        self.manifest = backup.backup(self.sd, self.store,
                                      identity=self.identity,
                                      reason='post-migration')
        self.backup_id = self.manifest['backup_id']

    def test_backup_wipe_restore(self):
        before = self.snapshot()
        self.assertEqual(self.identity.fingerprint,
                         self.manifest['fingerprint'])
        backup.verify(self.store, UUID, self.backup_id)
        shutil.rmtree(self.sd.path)
        identity = backup.restore(self.store, self.backup_id, self.sd,
                                  SECRET)
        self.assertEqual(self.template['ek_cert'], identity.ek_cert_der)
        self.assertEqual(self.identity.fingerprint,
                         self.read().fingerprint)
        after = self.snapshot()
        # Same bytes, owner and modes (not the same mtime: new files).
        self.assertEqual({k: (v[0],) + v[2:] for k, v in before.items()
                          if k not in ('.', '.lock')},
                         {k: (v[0],) + v[2:] for k, v in after.items()
                          if k != '.'})
        self.assertEqual(before['.'], after['.'])
        st = os.stat(self.permall_path)
        self.assertEqual(0o600, st.st_mode & 0o777)
        if state_owner():
            self.assertEqual(state_owner(), (st.st_uid, st.st_gid))
        self.assertEqual(['tpm2'], os.listdir(os.path.dirname(
            self.sd.path)))

    def test_restore_over_a_new_tpm(self):
        """The identity-changed case, repaired."""
        shutil.rmtree(self.sd.path)
        swtpm_setup(self.template['xdg'], self.sd.path)
        self.assertNotEqual(self.identity.fingerprint,
                            self.read().fingerprint)
        backup.restore(self.store, self.backup_id, self.sd, SECRET)
        self.assertEqual(self.identity.fingerprint,
                         self.read().fingerprint)

    def test_tampered_backup_is_refused(self):
        before = self.snapshot()
        path = os.path.join(self.store.root, UUID, self.backup_id, PERMALL)
        with open(path, 'r+b') as f:
            f.seek(3000)
            byte = f.read(1)
            f.seek(3000)
            f.write(bytes([byte[0] ^ 0x01]))
        exc = self.assertRaises(exception.BackupCorrupt, backup.restore,
                                self.store, self.backup_id, self.sd, SECRET)
        self.assertIn('%s has sha256' % PERMALL, str(exc))
        self.assertEqual(before, self.snapshot())
        self.assertEqual(['tpm2'], os.listdir(os.path.dirname(
            self.sd.path)))

    def test_wrong_secret_is_refused(self):
        before = self.snapshot()
        exc = self.assertRaises(exception.RestoreFailed, backup.restore,
                                self.store, self.backup_id, self.sd,
                                b'not the secret')
        self.assertEqual(exception.WRONG_KEY, exc.cause.kind)
        self.assertIn('Verification of HMAC failed', exc.cause.detail)
        self.assertEqual(before, self.snapshot())
        self.assertEqual(['tpm2'], os.listdir(os.path.dirname(
            self.sd.path)))
