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

"""A vTPM server's life as nova-vtpm records it: boot, attestation, delete."""

from tempest.common import waiters
from tempest.lib import decorators

from nova_vtpm_tempest_plugin.tests import base

CONF = base.CONF

VTPM_SPECS = {'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb'}


class VTPMServerLifecycleTest(base.NovaVTPMTestBase):
    """The controller agent's journal follows Nova."""

    features = ('agent',)

    def _boot_recorded(self, **extra_specs):
        specs = dict(VTPM_SPECS, **extra_specs)
        server = self.boot(self.create_vtpm_flavor(**specs))
        host = self.get_host_for_server(server['id'])
        record = self.wait_for_record(
            server['id'],
            lambda r: (r['host'] == host and r['vm_state'] == 'active' and
                       r['deleted_at'] is None),
            'is active on %s' % host)
        return server, record

    def _delete(self, server):
        self.servers_client.delete_server(server['id'])
        waiters.wait_for_server_termination(self.servers_client,
                                            server['id'])

    @decorators.idempotent_id('23b29b6a-d8ea-40b9-9005-ab4425d43ade')
    def test_boot_is_recorded(self):
        server, record = self._boot_recorded()
        self.assertEqual('2.0', record['vtpm_version'])
        self.assertEqual('tpm-crb', record['vtpm_model'])
        self.assertEqual('user', record['secret_security'])

    @decorators.idempotent_id('cb96e9d2-2517-4943-be86-56247db1418b')
    def test_delete_is_recorded(self):
        server, _ = self._boot_recorded()
        self._delete(server)
        self.wait_for_record(server['id'],
                             lambda r: r['deleted_at'] is not None,
                             'is deleted')

    @decorators.idempotent_id('fc876eb2-76f5-492d-9466-0f790d0a6926')
    @base.requires('attestation')
    def test_attested_then_unenrolled(self):
        server, record = self._boot_recorded(
            **{'keylime:attestation': 'required'})
        self.assertEqual('required', record['attestation_mode'])
        self.wait_for_record(
            server['id'],
            lambda r: r.get(base.ATTESTATION_FIELD) == base.ATTESTED,
            'is enrolled and attested',
            timeout=CONF.nova_vtpm.attestation_timeout)
        self._delete(server)
        self.wait_for_record(
            server['id'],
            lambda r: (r['deleted_at'] is not None and
                       r.get(base.ATTESTATION_FIELD) == base.UNENROLLED),
            'is deleted and unenrolled from Keylime')
