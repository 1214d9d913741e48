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

"""Where a vTPM secret comes from.

``virsh`` is a small script that answers like libvirt 9.0's virsh; Barbican
is requests-mock behind a real keystoneauth session and adapter. The real
libvirt and the real Barbican are in the functional tests.
"""

import base64
import os
import sys
from urllib import parse

import fixtures
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
from oslo_config import cfg
from oslotest import base
import requests
from requests_mock.contrib import fixture as rm_fixture

from nova_vtpm import conf as nova_vtpm_conf
from nova_vtpm import secrets

UUID = '5b0f3c2e-8d9a-4e1f-a2b3-c4d5e6f70812'
SECRET_UUID = '9c7b6a5d-4e3f-4a1b-8c2d-e3f4a5b6c7d8'
# What Nova stores: base64 of random bytes (ASCII).
PASSPHRASE = base64.b64encode(b'\x01\x02' * 192)
BARBICAN = 'http://barbican.test:9311'

_FAKE_VIRSH = '''#!%(python)s
import base64, json, sys
with open(%(data)r) as f:
    data = json.load(f)
args = sys.argv[1:]
while args and args[0].startswith('-'):
    args = args[2:] if args[0] == '-c' else args[1:]
cmd = args[0]
if data.get('down'):
    sys.stderr.write('error: failed to connect to the hypervisor\\n')
    sys.exit(1)
if cmd == 'secret-list':
    for uuid, usage in data['secrets']:
        print(' %%s   %%s' %% (uuid, usage))
elif cmd == 'secret-get-value':
    value = data['values'].get(args[1])
    if value is None:
        sys.stderr.write("error: failed to get secret '%%s'\\n" %% args[1])
        sys.exit(1)
    print(base64.b64encode(value.encode()).decode())
elif cmd == 'secret-undefine':
    print('Secret %%s deleted' %% args[1])
elif cmd == 'domstate':
    if args[1] in data.get('domains', []):
        print('running')
    else:
        sys.stderr.write("error: failed to get domain '%%s'\\n" %% args[1])
        sys.exit(1)
'''


class FakeVirsh(fixtures.Fixture):

    def __init__(self, secrets_=(), values=None, domains=(), down=False):
        self.data = {'secrets': list(secrets_), 'values': values or {},
                     'domains': list(domains), 'down': down}

    def _setUp(self):
        import json
        tmp = self.useFixture(fixtures.TempDir()).path
        data = os.path.join(tmp, 'data.json')
        with open(data, 'w') as f:
            json.dump(self.data, f)
        self.path = os.path.join(tmp, 'virsh')
        with open(self.path, 'w') as f:
            f.write(_FAKE_VIRSH % {'python': sys.executable, 'data': data})
        os.chmod(self.path, 0o755)


class VirshTest(base.BaseTestCase):

    def virsh(self, **kwargs):
        fake = self.useFixture(FakeVirsh(**kwargs))
        return secrets.Virsh('qemu:///system', binary=fake.path)

    def test_secret_list_and_value(self):
        virsh = self.virsh(
            secrets_=[(SECRET_UUID, 'vtpm ' + UUID),
                      ('11111111-2222-3333-4444-555555555555',
                       'ceph client.nova secret'),
                      ('66666666-7777-8888-9999-000000000000',
                       'vtpm other')],
            values={SECRET_UUID: PASSPHRASE.decode()})
        self.assertEqual(
            [(SECRET_UUID, UUID),
             ('66666666-7777-8888-9999-000000000000', 'other')],
            virsh.vtpm_secrets())
        self.assertEqual([SECRET_UUID], virsh.instance_secrets(UUID))
        self.assertEqual(PASSPHRASE, virsh.secret_value(SECRET_UUID))

    def test_domain_defined(self):
        virsh = self.virsh(domains=[UUID])
        self.assertTrue(virsh.domain_defined(UUID))
        self.assertFalse(virsh.domain_defined(SECRET_UUID))

    def test_connection_errors(self):
        virsh = self.virsh(down=True)
        exc = self.assertRaises(secrets.VirshError, virsh.vtpm_secrets)
        self.assertTrue(exc.connection)
        self.assertRaises(secrets.VirshError, virsh.domain_defined, UUID)
        missing = secrets.Virsh('qemu:///system',
                                binary='/nonexistent/virsh')
        self.assertTrue(self.assertRaises(
            secrets.VirshError, missing.vtpm_secrets).connection)


class SecretSourceTestBase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(self.conf)
        self.conf([], default_config_files=[])
        self.log = self.useFixture(fixtures.FakeLogger(level='DEBUG'))

    def tearDown(self):
        # Never logged, whatever happened.
        self.assertNotIn(PASSPHRASE.decode(), self.log.output)
        super().tearDown()


