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

"""Property tests of :func:`nova_vtpm.tpm.resolve` (hypothesis).

The runs are derandomised (the same examples every run) and keep no
example database. Hypothesis also writes caches (Unicode tables, constants)
to its storage directory, ``./.hypothesis`` by default; unless
``HYPOTHESIS_STORAGE_DIRECTORY`` says where, they go to a temporary
directory removed at exit, so that the tests write nothing into the source
tree.
"""

import atexit
import json
import os
import shutil
import tempfile

from hypothesis import configuration as hypothesis_configuration
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
from oslotest import base

from nova_vtpm.tests.unit import test_tpm_differential as nova_oracle
from nova_vtpm import tpm

if not os.environ.get('HYPOTHESIS_STORAGE_DIRECTORY'):
    _STORAGE = tempfile.mkdtemp(prefix='nova-vtpm-hypothesis-')
    atexit.register(shutil.rmtree, _STORAGE, ignore_errors=True)
    hypothesis_configuration.set_hypothesis_home_dir(_STORAGE)

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)

FLAVOR_TPM_KEYS = ('hw:tpm_version', 'hw:tpm_model', 'hw:tpm_secret_security')
FLAVOR_KEYLIME_KEYS = ('keylime:attestation', 'keylime:tpm_policy',
                       'keylime:runtime_policy', 'keylime:mb_policy')
IMAGE_TPM_KEYS = ('hw_tpm_version', 'hw_tpm_model')
IMAGE_KEYLIME_KEYS = ('keylime_attestation', 'keylime_tpm_policy',
                      'keylime_runtime_policy', 'keylime_mb_policy')
# Keys next to the real ones: unknown members of the same families.
FLAVOR_NEAR_KEYS = ('hw:tpm_foo', 'hw:tpm_', 'keylime:foo', 'keylime:',
                    'hw:cpu_policy')
IMAGE_NEAR_KEYS = ('hw_tpm_secret_security', 'hw_tpm_foo', 'keylime_foo',
                   'keylime_policy')

POLICY_NAMES = ('default', 'ima-v1', 'mb_2025.1', 'p' * 255, 'p' * 256,
                '-lead', 'has space', 'ümlaut')
SPECIAL_VALUES = ('', ' ', '2.0 ', ' 2.0', '2', '2.00', 'TPM-TIS',
                  'Tpm-Crb', 'Windows', 'LINUX', 'User', 'none', 'None',
                  '%s', '%(x)s')
ENUM_VALUES = (tpm.TPM_VERSIONS + tpm.TPM_MODELS +
               tpm.SECRET_SECURITY_MODES + tpm.ATTESTATION_MODES +
               tpm.OS_TYPES)

values = st.one_of(
    st.sampled_from(ENUM_VALUES),
    st.sampled_from(SPECIAL_VALUES + POLICY_NAMES),
    st.text(max_size=20),
)
names = st.text(min_size=1, max_size=40)


def _mapping(keys):
    return st.dictionaries(
        st.one_of(st.sampled_from(keys), st.text(max_size=20)), values,
        max_size=8)


flavor_specs = _mapping(FLAVOR_TPM_KEYS + FLAVOR_KEYLIME_KEYS +
                        FLAVOR_NEAR_KEYS)
image_props = _mapping(IMAGE_TPM_KEYS + IMAGE_KEYLIME_KEYS + ('os_type',) +
                       IMAGE_NEAR_KEYS)
# A mapping with items that are not strings: what a caller must not pass but
# resolve() must survive.
messy_mapping = st.dictionaries(
    st.one_of(st.sampled_from(FLAVOR_TPM_KEYS + IMAGE_TPM_KEYS),
              st.text(max_size=10), st.integers(), st.none()),
    st.one_of(values, st.integers(), st.none(), st.floats(allow_nan=False),
              st.lists(st.text(max_size=3), max_size=2)),
    max_size=6)
