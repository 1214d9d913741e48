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

"""nova-vtpm's ``keylime:`` extra spec validators in a real nova-api.

Nova loads extra spec validators through the ``nova.api.extra_spec_validators``
entry point namespace, where nova-vtpm registers ``keylime``. From
microversion 2.86 the flavor extra specs API validates every spec against
that registry, so these tests drive the real API (in process, as Nova's own
functional tests do) and check both that the ``keylime:`` keys are validated
and that Nova's ``hw:tpm_*`` validation is untouched.
"""

from nova.api.validation.extra_specs import hw as nova_hw_validators
from nova.api.validation.extra_specs import validators as nova_validators

from nova_vtpm.api import extra_specs as vtpm_extra_specs
from nova_vtpm.tests.functional import base
from nova_vtpm import tpm

NOT_VALID_SPEC = 'does not appear to be a valid extra spec'


class ExtraSpecsTestMixin(object):

    def setUp(self):
        super().setUp()
        self.flavor_id = self._create_flavor(name='vtpm')

    def _url(self, spec_id=None):
        url = '/flavors/%s/os-extra_specs' % self.flavor_id
        if spec_id is not None:
            url += '/' + spec_id
        return url

    def _post_specs(self, specs, status):
        return self.admin_api.api_post(
            self._url(), {'extra_specs': specs},
            check_response_status=[status])

    def _put_spec(self, key, value, status):
        return self.admin_api.api_put(
            self._url(key), {key: value}, check_response_status=[status])

    def _get_specs(self):
        return self.admin_api.api_get(self._url()).body['extra_specs']

    def _assert_rejected(self, specs, *expected):
        """POST specs, expect a 400 whose message holds every expected text.

        :returns: the error message.
        """
        resp = self._post_specs(specs, 400)
        message = resp.body['badRequest']['message']
        for text in expected:
            self.assertIn(text, message)
        # ...and nothing of the request was stored.
        self.assertEqual({}, self._get_specs())
        return message


class KeylimeExtraSpecsTest(ExtraSpecsTestMixin,
                            base.NovaVTPMFunctionalTestCase):
    ADMIN_API = True
    microversion = '2.86'

    # keylime:attestation

    def test_attestation_modes_accepted(self):
        for mode in ('required', 'optional', 'disabled'):
            resp = self._post_specs({'keylime:attestation': mode}, 200)
            self.assertEqual({'keylime:attestation': mode},
                             resp.body['extra_specs'])
            self.assertEqual({'keylime:attestation': mode},
                             self._get_specs())

    def test_attestation_bogus_rejected(self):
        message = self._assert_rejected(
            {'keylime:attestation': 'bogus'}, "'bogus'")
        # The message tells the operator what would have been accepted.
        for mode in tpm.ATTESTATION_MODES:
            self.assertIn(mode, message)

    def test_attestation_bogus_rejected_on_update(self):
        resp = self._put_spec('keylime:attestation', 'bogus', 400)
        self.assertIn("'bogus'", resp.body['badRequest']['message'])
        self.assertEqual({}, self._get_specs())

    def test_attestation_case_sensitive(self):
        self._assert_rejected({'keylime:attestation': 'Required'},
                              "'Required'")

    # keylime:{tpm,runtime,mb}_policy

    def test_policy_names_accepted(self):
        specs = {
            'keylime:tpm_policy': 'boot',
            'keylime:runtime_policy': 'ima-prod.1',
            'keylime:mb_policy': 'mb_default',
        }
        resp = self._post_specs(specs, 200)
        self.assertEqual(specs, resp.body['extra_specs'])
        self.assertEqual(specs, self._get_specs())

    def test_policy_names_accepted_on_update(self):
        self._put_spec('keylime:tpm_policy', 'boot', 200)
        self.assertEqual({'keylime:tpm_policy': 'boot'}, self._get_specs())

    def test_full_attested_flavor_accepted(self):
        specs = {
            'hw:tpm_version': '2.0',
            'hw:tpm_model': 'tpm-crb',
            'hw:tpm_secret_security': 'host',
            'keylime:attestation': 'required',
            'keylime:tpm_policy': 'boot',
            'keylime:runtime_policy': 'ima-prod.1',
            'keylime:mb_policy': 'mb_default',
        }
        self._post_specs(specs, 200)
        self.assertEqual(specs, self._get_specs())

    def test_policy_name_with_space_rejected(self):
        for kind in tpm.POLICY_KINDS:
            self._assert_rejected({'keylime:' + kind: 'boot policy'},
                                  "'boot policy'")

    def test_policy_name_leading_dash_rejected(self):
        for kind in tpm.POLICY_KINDS:
            self._assert_rejected({'keylime:' + kind: '-boot'}, "'-boot'")

    def test_policy_name_empty_rejected(self):
        for kind in tpm.POLICY_KINDS:
            message = self._assert_rejected({'keylime:' + kind: ''})
            # The message quotes the (empty) bad value.
            self.assertIn("Validation failed; ''", message)

    def test_policy_name_too_long_rejected(self):
        # 255 characters is the longest name: our pattern must allow it
        # (Nova's schema caps every extra spec value at 255 too).
        self._post_specs({'keylime:tpm_policy': 'a' * 255}, 200)
        self._put_spec('keylime:tpm_policy', 'a' * 256, 400)
        self.assertEqual({'keylime:tpm_policy': 'a' * 255},
                         self._get_specs())

    def test_bad_spec_rejects_whole_request(self):
        self._assert_rejected(
            {'keylime:attestation': 'required',
             'keylime:tpm_policy': 'boot',
             'keylime:mb_policy': 'bad policy'},
            "'bad policy'")

    # unknown keys in the keylime: namespace

    def test_unknown_keylime_keys_rejected(self):
        for key in ('keylime:foo', 'keylime:attest'):
            self._assert_rejected(
                {key: 'required'}, NOT_VALID_SPEC, "'%s'" % key)

    def test_unknown_keylime_key_rejected_on_update(self):
        resp = self._put_spec('keylime:attest', 'required', 400)
        message = resp.body['badRequest']['message']
        self.assertIn(NOT_VALID_SPEC, message)
        self.assertIn("'keylime:attest'", message)

    def test_other_namespaces_still_free(self):
        # Registering 'keylime' did not make Nova reject keys outside of
        # the namespaces it knows.
        specs = {'keylimefoo:bar': 'baz', 'custom:thing': 'x'}
        self._post_specs(specs, 200)
        self.assertEqual(specs, self._get_specs())

    # Nova's own hw:tpm_* validation is untouched

    def test_nova_tpm_model_still_validated(self):
        message = self._assert_rejected({'hw:tpm_model': 'foo'}, "'foo'")
        self.assertIn('tpm-tis', message)
        self.assertIn('tpm-crb', message)

    def test_nova_tpm_version_still_accepted(self):
        self._post_specs({'hw:tpm_version': '2.0'}, 200)
        self.assertEqual({'hw:tpm_version': '2.0'}, self._get_specs())

    def test_nova_tpm_version_still_validated(self):
        self._assert_rejected({'hw:tpm_version': '3.0'}, "'3.0'")

    def test_nova_unknown_hw_tpm_key_still_rejected(self):
        self._assert_rejected({'hw:tpm_foo': '1'}, NOT_VALID_SPEC,
                              "'hw:tpm_foo'")