class HostModeTest(SecretSourceTestBase):

    def source(self, **kwargs):
        fake = self.useFixture(FakeVirsh(**kwargs))
        return secrets.SecretSource(
            self.conf, virsh=secrets.Virsh('qemu:///system',
                                           binary=fake.path))

    def test_the_libvirt_secret_named_by_the_instance_uuid(self):
        source = self.source(secrets_=[(SECRET_UUID, 'vtpm ' + UUID)],
                             values={SECRET_UUID: PASSPHRASE.decode()})
        self.assertEqual(PASSPHRASE, source.get(UUID, 'host'))

    def test_no_secret_on_this_host(self):
        source = self.source(secrets_=[(SECRET_UUID, 'vtpm other')])
        exc = self.assertRaises(secrets.SecretUnavailable, source.get, UUID,
                                'host')
        self.assertEqual('host', exc.mode)
        self.assertIn('no libvirt secret of usage type vtpm named %s'
                      % UUID, str(exc))

    def test_value_not_readable(self):
        source = self.source(secrets_=[(SECRET_UUID, 'vtpm ' + UUID)])
        exc = self.assertRaises(secrets.SecretUnavailable, source.get, UUID,
                                'host')
        self.assertIn('failed to get secret', str(exc))

    def test_libvirt_down(self):
        source = self.source(down=True)
        exc = self.assertRaises(secrets.SecretServiceUnavailable,
                                source.get, UUID, 'host')
        self.assertIn('libvirt is unavailable', str(exc))


class UserModeTest(SecretSourceTestBase):

    def test_user_mode_is_typed_and_calls_nothing(self):
        source = secrets.SecretSource(self.conf, clients=None,
                                      virsh=object())
        for mode in ('user', None):
            exc = self.assertRaises(secrets.SecretUnavailable, source.get,
                                    UUID, mode)
            self.assertEqual('user', exc.mode)
            self.assertIn('only the owner', str(exc))


class FakeClients:
    configured = True

    def __init__(self):
        self._session = ks_session.Session(
            auth=token_endpoint.Token(BARBICAN, 'a-token'))

    def session(self):
        return self._session


class DeploymentModeTest(SecretSourceTestBase):

    def setUp(self):
        super().setUp()
        self.conf.set_override('endpoint_override', BARBICAN,
                               'nova_vtpm_barbican')
        self.rm = self.useFixture(rm_fixture.Fixture())
        self.source = secrets.SecretSource(self.conf, clients=FakeClients(),
                                           virsh=object())
        self.name = secrets.barbican_secret_name(UUID)

    def listing(self, *secrets_, status=200):
        self.rm.get(BARBICAN + '/v1/secrets', status_code=status, json={
            'secrets': list(secrets_), 'total': len(secrets_)})

    def entry(self, uuid, created, name=None, status='ACTIVE'):
        return {'secret_ref': '%s/v1/secrets/%s' % (BARBICAN, uuid),
                'name': name or self.name, 'created': created,
                'status': status}

    def test_newest_active_secret_by_nova_name(self):
        self.assertEqual('vTPM secret for instance %s' % UUID, self.name)
        self.listing(self.entry('old', '2026-01-01T00:00:00'),
                     self.entry(SECRET_UUID, '2026-02-01T00:00:00'),
                     self.entry('pending', '2026-03-01T00:00:00',
                                status='PENDING'),
                     self.entry('other', '2026-04-01T00:00:00',
                                name='vTPM secret for instance x'))
        # Stored as text, it would come back as text/plain: keystoneauth
        # logs such bodies unless told not to.
        self.rm.get(BARBICAN + '/v1/secrets/%s/payload' % SECRET_UUID,
                    content=PASSPHRASE,
                    headers={'Content-Type': 'text/plain'})
        self.assertEqual(PASSPHRASE, self.source.get(UUID, 'deployment'))
        listing, payload = self.rm.request_history
        self.assertEqual([self.name], parse.parse_qs(
            parse.urlparse(listing.url).query)['name'])
        self.assertEqual('a-token', payload.headers['X-Auth-Token'])
        self.assertEqual('application/octet-stream',
                         payload.headers['Accept'])
        self.assertIn('using the newest', self.log.output)

    def test_not_found(self):
        self.listing()
        exc = self.assertRaises(secrets.SecretUnavailable, self.source.get,
                                UUID, 'deployment')
        self.assertEqual('deployment', exc.mode)
        self.assertIn(self.name, str(exc))

    def test_forbidden(self):
        self.listing(status=403)
        exc = self.assertRaises(secrets.SecretUnavailable, self.source.get,
                                UUID, 'deployment')
        self.assertIn('refuses the nova-vtpm service user', str(exc))

    def test_payload_forbidden(self):
        self.listing(self.entry(SECRET_UUID, '2026-02-01T00:00:00'))
        self.rm.get(BARBICAN + '/v1/secrets/%s/payload' % SECRET_UUID,
                    status_code=403)
        self.assertRaises(secrets.SecretUnavailable, self.source.get, UUID,
                          'deployment')

    def test_barbican_down(self):
        self.listing(status=503)
        self.assertRaises(secrets.SecretServiceUnavailable, self.source.get,
                          UUID, 'deployment')
        self.rm.get(BARBICAN + '/v1/secrets',
                    exc=requests.exceptions.ConnectionError)
        self.assertRaises(secrets.SecretServiceUnavailable, self.source.get,
                          UUID, 'deployment')

    def test_no_credentials(self):
        clients = FakeClients()
        clients.configured = False
        source = secrets.SecretSource(self.conf, clients=clients,
                                      virsh=object())
        exc = self.assertRaises(secrets.SecretUnavailable, source.get, UUID,
                                'deployment')
        self.assertIn('[nova_vtpm_service]', str(exc))
