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

"""The key swtpm derives from a vTPM secret, and how it is handed over."""

import hashlib
import os
import subprocess
from unittest import mock

import fixtures
from oslotest import base

from nova_vtpm.swtpm import keys
from nova_vtpm.swtpm import protocol

# Verified against real swtpm 0.7.1: a state made by
# ``swtpm_setup --pwdfile <file holding "sekrit-value"> --cipher aes-256-cbc``
# opens with ``swtpm --key fd=N,format=binary`` and this key.
KNOWN_SECRET = b'sekrit-value'
KNOWN_KEY = ('fb59839986b87df158b57d6bb9625644'
             '5005450f5085f6531438aa555442b0ea')


class DeriveKeyTest(base.BaseTestCase):

    def test_pbkdf2_sha512_salt_swtpm_1000_iterations(self):
        for secret in (b'', b'x', KNOWN_SECRET, os.urandom(64),
                       b'\x00\xff' * 300):
            self.assertEqual(
                hashlib.pbkdf2_hmac('sha512', secret, b'swtpm', 1000, 32),
                keys.derive_key(secret))

    def test_known_vector(self):
        self.assertEqual(KNOWN_KEY, keys.derive_key(KNOWN_SECRET).hex())

    def test_str_is_utf8(self):
        self.assertEqual(keys.derive_key('sekrit-välue'.encode('utf-8')),
                         keys.derive_key('sekrit-välue'))

    def test_128_bit_key(self):
        key = keys.derive_key(KNOWN_SECRET, 16)
        self.assertEqual(16, len(key))
        self.assertEqual(
            hashlib.pbkdf2_hmac('sha512', KNOWN_SECRET, b'swtpm', 1000, 16),
            key)

    def test_bad_arguments(self):
        self.assertRaises(ValueError, keys.derive_key, b's', 24)
        self.assertRaises(TypeError, keys.derive_key, 1234)
        self.assertRaises(ValueError, keys.key_bytes_for, 'aes-192-cbc')
        self.assertEqual(32, keys.key_bytes_for('aes-256-cbc'))
        self.assertEqual(16, keys.key_bytes_for('aes-cbc'))


class KeyHandOverTest(base.BaseTestCase):
    """The key reaches swtpm through a pipe: never argv, never a file."""

    def test_key_goes_through_a_pipe(self):
        key = keys.derive_key(KNOWN_SECRET)
        seen = {}

        def fake_popen(cmd, **kwargs):
            seen['cmd'] = cmd
            key_arg = cmd[cmd.index('--key') + 1]
            fd = int(key_arg.split(',')[0].split('=')[1])
            self.assertIn(fd, kwargs['pass_fds'])
            seen['piped'] = os.read(fd, 100)
            proc = mock.Mock(pid=4242, returncode=None)
            return proc

        work = self.useFixture(fixtures.TempDir()).path
        proc = protocol.SwtpmProcess('/nonexistent/state', work, key=key)
        with mock.patch.object(subprocess, 'Popen', side_effect=fake_popen):
            proc.start()
        self.addCleanup(proc.data.close)
        self.addCleanup(proc.ctrl.close)
        self.assertEqual(key, seen['piped'])
        argv = ' '.join(seen['cmd'])
        self.assertNotIn(key.hex(), argv)
        self.assertNotIn(KNOWN_SECRET.decode(), argv)
        self.assertIn('format=binary,mode=aes-256-cbc', argv)
        self.assertEqual([], [n for n in os.listdir(work)
                              if 'key' in n])