tpm_policies = st.one_of(
    st.none(), st.frozensets(st.sampled_from(POLICY_NAMES), max_size=4))
default_modes = st.sampled_from(tpm.ATTESTATION_MODES)

# The differential property: keys Nova's vTPM rules read (plus os_type,
# which Nova types before the vTPM rules) and keys Nova ignores. No other
# image property: Nova types dozens more (hw_disk_bus, hw_numa_*...) that
# resolve() does not claim to check.
nova_flavor_specs = st.dictionaries(
    st.sampled_from(FLAVOR_TPM_KEYS + FLAVOR_KEYLIME_KEYS + ('hw:tpm_foo',)),
    values, max_size=5)
nova_image_props = st.dictionaries(
    st.sampled_from(IMAGE_TPM_KEYS + ('os_type', 'hw_tpm_secret_security',
                                      'keylime_attestation')),
    values, max_size=5)


def check_invariants(test, resolution, tpm_policies=None):
    """What every Resolution must satisfy, whatever the input."""
    errors = resolution.errors
    test.assertIsInstance(errors, list)
    for message in errors + list(resolution.warnings):
        test.assertIsInstance(message, str)
        test.assertNotEqual('', message.strip())
    test.assertEqual(not errors, resolution.ok)

    vtpm = resolution.vtpm
    if vtpm is not None:
        test.assertIn(vtpm.version, tpm.TPM_VERSIONS)
        test.assertIn(vtpm.model, tpm.TPM_MODELS)
        test.assertIn(vtpm.secret_security, tpm.SECRET_SECURITY_MODES)
        if vtpm.model == 'tpm-crb':
            test.assertEqual('2.0', vtpm.version)

    attestation = resolution.attestation
    if attestation is not None:
        # 'disabled' means no attestation, never an Attestation object.
        test.assertIn(attestation.mode, ('required', 'optional'))
        for kind in tpm.POLICY_KINDS:
            name = getattr(attestation, kind)
            if name is not None:
                test.assertRegex(name, '^%s$' % tpm.POLICY_NAME_PATTERN)
        if tpm_policies is not None and attestation.tpm_policy is not None:
            test.assertIn(attestation.tpm_policy, tpm_policies)
        # Keylime attests TPM 2.0 only: an attestation without a TPM 2.0
        # vTPM is always reported as an error.
        if vtpm is None or vtpm.version != '2.0':
            test.assertNotEqual([], errors)

    nova_error = resolution.nova_error
    if nova_error is not None:
        # Nova fails the boot: no vTPM, no attestation, Nova's error first.
        test.assertIsNone(vtpm)
        test.assertIsNone(attestation)
        test.assertEqual(nova_error, errors[0])
    # Either a clean outcome or a reason why not.
    test.assertTrue(
        (not errors) or all(isinstance(e, str) and e for e in errors))


def check_contract(test, resolution):
    """to_dict() is the JSON contract of ``nova-vtpm check``."""
    data = resolution.to_dict()
    test.assertEqual(data, json.loads(json.dumps(data)))
    test.assertEqual({'vtpm', 'attestation', 'errors', 'warnings'},
                     set(data))
    if data['vtpm'] is not None:
        test.assertEqual({'version', 'model', 'secret_security'},
                         set(data['vtpm']))
        for value in data['vtpm'].values():
            test.assertIsInstance(value, str)
    if data['attestation'] is not None:
        test.assertEqual({'mode', 'tpm_policy', 'runtime_policy',
                          'mb_policy'}, set(data['attestation']))
        test.assertIsInstance(data['attestation']['mode'], str)
        for kind in tpm.POLICY_KINDS:
            test.assertIsInstance(data['attestation'][kind], (str, type(None)))
    for key in ('errors', 'warnings'):
        test.assertIsInstance(data[key], list)
        for message in data[key]:
            test.assertIsInstance(message, str)
    test.assertEqual(resolution.errors, data['errors'])
    test.assertEqual(resolution.warnings, data['warnings'])
    test.assertEqual(resolution.vtpm is None, data['vtpm'] is None)
    test.assertEqual(resolution.attestation is None,
                     data['attestation'] is None)


