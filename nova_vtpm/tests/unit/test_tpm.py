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

"""The request model: nova-vtpm's own rules and warnings.

Agreement with Nova's rules is proven by test_tpm_differential against the
real Nova functions; this module covers what nova-vtpm adds.
"""

import json

from oslotest import base

from nova_vtpm import tpm


def _resolve(flavor=None, image=None, **kwargs):
    return tpm.resolve(flavor or {}, image or {}, flavor_name='f1',
                       image_name='i1', **kwargs)


class TestVTPM(base.BaseTestCase):

    def test_no_vtpm(self):
        r = _resolve({'hw:cpu_policy': 'dedicated'})
        self.assertIsNone(r.vtpm)
        self.assertIsNone(r.attestation)
        self.assertEqual([], r.errors)
        self.assertEqual([], r.warnings)

    def test_defaults(self):
        r = _resolve({'hw:tpm_version': '2.0',
                      'hw:tpm_secret_security': 'host'})
        self.assertEqual(tpm.VTPM('2.0', 'tpm-tis', 'host'), r.vtpm)
        self.assertEqual([], r.errors)

    def test_image_provides_version_flavor_model(self):
        r = _resolve({'hw:tpm_model': 'tpm-crb'}, {'hw_tpm_version': '2.0'})
        self.assertEqual(tpm.VTPM('2.0', 'tpm-crb', 'user'), r.vtpm)

    def test_conflict_names_flavor_and_image(self):
        r = _resolve({'hw:tpm_version': '2.0'}, {'hw_tpm_version': '1.2'})
        self.assertIsNone(r.vtpm)
        self.assertEqual(
            ['Flavor f1 has hw:tpm_version extra spec explicitly set to 2.0, '
             'conflicting with image i1 which has hw_tpm_version explicitly '
             'set to 1.2.'], r.errors)
        self.assertEqual(r.errors[0], r.nova_error)

    def test_one_error_per_bad_value(self):
        r = _resolve({'hw:tpm_version': '2.0', 'hw:tpm_model': 'foo'})
        self.assertEqual(
            ["Invalid TPM model 'foo'. Allowed values: tpm-tis, tpm-crb."],
            r.errors)

    def test_flavor_api_error_for_ignored_bad_value(self):
        # No version: Nova's boot ignores the model, its flavor API does not.
        r = _resolve({'hw:tpm_model': 'foo'})
        self.assertIsNone(r.nova_error)
        self.assertEqual(
            ["Validation failed; 'foo' is not one of: tpm-tis, tpm-crb."],
            r.errors)

    def test_unknown_hw_tpm_key(self):
        r = _resolve({'hw:tpm_versoin': '2.0'})
        self.assertIn("extra spec 'hw:tpm_versoin' does not appear to be a "
                      "valid extra spec.", r.errors[0])

    def test_model_without_version_warns(self):
        r = _resolve({'hw:tpm_model': 'tpm-crb'}, {'hw_tpm_model': 'tpm-crb'})
        self.assertIsNone(r.vtpm)
        self.assertEqual([], r.errors)
        self.assertEqual(2, len(r.warnings))
        self.assertIn('Nova silently creates no vTPM', r.warnings[0])
        self.assertIn('hw_tpm_model=tpm-crb', r.warnings[1])

    def test_security_without_version_warns(self):
        r = _resolve({'hw:tpm_secret_security': 'host'})
        self.assertEqual(1, len(r.warnings))
        self.assertIn('has no effect', r.warnings[0])

    def test_empty_version_warns(self):
        r = _resolve({'hw:tpm_version': ''})
        self.assertIsNone(r.vtpm)
        self.assertTrue(any('empty string' in w for w in r.warnings))

    def test_windows_tpm_12_warns(self):
        r = _resolve({'hw:tpm_version': '1.2',
                      'hw:tpm_secret_security': 'host'},
                     {'os_type': 'Windows'})
        self.assertEqual(tpm.VTPM('1.2', 'tpm-tis', 'host'), r.vtpm)
        self.assertEqual(1, len(r.warnings))
        self.assertIn('require TPM 2.0', r.warnings[0])

    def test_user_mode_warns_about_live_migration(self):
        r = _resolve({'hw:tpm_version': '2.0'})
        self.assertEqual(1, len(r.warnings))
        self.assertIn("'user' (the default)", r.warnings[0])
        self.assertIn('live-migrate', r.warnings[0])

    def test_deployment_mode_warns(self):
        r = _resolve({'hw:tpm_version': '2.0',
                      'hw:tpm_secret_security': 'deployment'})
        self.assertIn("'deployment'", r.warnings[0])

    def test_image_secret_security_is_ignored_with_warning(self):
        r = _resolve({'hw:tpm_version': '2.0',
                      'hw:tpm_secret_security': 'host'},
                     {'hw_tpm_secret_security': 'host'})
        self.assertEqual('host', r.vtpm.secret_security)
        self.assertTrue(any('hw_tpm_secret_security is ignored' in w
                            for w in r.warnings))

    def test_non_string_values_are_errors_not_crashes(self):
        r = tpm.resolve({'hw:tpm_version': 2.0}, {'hw_tpm_model': None})
        self.assertEqual(2, len(r.errors))
        self.assertIn('must be strings', r.errors[0])

    def test_bad_default_mode_is_a_programming_error(self):
        self.assertRaises(ValueError, tpm.resolve, {}, {},
                          default_attestation='sometimes')


