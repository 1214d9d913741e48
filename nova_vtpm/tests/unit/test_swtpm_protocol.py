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

"""swtpm host facts and the TPM wire protocol, without a TPM."""

import os
import struct
import time
from unittest import mock

import fixtures
from oslotest import base

from nova_vtpm.swtpm import capabilities
from nova_vtpm.swtpm import exception
from nova_vtpm.swtpm import protocol
from nova_vtpm.swtpm import state

SWTPM_CAPS = ('{ "type": "swtpm", "features": [ "tpm-1.2", "tpm-2.0", '
              '"cmdarg-key-fd", "cmdarg-pwd-fd", "nvram-backend-dir" ], '
              '"version": "0.7.1" }')
SETUP_CAPS = ('{ "type": "swtpm_setup", "features": [ "tpm-2.0", '
              '"cmdarg-pwdfile-fd" ], "version": "0.7.1" }')


class CapabilitiesTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        capabilities._cache.clear()
        self.addCleanup(capabilities._cache.clear)

    def fake_run(self, cmd, timeout):
        return {
            ('swtpm', '--version'):
                'TPM emulator version 0.7.1, Copyright (c) 2014-2021 IBM',
            ('swtpm', 'socket', '--print-capabilities'): SWTPM_CAPS,
            ('swtpm_setup', '--print-capabilities'): SETUP_CAPS,
            ('swtpm_setup', '--version'):
                'TPM emulator setup tool version 0.7.1',
        }.get(tuple(cmd))

    def test_probe(self):
        with mock.patch.object(capabilities, '_run', self.fake_run), \
                mock.patch.object(capabilities, 'libtpms_version',
                                  return_value='0.9.2'):
            facts = capabilities.probe()
        self.assertEqual('0.7.1', facts.swtpm_version)
        self.assertEqual('0.7.1', facts.swtpm_setup_version)
        self.assertEqual('0.9.2', facts.libtpms_version)
        self.assertTrue(facts.has('cmdarg-key-fd'))
        self.assertTrue(facts.has('cmdarg-pwdfile-fd'))
        self.assertIn('cmdarg-migration', facts.missing_features)
        self.assertNotIn('cmdarg-key-fd', facts.missing_features)

    def test_no_swtpm(self):
        with mock.patch.object(capabilities, '_run', return_value=None):
            self.assertRaises(exception.SwtpmNotAvailable,
                              capabilities.probe)

    def test_cache(self):
        with mock.patch.object(capabilities, 'probe') as probe:
            first = capabilities.host_facts()
            self.assertIs(first, capabilities.host_facts())
            self.assertEqual(1, probe.call_count)
            capabilities.host_facts(refresh=True)
            self.assertEqual(2, probe.call_count)

    def test_parsers(self):
        self.assertIsNone(capabilities.parse_version('nothing'))
        self.assertEqual(((), None), capabilities.parse_capabilities('{'))
        self.assertEqual(((), None), capabilities.parse_capabilities('[]'))
        self.assertEqual((('a',), '1'), capabilities.parse_capabilities(
            '{"features": ["a"], "version": "1"}'))


class FakeSocket(object):
    """Answers TPM commands from a script; records what was sent."""

    def __init__(self, responses):
        self.responses = list(responses)
        self.sent = []
        self.buffer = b''

    def sendall(self, data):
        self.sent.append(data)
        self.buffer += self.responses.pop(0)

    def recv(self, count):
        chunk, self.buffer = self.buffer[:count], self.buffer[count:]
        return chunk


def response(body=b'', rc=0, tag=protocol.ST_NO_SESSIONS):
    return struct.pack('>HII', tag, 10 + len(body), rc) + body


def nv_public(index, attributes, size):
    public = struct.pack('>IHIH', index, 0x000B, attributes, 0) + \
        struct.pack('>H', size)
    return struct.pack('>H', len(public)) + public + struct.pack('>H', 0)


def nv_data(data):
    params = struct.pack('>H', len(data)) + data
    return response(struct.pack('>I', len(params)) + params + b'\0' * 5,
                    tag=protocol.ST_SESSIONS)