class ResolvePropertiesTest(base.BaseTestCase):

    @SETTINGS
    @given(flavor_specs, image_props, st.one_of(st.none(), names),
           st.one_of(st.none(), names), default_modes, tpm_policies)
    def test_never_raises_and_results_are_consistent(
            self, specs, props, flavor_name, image_name, default_mode,
            policies):
        resolution = tpm.resolve(specs, props, flavor_name=flavor_name,
                                 image_name=image_name,
                                 default_attestation=default_mode,
                                 tpm_policies=policies)
        check_invariants(self, resolution, policies)
        check_contract(self, resolution)

    @SETTINGS
    @given(messy_mapping, st.one_of(st.none(), messy_mapping),
           default_modes)
    def test_non_string_items_are_errors_not_crashes(self, specs, props,
                                                     default_mode):
        resolution = tpm.resolve(specs, props,
                                 default_attestation=default_mode)
        check_invariants(self, resolution)
        check_contract(self, resolution)
        bad = [k for k, v in specs.items()
               if not (isinstance(k, str) and isinstance(v, str))]
        bad += [k for k, v in (props or {}).items()
                if not (isinstance(k, str) and isinstance(v, str))]
        if bad:
            self.assertFalse(resolution.ok)

    @SETTINGS
    @given(flavor_specs, image_props, default_modes)
    def test_resolve_does_not_modify_its_input(self, specs, props,
                                               default_mode):
        specs_before, props_before = dict(specs), dict(props)
        tpm.resolve(specs, props, default_attestation=default_mode)
        self.assertEqual(specs_before, specs)
        self.assertEqual(props_before, props)

    @SETTINGS
    @given(flavor_specs, image_props, names, names, default_modes)
    def test_deterministic(self, specs, props, flavor_name, image_name,
                           default_mode):
        first = tpm.resolve(specs, props, flavor_name, image_name,
                            default_mode).to_dict()
        second = tpm.resolve(dict(reversed(list(specs.items()))),
                             dict(reversed(list(props.items()))),
                             flavor_name, image_name,
                             default_mode).to_dict()
        # Key order may order the messages, never change the outcome.
        self.assertEqual(first['vtpm'], second['vtpm'])
        self.assertEqual(first['attestation'], second['attestation'])
        self.assertEqual(sorted(first['errors']), sorted(second['errors']))
        self.assertEqual(sorted(first['warnings']),
                         sorted(second['warnings']))


class ResolveAgreesWithNovaPropertyTest(base.BaseTestCase):
    """The differential property: the oracle is real Nova."""

    def setUp(self):
        super().setUp()
        if nova_oracle.NOVA_IMPORT_ERROR is not None:
            self.skipTest(nova_oracle.SKIP_REASON)

    @SETTINGS
    @given(nova_flavor_specs, nova_image_props, names, names,
           default_modes)
    def test_nova_error_and_vtpm_agree_with_nova(
            self, specs, props, flavor_name, image_name, default_mode):
        mismatches = nova_oracle.compare(specs, props, flavor_name,
                                         image_name,
                                         default_attestation=default_mode)
        self.assertEqual([], mismatches)

    @settings(SETTINGS, max_examples=500)
    @given(st.fixed_dictionaries(
        {}, optional={key: values for key in FLAVOR_TPM_KEYS}),
        st.fixed_dictionaries(
            {}, optional={key: values for key in IMAGE_TPM_KEYS +
                          ('os_type',)}))
    def test_tpm_keys_only_agree_with_nova(self, specs, props):
        self.assertEqual([], nova_oracle.compare(specs, props, 'm1.vtpm',
                                                 'img'))
