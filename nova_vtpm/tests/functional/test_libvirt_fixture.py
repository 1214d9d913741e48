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

"""The private libvirt fixture runs real vTPM domains, and leaves nothing.

Also pins the libvirt/swtpm facts nova-vtpm relies on: where and how the
encrypted state is kept, that a saved and restored domain keeps its TPM
identity (EK certificate) even when its state dir was lost in between, and
that a cold start after losing the state silently makes a NEW identity.

The EK certificate is read offline from a copy of the state, with the key
derived from the libvirt secret as swtpm does for ``--key pwdfd=``.  This
is a small local helper on purpose: the real library is elsewhere.
"""

import base64
import hashlib
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import uuid

from oslotest import base
from testtools import content

from nova_vtpm.tests.functional import libvirt_fixture
from nova_vtpm.tests.functional import services

EK_CERT_RSA_NV_INDEX = '0x01c00002'
_OFFLINE_TOOLS = ('swtpm', 'swtpm_ioctl', 'tpm2_startup', 'tpm2_nvread')


def swtpm_key(secret):
    """swtpm's key for a passphrase: PBKDF2-HMAC-SHA512, salt "swtpm"."""
    return hashlib.pbkdf2_hmac('sha512', secret, b'swtpm', 1000, 32)


def _free_port_pair():
    """A port p with p and p + 1 free on loopback (swtpm TCTI: ctrl = +1)."""
    for _ in range(50):
        port = services.free_port()
        if port >= 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((services.LOOPBACK, port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError('no two consecutive free ports on loopback')


def _run(cmd, timeout=30):
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)
    if proc.returncode:
        raise RuntimeError('%s failed (%s): %s' % (
            cmd[0], proc.returncode, (proc.stderr or proc.stdout).strip()))
    return proc


def read_ek_cert(tpm2_dir, secret, workdir):
    """The RSA EK certificate (DER) in a copy of encrypted swtpm state.

    Copies ``tpm2_dir``, runs ``swtpm socket`` on the copy on loopback
    with the key derived from ``secret``, then ``swtpm_ioctl -i``,
    ``tpm2_startup -c`` and ``tpm2_nvread`` of the EK certificate index.
    The swtpm is stopped by pid; nothing of the copy is left.
    """
    work = tempfile.mkdtemp(dir=workdir)
    try:
        state = os.path.join(work, 'tpm2')
        shutil.copytree(tpm2_dir, state)
        keyfile = os.path.join(work, 'key.hex')
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'w') as f:
            f.write(swtpm_key(secret).hex())
        port = _free_port_pair()
        log = os.path.join(work, 'swtpm.log')
        proc = subprocess.Popen(
            ['swtpm', 'socket', '--tpm2',
             '--tpmstate', 'dir=%s' % state,
             '--server', 'type=tcp,port=%d,bindaddr=%s' % (
                 port, services.LOOPBACK),
             '--ctrl', 'type=tcp,port=%d,bindaddr=%s' % (
                 port + 1, services.LOOPBACK),
             '--key', 'file=%s,format=hex,mode=aes-256-cbc' % keyfile,
             '--log', 'file=%s' % log],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(
                        (services.LOOPBACK, port + 1), timeout=1).close()
                    break
                except OSError:
                    if (proc.poll() is not None
                            or time.monotonic() >= deadline):
                        raise RuntimeError('swtpm did not listen: %s'
                                           % services._tail(log))
                    time.sleep(0.05)
            try:
                _run(['swtpm_ioctl', '--tcp',
                      '%s:%d' % (services.LOOPBACK, port + 1), '-i'])
                tcti = 'swtpm:host=%s,port=%d' % (services.LOOPBACK, port)
                _run(['tpm2_startup', '-c', '-T', tcti])
                der = os.path.join(work, 'ek.der')
                _run(['tpm2_nvread', '-T', tcti, '-C', 'o', '-o', der,
                      EK_CERT_RSA_NV_INDEX])
            except RuntimeError as e:
                raise RuntimeError('%s; swtpm log: %s'
                                   % (e, services._tail(log)))
            with open(der, 'rb') as f:
                return f.read()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    finally:
        shutil.rmtree(work)


def fingerprint(der):
    return hashlib.sha256(der).hexdigest()


class LibvirtFixtureTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest('needs root (libvirtd, mount namespace)')
        missing = libvirt_fixture.missing_binaries(
            libvirt_fixture.REQUIRED_BINARIES + _OFFLINE_TOOLS)
        if missing:
            self.skipTest('missing: %s' % ', '.join(missing))
        self.libvirt = libvirt_fixture.Libvirt()
        self.addCleanup(self._check_left_nothing)
        self.libvirt.setUp()
        self.addCleanup(self.libvirt.cleanUp)
        self.addCleanup(self._add_timings)

    def _add_timings(self):
        lv = self.libvirt
        self.addDetail('libvirt-daemons-start-seconds', content.text_content(
            ', '.join('%.2f' % t for t in lv.start_times)))
        self.addDetail('domain-start-seconds', content.text_content(
            repr({n: ['%.2f' % t for t in ts]
                  for n, ts in lv.domain_start_times.items()})))

    def _check_left_nothing(self):
        lv = self.libvirt
        self.assertTrue(lv.all_pids)
        self.assertEqual([], lv.alive_pids())
        if getattr(lv, 'base', None):
            self.assertFalse(os.path.exists(lv.base))

    def _new_vtpm_domain(self):
        """A defined (not started) vTPM domain.

        Returns (name, domain uuid, secret value, secret uuid).
        """
        dom_uuid = str(uuid.uuid4())
        secret_uuid = str(uuid.uuid4())
        # What Nova stores: base64 of 384 random bytes.
        secret = base64.b64encode(os.urandom(384))
        self.libvirt.define_vtpm_secret(secret_uuid, secret,
                                        usage_name=dom_uuid)
        name = 'nvtpm-%s' % dom_uuid[:8]
        self.libvirt.define_vtpm_domain(name, dom_uuid, secret_uuid)
        return name, dom_uuid, secret, secret_uuid

    def _ek(self, dom_uuid, secret):
        tpm2 = self.libvirt.swtpm_tpm2_dir(dom_uuid)
        permall = os.path.join(tpm2, 'tpm2-00.permall')
        # Written by swtpm: wait (bounded) rather than race it.
        deadline = time.monotonic() + 10
        while not os.path.exists(permall) and time.monotonic() < deadline:
            time.sleep(0.1)
        der = read_ek_cert(tpm2, secret, self.libvirt.work)
        self.assertEqual(0x30, der[0], 'not a DER certificate')
        return fingerprint(der)

    def test_vtpm_domain_state_is_private_encrypted_and_owned(self):
        lv = self.libvirt
        name, dom_uuid, secret, secret_uuid = self._new_vtpm_domain()
        lv.start(name)
        self.assertEqual('running', lv.domain_state(name))

        # Everything libvirt keeps for this domain is private: present in
        # the fixture's root, absent at the system paths.
        for path in ('/var/lib/libvirt/swtpm/%s/tpm2' % dom_uuid,
                     '/etc/libvirt/qemu/%s.xml' % name,
                     '/etc/libvirt/secrets/%s.xml' % secret_uuid,
                     '/var/log/swtpm/libvirt/qemu/%s-swtpm.log' % name,
                     '/run/libvirt/qemu/%s.pid' % name):
            self.assertTrue(os.path.exists(lv.host_path(path)), path)
            self.assertFalse(os.path.exists(path), path)

        # libvirt's standard layout, under the fixture's private root.
        state_dir = lv.swtpm_state_dir(dom_uuid)
        self.assertEqual(
            lv.root + '/var/lib/libvirt/swtpm/' + dom_uuid, state_dir)
        tpm2 = lv.swtpm_tpm2_dir(dom_uuid)
        permall = os.path.join(tpm2, 'tpm2-00.permall')
        swtpm_uid = pwd.getpwnam(lv.swtpm_user).pw_uid
        st = os.stat(tpm2)
        self.assertEqual((swtpm_uid, 0o700),
                         (st.st_uid, stat.S_IMODE(st.st_mode)))
        st = os.stat(permall)
        self.assertEqual((swtpm_uid, 0o600),
                         (st.st_uid, stat.S_IMODE(st.st_mode)))
        self.assertGreater(st.st_size, 4096)
        with open(permall, 'rb') as f:
            blob = f.read()
        # Encrypted: no DER certificate in clear in the state file.
        self.assertNotIn(b'swtpm-localca', blob)
        with open(lv.swtpm_log_path(name)) as f:
            swtpm_log = f.read()
        self.assertIn('Successfully authored TPM state', swtpm_log)
        self.assertIn('encrypted', swtpm_log)
        # The state opens with the key derived from the secret only.
        self._ek(dom_uuid, secret)
        self.assertRaises(RuntimeError, read_ek_cert, tpm2,
                          b'not the secret', lv.work)
        self.addDetail('swtpm-state', content.text_content(
            'uuid dir %o uid %d; tpm2 dir %o uid %d; permall %d bytes' % (
                stat.S_IMODE(os.stat(state_dir).st_mode),
                os.stat(state_dir).st_uid,
                stat.S_IMODE(os.stat(tpm2).st_mode), os.stat(tpm2).st_uid,
                len(blob))))

        lv.destroy(name)
        lv.undefine(name, keep_tpm=True)
        self.assertTrue(os.path.exists(permall))

    def test_ek_survives_save_restore_not_a_wiped_cold_start(self):
        lv = self.libvirt
        name, dom_uuid, secret, _ = self._new_vtpm_domain()
        lv.start(name)
        ek = self._ek(dom_uuid, secret)

        # A non-shared migration on one host: the state travels in the
        # save image and is re-created in an empty dir on restore.
        saved = lv.save(name)
        self.assertEqual('shut off', lv.domain_state(name))
        shutil.rmtree(lv.swtpm_state_dir(dom_uuid))
        lv.restore(saved)
        self.assertEqual('running', lv.domain_state(name))
        self.assertEqual(ek, self._ek(dom_uuid, secret))

        # A cold start after losing the state: a new TPM, silently.
        lv.destroy(name)
        shutil.rmtree(lv.swtpm_state_dir(dom_uuid))
        lv.start(name)
        self.assertNotEqual(ek, self._ek(dom_uuid, secret))
