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

"""``nova-vtpm ca export`` on a swtpm-localca made of throw-away CAs."""

import io
import json
import os
import stat

from cryptography.hazmat.primitives import serialization
from cryptography import x509
import fixtures
from oslo_config import cfg
from oslotest import base

from nova_vtpm.cmd import ca
from nova_vtpm.cmd import cli
from nova_vtpm import conf as nova_vtpm_conf
from nova_vtpm.keylime import trust
from nova_vtpm.tests.unit import test_keylime_ek as ek_helpers

SIGNKEY = b'-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n'


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


class CAExportTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.statedir = os.path.join(self.tmp, 'var', 'lib', 'swtpm-localca')
        os.makedirs(self.statedir)
        self.localca_conf = os.path.join(self.tmp, 'swtpm-localca.conf')
        with open(self.localca_conf, 'w') as f:
            f.write('# swtpm_setup wrote this\n'
                    'statedir = %(d)s\nsigningkey = %(d)s/signkey.pem\n'
                    'issuercert = %(d)s/issuercert.pem\n'
                    'certserial = %(d)s/certserial\n' % {'d': self.statedir})
        self.host_ca = ek_helpers.HostCA()

    def install(self, host_ca=None):
        host_ca = host_ca or self.host_ca
        files = {'swtpm-localca-rootca-cert.pem': pem(host_ca.root),
                 'issuercert.pem': pem(host_ca.intermediate),
                 'signkey.pem': SIGNKEY,
                 'swtpm-localca-rootca-privkey.pem': SIGNKEY}
        for name, data in files.items():
            with open(os.path.join(self.statedir, name), 'wb') as f:
                f.write(data)

    def run_cli(self, *args):
        parser = cli.build_parser()
        parsed = parser.parse_args(['--config-file', os.devnull, 'ca',
                                    'export', '--localca-conf',
                                    self.localca_conf] + list(args))
        conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(conf)
        cli.load_config(parsed, conf)
        conf.set_override('host', 'compute-7', 'nova_vtpm_agent')
        out = io.StringIO()
        err = io.StringIO()
        self.useFixture(fixtures.MonkeyPatch('sys.stdout', out))
        self.useFixture(fixtures.MonkeyPatch('sys.stderr', err))
        rc = parsed.func(parsed, conf)
        return rc, out.getvalue(), err.getvalue()

    def test_prints_pem_certificates_only(self):
        self.install()
        rc, out, err = self.run_cli()
        self.assertEqual(0, rc, err)
        self.assertNotIn('PRIVATE KEY', out)
        certs = x509.load_pem_x509_certificates(out.encode())
        self.assertEqual([self.host_ca.root, self.host_ca.intermediate],
                         certs)
        self.assertIn('# compute-7-root.pem: CN=swtpm-localca-rootca', out)
        self.assertIn('# compute-7-issuer.pem: CN=swtpm-localca', out)

    def test_writes_files_named_by_host(self):
        self.install()
        trust_dir = os.path.join(self.tmp, 'trust')
        rc, out, err = self.run_cli('--output-dir', trust_dir, '--host',
                                    'cmp/1')
        self.assertEqual(0, rc, err)
        self.assertEqual(['cmp_1-issuer.pem', 'cmp_1-root.pem'],
                         sorted(os.listdir(trust_dir)))
        mode = stat.S_IMODE(os.stat(os.path.join(
            trust_dir, 'cmp_1-root.pem')).st_mode)
        self.assertEqual(0o644, mode)
        self.assertIn('cmp_1-root.pem', out)
        # Several hosts in one directory: a store the hook can use.
        other = ek_helpers.HostCA()
        self.install(other)
        rc, _, err = self.run_cli('--output-dir', trust_dir, '--host',
                                  'cmp2')
        self.assertEqual(0, rc, err)
        store = trust.TrustStore(trust_dir)
        self.assertEqual(([], 2, 2), (store.errors, len(store.roots),
                                      len(store.intermediates)))

    def test_json(self):
        self.install()
        rc, out, err = self.run_cli('--format', 'json')
        self.assertEqual(0, rc, err)
        data = json.loads(out)
        self.assertEqual('compute-7', data['host'])
        self.assertFalse(data['created'])
        self.assertEqual(['compute-7-root.pem', 'compute-7-issuer.pem'],
                         [c['file'] for c in data['certificates']])
        self.assertEqual(self.host_ca.root.fingerprint(
            ek_helpers.hashes.SHA256()).hex(),
            data['certificates'][0]['sha256'])
        self.assertNotIn('PRIVATE', out)

    def test_no_ca_yet(self):
        rc, out, err = self.run_cli()
        self.assertEqual(1, rc)
        self.assertIn('has no swtpm-localca yet', err)
        self.assertIn('--create', err)

    def test_missing_conf(self):
        self.localca_conf = os.path.join(self.tmp, 'nope.conf')
        rc, out, err = self.run_cli()
        self.assertEqual(1, rc)
        self.assertIn('is swtpm (swtpm-tools) installed', err)

    def test_private_key_in_place_of_a_certificate(self):
        self.install()
        with open(os.path.join(self.statedir, 'issuercert.pem'), 'wb') as f:
            f.write(SIGNKEY)
        rc, out, err = self.run_cli()
        self.assertEqual(1, rc)
        self.assertIn('holds a private key', err)
        self.assertNotIn('c2VjcmV0', out + err)

    def test_issuer_of_another_root(self):
        self.install()
        with open(os.path.join(self.statedir, 'issuercert.pem'), 'wb') as f:
            f.write(pem(ek_helpers.HostCA().intermediate))
        rc, out, err = self.run_cli()
        self.assertEqual(1, rc)
        self.assertIn('is not signed by', err)

    def test_create(self):
        # A stand-in swtpm_localca: writes the CA as the real one would.
        bindir = os.path.join(self.tmp, 'bin')
        os.makedirs(bindir)
        src = os.path.join(self.tmp, 'src')
        os.makedirs(src)
        with open(os.path.join(src, 'root.pem'), 'wb') as f:
            f.write(pem(self.host_ca.root))
        with open(os.path.join(src, 'issuer.pem'), 'wb') as f:
            f.write(pem(self.host_ca.intermediate))
        log = os.path.join(self.tmp, 'args')
        script = os.path.join(bindir, 'swtpm_localca')
        with open(script, 'w') as f:
            f.write('#!/bin/sh\necho "$@" > %s\n'
                    'cp %s/root.pem %s/swtpm-localca-rootca-cert.pem\n'
                    'cp %s/issuer.pem %s/issuercert.pem\n'
                    % (log, src, self.statedir, src, self.statedir))
        os.chmod(script, 0o755)
        with open(os.path.join(self.tmp, 'swtpm-localca.options'), 'w') as f:
            f.write('--platform-manufacturer Linux\n')
        self.useFixture(fixtures.EnvironmentVariable(
            'PATH', bindir + os.pathsep + os.environ.get('PATH', '')))
        rc, out, err = self.run_cli('--create', '--format', 'json')
        self.assertEqual(0, rc, err)
        self.assertTrue(json.loads(out)['created'])
        with open(log) as f:
            args = f.read().split()
        self.assertIn('--tpm2', args)
        self.assertEqual(self.localca_conf,
                         args[args.index('--configfile') + 1])
        self.assertIn('--optsfile', args)
        # Existing: not created again.
        rc, out, err = self.run_cli('--create', '--format', 'json')
        self.assertFalse(json.loads(out)['created'])

    def test_parse_localca_conf(self):
        self.assertEqual({'statedir': self.statedir,
                          'signingkey': self.statedir + '/signkey.pem',
                          'issuercert': self.statedir + '/issuercert.pem',
                          'certserial': self.statedir + '/certserial'},
                         ca.parse_localca_conf(self.localca_conf))
