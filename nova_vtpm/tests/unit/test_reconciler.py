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

"""Reconciler paging and request resolution; Glance fallback."""

import os
from unittest import mock

import fixtures
from keystoneauth1 import adapter
from keystoneauth1 import session as ks_session
from oslo_config import cfg
from oslotest import base
import requests_mock

from nova_vtpm.agent import reconciler as reconciler_mod
from nova_vtpm.agent import request as request_mod
from nova_vtpm.clients import openstack
from nova_vtpm import conf as nova_vtpm_conf
from nova_vtpm.hooks import inventory
from nova_vtpm.hooks import manager as manager_mod
from nova_vtpm import journal as journal_mod
from stevedore import extension
from stevedore import named


class FakeServer:
    def __init__(self, n, vtpm=True, image_id='img1'):
        self.id = '00000000-0000-0000-0000-%012d' % n
        self._info = {
            'id': self.id, 'OS-EXT-SRV-ATTR:host': 'compute1',
            'OS-EXT-STS:vm_state': 'active', 'OS-EXT-STS:task_state': None,
            'tenant_id': 'p1', 'status': 'ACTIVE',
            'flavor': {'original_name': 'f', 'extra_specs': (
                {'hw:tpm_version': '2.0'} if vtpm else {})},
            'image': {'id': image_id} if image_id else ''}

    def to_dict(self):
        return self._info


class ReconcilerTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        tmp = self.useFixture(fixtures.TempDir()).path
        self.conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(self.conf)
        self.conf([], default_config_files=[])
        self.conf.set_override('page_size', 3, 'nova_vtpm_nova')
        self.journal = journal_mod.Journal(
            'sqlite:///' + os.path.join(tmp, 'j.sqlite'))
        self.journal.upgrade()
        context = manager_mod.HookContext(self.conf, self.journal, 'h',
                                          'controller')
        hook = inventory.InventoryHook(context)
        mgr = named.NamedExtensionManager.make_test_instance(
            [extension.Extension('inventory', None, None, hook)])
        self.manager = manager_mod.HookManager(context, None,
                                               extension_manager=mgr)
        self.servers = [FakeServer(n, vtpm=n % 2 == 0) for n in range(7)]
        self.calls = []

        def list_(detailed, search_opts, limit, marker):
            self.calls.append(marker)
            ids = [s.id for s in self.servers]
            start = ids.index(marker) + 1 if marker else 0
            return self.servers[start:start + limit]

        self.clients = mock.Mock(configured=False)
        self.clients.nova.return_value.servers.list.side_effect = list_
        self.resolver = request_mod.RequestResolver(self.conf, self.journal)
        self.reconciler = reconciler_mod.Reconciler(
            self.conf, self.journal, self.manager, self.clients,
            self.resolver)

    def test_pages_through_all_servers(self):
        servers = self.reconciler.list_servers()
        self.assertEqual(7, len(servers))
        self.assertEqual([None, self.servers[2].id, self.servers[5].id],
                         self.calls)
        self.assertEqual({'hw:tpm_version': '2.0'}, servers[0].flavor_specs)
        self.assertEqual('img1', servers[0].image_uuid)

    def test_run_fills_the_inventory(self):
        report = self.reconciler.run()
        self.assertEqual(7, report['servers'])
        self.assertEqual(4, report['vtpm_servers'])
        self.assertEqual({'added': 4, 'updated': 0, 'removed': 0},
                         report['hooks']['inventory'])
        self.assertEqual(4, len(self.journal.list_instances()))

    def test_request_spec_image_props_are_used(self):
        self.servers = [FakeServer(1, vtpm=False)]
        self.journal.save_request_spec(self.servers[0].id, 'f', {}, 'img1',
                                       'i', {'hw_tpm_version': '2.0'})
        report = self.reconciler.run()
        self.assertEqual(1, report['vtpm_servers'])

    def test_unresolved_servers_are_not_removed(self):
        self.reconciler.run()
        self.assertEqual(4, len(self.journal.list_instances()))
        self.clients.configured = True
        self.resolver.clients = self.clients
        self.clients.image_properties.side_effect = (
            openstack.ServiceUnavailable(service='Glance', reason='down',
                                         group='g'))
        report = self.reconciler.run()
        self.assertEqual(7, report['hooks']['inventory']['unresolved'])
        self.assertEqual(0, report['hooks']['inventory']['removed'])
        self.assertEqual(4, len(self.journal.list_instances()))

    def test_compute_role_only_reconciles_its_host(self):
        self.conf.set_override('role', 'compute', 'nova_vtpm_agent')
        self.conf.set_override('host', 'compute2', 'nova_vtpm_agent')
        self.assertEqual(0, self.reconciler.run()['servers'])


class GlanceFallbackTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(self.conf)
        self.conf([], default_config_files=[])
        self.clients = openstack.Clients(self.conf)
        self.clients._glance = adapter.Adapter(
            ks_session.Session(), endpoint_override='http://glance.test')
        self.conf.set_override('auth_type', 'password', 'nova_vtpm_service')

    def test_image_properties(self):
        with requests_mock.Mocker() as m:
            m.get('http://glance.test/v2/images/i1', json={
                'id': 'i1', 'name': 'win', 'status': 'active',
                'hw_tpm_version': '2.0', 'keylime_attestation': 'required',
                'min_ram': 0, 'tags': []})
            m.get('http://glance.test/v2/images/gone', status_code=404)
            m.get('http://glance.test/v2/images/err', status_code=503)
            name, props = self.clients.image_properties('i1')
            self.assertEqual('win', name)
            self.assertEqual({'hw_tpm_version': '2.0',
                              'keylime_attestation': 'required'}, props)
            self.assertEqual((None, {}),
                             self.clients.image_properties('gone'))
            e = self.assertRaises(openstack.ServiceUnavailable,
                                  self.clients.image_properties, 'err')
            self.assertIn('HTTP 503', str(e))

    def test_resolver_merges_and_caches(self):
        journal = mock.Mock()
        journal.get_request_spec.return_value = {
            'image_props': {'hw_tpm_model': 'tpm-crb'}, 'image_name': 'i'}
        resolver = request_mod.RequestResolver(self.conf, journal,
                                               self.clients)
        with requests_mock.Mocker() as m:
            m.get('http://glance.test/v2/images/i1', json={
                'id': 'i1', 'name': 'img', 'hw_tpm_model': 'tpm-tis',
                'keylime_attestation': 'required'})
            for _ in range(3):
                name, props, complete = resolver.image_properties('u', 'i1')
            self.assertEqual(1, m.call_count)
        self.assertTrue(complete)
        # Nova's view (the RequestSpec) wins over Glance for what it has.
        self.assertEqual({'hw_tpm_model': 'tpm-crb',
                          'keylime_attestation': 'required'}, props)
        self.assertEqual('i', name)

    def test_glance_down_is_incomplete_and_not_retried_at_once(self):
        journal = mock.Mock()
        journal.get_request_spec.return_value = None
        resolver = request_mod.RequestResolver(self.conf, journal,
                                               self.clients)
        with requests_mock.Mocker() as m:
            m.get('http://glance.test/v2/images/i1', status_code=503)
            for _ in range(3):
                name, props, complete = resolver.image_properties('u', 'i1')
            self.assertEqual(1, m.call_count)
        self.assertFalse(complete)
        self.assertEqual({}, props)

    def test_not_configured(self):
        self.conf.clear_override('auth_type', 'nova_vtpm_service')
        clients = openstack.Clients(self.conf)
        self.assertFalse(clients.configured)
        self.assertRaises(openstack.NotConfigured, clients.session)