class KeylimeExtraSpecsBeforeV286Test(ExtraSpecsTestMixin,
                                      base.NovaVTPMFunctionalTestCase):
    """Before 2.86 Nova validates no extra spec, ours included."""

    ADMIN_API = True
    microversion = '2.85'

    def test_bad_values_stored(self):
        specs = {'keylime:attestation': 'bogus', 'keylime:foo': 'bar'}
        self._post_specs(specs, 200)
        self.assertEqual(specs, self._get_specs())


class ValidatorRegistryTest(base.NovaVTPMFunctionalTestCase):
    """The registry nova-api validates against, as nova-api loaded it."""

    KEYLIME_KEYS = ('keylime:attestation', 'keylime:tpm_policy',
                    'keylime:runtime_policy', 'keylime:mb_policy')
    NOVA_TPM_KEYS = ('hw:tpm_version', 'hw:tpm_model',
                     'hw:tpm_secret_security')

    def test_keylime_validators_registered(self):
        ours = {v.name: v for v in vtpm_extra_specs.register()}
        self.assertEqual(set(self.KEYLIME_KEYS), set(ours))
        self.assertEqual(set(self.KEYLIME_KEYS),
                         set(tpm.ATTESTATION_FLAVOR_KEYS))
        for key in self.KEYLIME_KEYS:
            registered = nova_validators.VALIDATORS.get(key)
            self.assertIsNotNone(registered, key)
            self.assertEqual(ours[key].description, registered.description)
            self.assertEqual(ours[key].value, registered.value)
            self.assertIn('Provided by nova-vtpm.', registered.description)
        self.assertEqual(list(tpm.ATTESTATION_MODES),
                         nova_validators.VALIDATORS[
                             'keylime:attestation'].value['enum'])
        for kind in tpm.POLICY_KINDS:
            self.assertEqual(
                tpm.POLICY_NAME_PATTERN,
                nova_validators.VALIDATORS['keylime:' + kind].value['pattern'])
        self.assertIn('keylime', nova_validators.NAMESPACES)

    def test_only_keylime_names_registered_by_us(self):
        ours = [k for k, v in nova_validators.VALIDATORS.items()
                if 'nova-vtpm' in v.description]
        self.assertEqual(sorted(self.KEYLIME_KEYS), sorted(ours))

    def test_nova_tpm_validators_are_novas(self):
        novas = {v.name: v for v in nova_hw_validators.register()}
        for key in self.NOVA_TPM_KEYS:
            registered = nova_validators.VALIDATORS[key]
            self.assertIs(novas[key], registered, key)
            self.assertNotIn('nova-vtpm', registered.description)
        self.assertEqual(
            'The model of the attached TPM device. '
            'Only supported by the libvirt virt driver.',
            nova_validators.VALIDATORS['hw:tpm_model'].description)
        self.assertEqual(['tpm-tis', 'tpm-crb'],
                         nova_validators.VALIDATORS['hw:tpm_model']
                         .value['enum'])
