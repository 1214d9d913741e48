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

"""A host-mode vTPM server keeps its identity across a live migration."""

import time

from tempest.common import waiters
from tempest.lib import decorators

from nova_vtpm_tempest_plugin.tests import base

CONF = base.CONF


class VTPMLiveMigrationTest(base.NovaVTPMTestBase):

    features = ('agent', 'live_migration')
    min_microversion = '2.25'
    max_microversion = 'latest'

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        if CONF.compute.min_compute_nodes < 2:
            raise cls.skipException(
                'live migration needs [compute] min_compute_nodes >= 2')
        if not CONF.compute_feature_enabled.live_migration:
            raise cls.skipException(
                '[compute-feature-enabled] live_migration is False')

    def _live_migrate(self, server_id):
        source = self.get_host_for_server(server_id)
        self.admin_servers_client.live_migrate_server(
            server_id, host=None, block_migration='auto')
        deadline = time.time() + self.servers_client.build_timeout
        while self.get_host_for_server(server_id) == source:
            if time.time() > deadline:
                self.fail('server %s is still on %s' % (server_id, source))
            time.sleep(self.servers_client.build_interval)
        waiters.wait_for_server_status(self.servers_client, server_id,
                                       'ACTIVE')
        return source, self.get_host_for_server(server_id)

    @decorators.idempotent_id('4cd7081e-4ffe-43e3-95e9-82ccc9800f15')
    def test_host_mode_live_migration_keeps_identity(self):
        specs = {'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb',
                 'hw:tpm_secret_security': 'host'}
        attestation = CONF.nova_vtpm_feature_enabled.attestation
        state_guard = CONF.nova_vtpm_feature_enabled.state_guard
        if attestation:
            specs['keylime:attestation'] = 'required'
        server = self.boot(self.create_vtpm_flavor(**specs))
        host = self.get_host_for_server(server['id'])

        def ready(record):
            return (record['host'] == host and
                    (not state_guard or record.get(base.EK_FIELD)) and
                    (not attestation or
                     record.get(base.ATTESTATION_FIELD) == base.ATTESTED))
        before = self.wait_for_record(
            server['id'], ready, 'is ready on %s' % host,
            timeout=CONF.nova_vtpm.attestation_timeout)

        source, destination = self._live_migrate(server['id'])
        self.assertNotEqual(source, destination)

        def moved(record):
            return (record['host'] == destination and
                    (not attestation or
                     record.get(base.ATTESTATION_FIELD) == base.ATTESTED))
        after = self.wait_for_record(
            server['id'], moved, 'moved to %s' % destination,
            timeout=CONF.nova_vtpm.attestation_timeout)
        for key in ('vtpm_version', 'vtpm_model', 'secret_security'):
            self.assertEqual(before[key], after[key], key)
        if state_guard:
            # Same TPM, not a fresh one with a new endorsement key.
            self.assertEqual(before[base.EK_FIELD], after[base.EK_FIELD])