class TestAttestation(base.BaseTestCase):

    TPM2 = {'hw:tpm_version': '2.0', 'hw:tpm_secret_security': 'host'}

    def test_required_with_policies(self):
        r = _resolve(dict(self.TPM2, **{
            'keylime:attestation': 'required',
            'keylime:tpm_policy': 'boot',
            'keylime:runtime_policy': 'ima-prod'}),
            {'keylime_mb_policy': 'mb1'})
        self.assertEqual([], r.errors)
        self.assertEqual(
            {'mode': 'required', 'tpm_policy': 'boot',
             'runtime_policy': 'ima-prod', 'mb_policy': 'mb1'},
            r.attestation.to_dict())

    def test_image_chooses_mode(self):
        r = _resolve(self.TPM2, {'keylime_attestation': 'optional'})
        self.assertEqual('optional', r.attestation.mode)

    def test_conflict(self):
        r = _resolve(dict(self.TPM2, **{'keylime:attestation': 'required'}),
                     {'keylime_attestation': 'disabled'})
        self.assertIsNone(r.attestation)
        self.assertEqual(
            ['Flavor f1 has keylime:attestation extra spec explicitly set to '
             'required, conflicting with image i1 which has '
             'keylime_attestation explicitly set to disabled.'], r.errors)

    def test_invalid_mode(self):
        r = _resolve(dict(self.TPM2, **{'keylime:attestation': 'yes'}))
        self.assertIsNone(r.attestation)
        self.assertEqual(1, len(r.errors))
        self.assertIn("Invalid attestation mode 'yes' (keylime:attestation)",
                      r.errors[0])

    def test_invalid_policy_name(self):
        r = _resolve(dict(self.TPM2, **{'keylime:attestation': 'required',
                                        'keylime:runtime_policy': '-x y'}))
        self.assertEqual(1, len(r.errors))
        self.assertIn("Invalid policy name '-x y' (keylime:runtime_policy)",
                      r.errors[0])
        self.assertIsNone(r.attestation.runtime_policy)

    def test_tpm_policy_must_be_defined_when_policies_known(self):
        specs = dict(self.TPM2, **{'keylime:attestation': 'required',
                                   'keylime:tpm_policy': 'boot'})
        r = _resolve(specs, tpm_policies={'secure-boot': {}})
        self.assertEqual(1, len(r.errors))
        self.assertIn('defined policies: secure-boot', r.errors[0])
        r = _resolve(specs, tpm_policies={'boot': {}})
        self.assertEqual([], r.errors)

    def test_required_without_tpm2_is_an_error(self):
        for flavor in ({}, {'hw:tpm_version': '1.2'}):
            flavor = dict(flavor, **{'keylime:attestation': 'required'})
            r = _resolve(flavor)
            self.assertEqual(1, len(r.errors), flavor)
            self.assertIn('Keylime attests TPM 2.0 only', r.errors[0])
            self.assertEqual('required', r.attestation.mode)

    def test_optional_without_tpm2_warns(self):
        r = _resolve({'hw:tpm_version': '1.2',
                      'keylime:attestation': 'optional'})
        self.assertEqual([], r.errors)
        self.assertIsNone(r.attestation)
        self.assertTrue(any('will not be attested' in w for w in r.warnings))

    def test_default_mode_applies_to_tpm2_only(self):
        r = _resolve(self.TPM2, default_attestation='required')
        self.assertEqual('required', r.attestation.mode)
        r = _resolve({'hw:tpm_version': '1.2'},
                     default_attestation='required')
        self.assertIsNone(r.attestation)
        self.assertEqual([], r.errors)
        r = _resolve({}, default_attestation='required')
        self.assertIsNone(r.attestation)

    def test_explicit_disabled_beats_default(self):
        r = _resolve(dict(self.TPM2, **{'keylime:attestation': 'disabled'}),
                     default_attestation='required')
        self.assertIsNone(r.attestation)

    def test_policies_without_attestation_warn(self):
        r = _resolve(dict(self.TPM2, **{'keylime:tpm_policy': 'boot'}))
        self.assertIsNone(r.attestation)
        self.assertTrue(any('attestation is disabled' in w
                            for w in r.warnings))

    def test_unknown_keylime_keys(self):
        r = _resolve(dict(self.TPM2, **{'keylime:attest': 'required'}),
                     {'keylime_foo': 'x'})
        self.assertEqual(
            ["Validation failed; extra spec 'keylime:attest' does not "
             "appear to be a valid extra spec."], r.errors)
        self.assertTrue(any('keylime_foo' in w for w in r.warnings))

    def test_no_attestation_when_nova_fails(self):
        r = _resolve({'hw:tpm_version': '2.0', 'hw:tpm_model': 'x',
                      'keylime:attestation': 'required'})
        self.assertIsNone(r.attestation)
        self.assertEqual(1, len(r.errors))

    def test_json_contract(self):
        r = _resolve(dict(self.TPM2, **{'keylime:attestation': 'required'}))
        doc = json.loads(json.dumps(r.to_dict()))
        self.assertEqual({'vtpm', 'attestation', 'errors', 'warnings'},
                         set(doc))
        self.assertEqual({'version': '2.0', 'model': 'tpm-tis',
                          'secret_security': 'host'}, doc['vtpm'])
        self.assertEqual({'mode', 'tpm_policy', 'runtime_policy',
                          'mb_policy'}, set(doc['attestation']))
