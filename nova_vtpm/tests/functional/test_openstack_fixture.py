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

"""The private Keystone + Barbican fixture works, and leaves nothing.

It also pins who can read a vTPM secret that Nova stored, under the
default policies of Keystone 30.0.0 and Barbican 23.0.0.
"""

import base64
import os
import uuid

from oslotest import base
from testtools import content

from nova_vtpm.tests.functional import openstack_fixture


def store_vtpm_secret(session, barbican_url, instance_uuid):
    """Store a vTPM passphrase as Nova does (``nova.crypto``, castellan).

    Nova: ``Passphrase(base64(os.urandom(384)))`` named ``vTPM secret for
    instance <uuid>``; castellan's Barbican key manager sends the encoded
    key base64-encoded as an ``application/octet-stream`` passphrase.
    Returns (secret ref, passphrase).  ``log=False``: keystoneauth would
    log the request body, the payload included, at DEBUG.
    """
    passphrase = base64.b64encode(os.urandom(384))
    resp = session.post(barbican_url + '/v1/secrets/', log=False, json={
        'name': 'vTPM secret for instance %s' % instance_uuid,
        'secret_type': 'passphrase',
        'payload': base64.b64encode(passphrase).decode(),
        'payload_content_type': 'application/octet-stream',
        'payload_content_encoding': 'base64',
    }, raise_exc=False)
    assert resp.status_code == 201, resp.text
    return resp.json()['secret_ref'], passphrase


class KeystoneBarbicanTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.os = openstack_fixture.KeystoneBarbican()
        self.addCleanup(self._check_left_nothing)
        self.os.setUp()
        self.addCleanup(self.os.cleanUp)
        self.addCleanup(self._add_timings)

    def _add_timings(self):
        o = self.os
        self.addDetail('keystone-barbican-timings', content.text_content(
            'venv install %s; state init %s; bring-up %s (from cache: %s); '
            'keystone ready after %.2f' % (
                o.install_time and '%.1f' % o.install_time,
                o.init_time and '%.1f' % o.init_time,
                ', '.join('%.2f' % t for t in o.start_times), o.from_cache,
                o.keystone_ready_time)))

    def _check_left_nothing(self):
        self.assertEqual([], self.os.alive_pids())
        if getattr(self.os, 'base', None):
            self.assertTrue(self.os.all_pids)
            self.assertFalse(os.path.exists(self.os.base))

    def _status(self, session, path, **headers):
        return session.get(self.os.barbican_url + path, headers=headers,
                           raise_exc=False, log=False).status_code

    def test_who_reads_a_vtpm_secret(self):
        ks = self.os
        # The copied state has this run's ports in its service catalog.
        admin_session = ks.admin_session()
        self.assertEqual(ks.keystone_url, admin_session.get_endpoint(
            service_type='identity', interface='public'))
        self.assertEqual(ks.barbican_url, admin_session.get_endpoint(
            service_type='key-manager', interface='public'))

        owner = ks.create_user(roles=('member',))
        instance_uuid = str(uuid.uuid4())
        owner_session = ks.make_session(
            owner['name'], owner['password'], owner['project_name'])
        ref, passphrase = store_vtpm_secret(
            owner_session, ks.barbican_url, instance_uuid)
        secret_path = '/v1/secrets/%s' % ref.rsplit('/', 1)[1]
        self.assertEqual(ks.barbican_url + secret_path, ref)

        meta = owner_session.get(ref).json()
        self.assertEqual('vTPM secret for instance %s' % instance_uuid,
                         meta['name'])
        self.assertEqual('passphrase', meta['secret_type'])
        payload = owner_session.get(
            ref + '/payload', headers={'Accept': 'application/octet-stream'},
            log=False)
        self.assertEqual(passphrase, payload.content)

        octet = {'Accept': 'application/octet-stream'}
        # Same project, member: reads it (the secret is not private).
        peer = ks.create_user(project=owner['project_id'], roles=('member',))
        peer_session = ks.make_session(peer)
        self.assertEqual(200, self._status(peer_session, secret_path))
        self.assertEqual(200, self._status(
            peer_session, secret_path + '/payload', **octet))
        # The service role alone, even on the secret's project: nothing.
        service = ks.create_user(project=owner['project_id'],
                                 roles=('service',))
        service_session = ks.make_session(service)
        self.assertEqual(403, self._status(
            service_session, secret_path + '/payload', **octet))
        # An admin of another project: the metadata, not the payload.
        admin = ks.create_user(roles=('admin',))
        other_admin = ks.make_session(admin)
        self.assertEqual(200, self._status(other_admin, secret_path))
        self.assertEqual(403, self._status(
            other_admin, secret_path + '/payload', **octet))

        # The owner deletes it.
        self.assertEqual(204, owner_session.delete(ref).status_code)
        self.assertEqual(404, self._status(owner_session, secret_path))