class ProtocolTest(base.BaseTestCase):

    def tpm(self, responses):
        proc = protocol.SwtpmProcess('/s', '/w')
        proc.data = FakeSocket(responses)
        proc.ctrl = FakeSocket([])
        return proc

    def test_nv_read_in_chunks_with_the_index_as_auth(self):
        cert = bytes(range(256)) * 5
        proc = self.tpm([
            response(nv_public(0x01C00002, protocol.TPMA_NV_AUTHREAD |
                               protocol.TPMA_NV_OWNERREAD, len(cert))),
            nv_data(cert[:512]), nv_data(cert[512:1024]),
            nv_data(cert[1024:])])
        self.assertEqual(cert, proc.nv_read(0x01C00002, chunk=512))
        read = proc.data.sent[1]
        cc, auth_handle, index = struct.unpack('>III', read[6:18])
        self.assertEqual(protocol.CC_NV_READ, cc)
        self.assertEqual((0x01C00002, 0x01C00002), (auth_handle, index))
        self.assertEqual(struct.pack('>HH', 512, 512),
                         proc.data.sent[2][-4:])

    def test_nv_read_owner_auth(self):
        proc = self.tpm([
            response(nv_public(0x01C00002, protocol.TPMA_NV_OWNERREAD, 3)),
            nv_data(b'abc')])
        self.assertEqual(b'abc', proc.nv_read(0x01C00002, chunk=512))
        self.assertEqual(protocol.RH_OWNER,
                         struct.unpack('>I', proc.data.sent[1][10:14])[0])

    def test_get_handles_pages(self):
        def page(more, handles):
            return response(struct.pack('>BII', more, 1, len(handles)) +
                            b''.join(struct.pack('>I', h) for h in handles))
        proc = self.tpm([page(1, [0x01C00002, 0x01C00016]),
                         page(0, [0x01C08000])])
        self.assertEqual([0x01C00002, 0x01C00016, 0x01C08000],
                         proc.get_handles(protocol.HR_NV_INDEX))
        self.assertEqual(0x01C00017, struct.unpack(
            '>I', proc.data.sent[1][14:18])[0])

    def test_error_codes(self):
        proc = self.tpm([response(rc=0x18B)])
        exc = self.assertRaises(protocol.ProtocolError, proc.read_public,
                                0x81010001)
        self.assertEqual(0x18B, exc.rc)

    def test_startup_twice_is_fine(self):
        proc = self.tpm([response(rc=protocol.RC_INITIALIZE)])
        proc.startup()
        self.assertTrue(proc.started_tpm)

    def test_control_error_in_swtpm_ioctl_words(self):
        proc = self.tpm([])
        proc.ctrl = FakeSocket([struct.pack('>I', 0x101)])
        exc = self.assertRaises(protocol.ProtocolError, proc.init)
        self.assertEqual('TPM result from PTM_INIT: 0x101', exc.client_error)
        self.assertEqual(struct.pack('>II', protocol.CMD_INIT, 0),
                         proc.ctrl.sent[0])

    def test_closed_connection(self):
        proc = self.tpm([b''])
        self.assertRaises(protocol.ProtocolError, proc.startup)

    def test_unknown_transport(self):
        proc = protocol.SwtpmProcess('/s', '/w', transport='carrier-pigeon')
        self.assertRaises(ValueError, proc.start)

    def test_ek_template_is_the_tcg_rsa_template(self):
        # type RSA, nameAlg SHA256, attributes 0x000300b2, 32-byte policy,
        # AES-128-CFB, NULL scheme, 2048 bits, exponent 0, 256-byte unique.
        self.assertEqual(2 + 2 + 4 + 34 + 6 + 2 + 2 + 4 + 258,
                         len(protocol.EK_RSA_TEMPLATE))
        self.assertEqual(struct.pack('>HHI', 1, 0x000B, 0x000300B2),
                         protocol.EK_RSA_TEMPLATE[:8])


class ProcessHandlingTest(base.BaseTestCase):
    """A swtpm that hangs or cannot run: typed errors, no process left."""

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.sd = state.StateDir(self.tmp, 'instance')
        os.makedirs(self.sd.path)

    def test_hung_swtpm_is_killed_by_pid(self):
        hang = os.path.join(self.tmp, 'hanging-swtpm')
        with open(hang, 'w') as f:
            f.write('#!/bin/sh\nexec sleep 60\n')
        os.chmod(hang, 0o700)
        pids = []
        real_start = protocol.SwtpmProcess.start

        def start(proc):
            result = real_start(proc)
            pids.append(proc.proc.pid)
            return result

        started = time.monotonic()
        with mock.patch.object(protocol.SwtpmProcess, 'start', start):
            exc = self.assertRaises(exception.StateUnreadable,
                                    self.sd.read_identity, b's',
                                    timeout=0.3, swtpm=hang,
                                    tmp_dir=self.tmp)
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(exception.SWTPM_FAILED, exc.kind)
        self.assertIn('no answer to PTM_INIT', exc.client_error)
        self.assertRaises(ProcessLookupError, os.kill, pids[0], 0)

    def test_missing_binary(self):
        exc = self.assertRaises(exception.StateUnreadable,
                                self.sd.read_identity, b's',
                                swtpm=os.path.join(self.tmp, 'nope'),
                                tmp_dir=self.tmp)
        self.assertEqual(exception.SWTPM_FAILED, exc.kind)
        self.assertIn('cannot run', exc.client_error)

    def test_oversized_state_file(self):
        with open(os.path.join(self.sd.path, 'tpm2-00.permall'), 'wb') as f:
            f.truncate(state.MAX_STATE_FILE + 1)
        exc = self.assertRaises(exception.StateUnreadable, self.sd.inspect)
        self.assertEqual(exception.TRUNCATED_OR_CORRUPT, exc.kind)
