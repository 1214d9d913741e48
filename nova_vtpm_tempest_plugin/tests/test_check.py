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

"""``nova-vtpm check`` says beforehand what Nova does with a pair."""

from tempest.lib import decorators

from nova_vtpm_tempest_plugin.tests import base

CONF = base.CONF


class VTPMCheckTest(base.NovaVTPMTestBase):
    """The offline check and Nova agree, on both sides of the line."""

    features = ('cli',)

    @decorators.idempotent_id('d97326f4-566e-4ce3-9a12-f12050d1fd51')
    def test_conflicting_flavor_and_image(self):
        flavor_specs = {'hw:tpm_version': '2.0'}
        image_props = {'hw_tpm_version': '1.2'}

        result = self.check(flavor_specs, image_props)
        self.assertEqual(1, result.returncode, str(result))
        report = result.json()
        self.assertEqual(1, len(report['errors']), report)
        self.assertIn('conflicting with image', report['errors'][0])

        # Nova accepts the request and fails it at scheduling.
        flavor = self.create_vtpm_flavor(**flavor_specs)
        image = self.create_image_with_properties(**image_props)
        server = self.boot(flavor, image_id=image['id'], wait_until=None)
        server = self.wait_for_error(server['id'])
        self.assertEqual('ERROR', server['status'])

    @decorators.idempotent_id('6c02d234-326d-4151-8daa-cefcb8348d76')
    def test_valid_pair_boots_with_the_vtpm_check_predicts(self):
        flavor_specs = {'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb',
                        'hw:tpm_secret_security': 'host'}

        result = self.check(flavor_specs, {})
        self.assertEqual(0, result.returncode, str(result))
        report = result.json()
        self.assertEqual([], report['errors'])
        self.assertEqual({'version': '2.0', 'model': 'tpm-crb',
                          'secret_security': 'host'}, report['vtpm'])

        server = self.boot(self.create_vtpm_flavor(**flavor_specs))
        self.assertEqual('ACTIVE', server['status'])
