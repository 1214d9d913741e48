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

"""Differential tests: :func:`nova_vtpm.tpm.resolve` against real Nova.

The oracle runs Nova's own code, imported from the installed Nova, in the
order Nova runs it for a boot request:

a) ``nova.objects.ImageMeta.from_dict``: a ``ValueError`` fails the request
   with ``Invalid image metadata. Error: <e>`` (``nova.compute.api.API.
   _get_image_meta_obj``);
b) ``nova.virt.hardware.get_vtpm_constraint``: ``FlavorImageConflict`` or
   ``Invalid``, or the requested ``VTPMConfig``, or None;
c) for a vTPM, ``get_tpm_secret_security_constraint(flavor) or 'user'``,
   which the scheduler's ``tpm_secret_security_filter`` refuses unless it is
   one of ``user``, ``host`` or ``deployment``.

Without Nova installed these tests are skipped.
"""

import collections
import itertools
import warnings

from oslotest import base

from nova_vtpm import tpm

try:
    with warnings.catch_warnings():
        # Importing Nova's objects imports eventlet, which warns that it is
        # deprecated; that is Nova's business, not this test's.
        warnings.simplefilter('ignore')
        from nova import exception as nova_exception
        from nova import objects as nova_objects
        from nova.virt import hardware as nova_hardware
        nova_objects.register_all()
except ImportError as exc:  # pragma: no cover - depends on the environment
    NOVA_IMPORT_ERROR = exc
else:
    NOVA_IMPORT_ERROR = None

SKIP_REASON = (
    'Nova is not importable (%s): the differential tests need the real '
    '"nova" package next to nova-vtpm.' % (NOVA_IMPORT_ERROR,))

# The secret security modes Nova's scheduler request filter supports
# (nova.scheduler.request_filter.tpm_secret_security_filter).
NOVA_SUPPORTED_SECRET_SECURITY = ('user', 'host', 'deployment')

NovaOutcome = collections.namedtuple('NovaOutcome', ['vtpm', 'error'])

ABSENT = object()

FLAVOR_NAME = 'm1.vtpm'
IMAGE_NAME = 'cirros-0.6.3 (vTPM)'

FLAVOR_TPM_VERSIONS = (ABSENT, '', '1.2', '2.0', '3', '2.0 ')
FLAVOR_TPM_MODELS = (ABSENT, '', 'tpm-tis', 'tpm-crb', 'foo')
FLAVOR_SECRET_SECURITY = (ABSENT, '', 'user', 'host', 'deployment', 'bogus')
IMAGE_TPM_VERSIONS = (ABSENT, '', '1.2', '2.0', 'x')
IMAGE_TPM_MODELS = (ABSENT, '', 'tpm-tis', 'tpm-crb', 'bar')
IMAGE_OS_TYPES = (ABSENT, 'windows', 'Linux', 'beos')


def nova_outcome(flavor_specs, image_props, flavor_name, image_name):
    """What real Nova does with a flavor x image pair.

    :returns: a :class:`NovaOutcome`: ``vtpm`` is a (version, model,
        secret_security) tuple or None; ``error`` is Nova's error message or
        None. At most one of them is set.
    """
    try:
        image_meta = nova_objects.ImageMeta.from_dict(
            {'name': image_name, 'properties': dict(image_props)})
    except ValueError as e:
        return NovaOutcome(None, 'Invalid image metadata. Error: %s' % e)
    flavor = nova_objects.Flavor(name=flavor_name,
                                 extra_specs=dict(flavor_specs))
    try:
        config = nova_hardware.get_vtpm_constraint(flavor, image_meta)
    except (nova_exception.FlavorImageConflict,
            nova_exception.Invalid) as e:
        return NovaOutcome(None, e.format_message())
    if config is None:
        return NovaOutcome(None, None)
    security = (nova_hardware.get_tpm_secret_security_constraint(flavor) or
                'user')
    if security not in NOVA_SUPPORTED_SECRET_SECURITY:
        return NovaOutcome(
            None, f"TPM secret security '{security}' is not supported.")
    return NovaOutcome((config.version, config.model, security), None)


def our_outcome(resolution):
    vtpm = resolution.vtpm
    if vtpm is not None:
        vtpm = (vtpm.version, vtpm.model, vtpm.secret_security)
    return NovaOutcome(vtpm, resolution.nova_error)


def compare(flavor_specs, image_props, flavor_name, image_name, **kwargs):
    """Compare resolve() with Nova on one pair.

    :returns: a list of human-readable mismatch descriptions (empty when
        resolve() agrees with Nova).
    """
    nova = nova_outcome(flavor_specs, image_props, flavor_name, image_name)
    resolution = tpm.resolve(flavor_specs, image_props,
                             flavor_name=flavor_name, image_name=image_name,
                             **kwargs)
    ours = our_outcome(resolution)
    found = []
    if nova.error is None and ours.error is not None:
        found.append('nova-vtpm reports a Nova error Nova does not raise: '
                     '%r' % (ours.error,))
    elif nova.error is not None and ours.error != nova.error:
        found.append('Nova error %r, nova-vtpm says %r' % (nova.error,
                                                           ours.error))
    if nova.error is None and ours.error is None and ours.vtpm != nova.vtpm:
        found.append('Nova vTPM %r, nova-vtpm vTPM %r' % (nova.vtpm,
                                                          ours.vtpm))
    if nova.error is not None and ours.vtpm is not None:
        found.append('Nova fails but nova-vtpm resolves a vTPM %r' % (
            ours.vtpm,))
    if found:
        return ['flavor %r %r x image %r %r: %s' % (
            flavor_name, flavor_specs, image_name, image_props,
            '; '.join(found))]
    return []


def build(pairs):
    return {key: value for key, value in pairs if value is not ABSENT}


class NovaDifferentialTestCase(base.BaseTestCase):
    """resolve() gives Nova's vTPM and Nova's exact error, or no error."""

    def setUp(self):
        super().setUp()
        if NOVA_IMPORT_ERROR is not None:
            self.skipTest(SKIP_REASON)

    def assertAgree(self, cases):
        """Compare every case, then fail once with every mismatch."""
        mismatches = []
        count = 0
        for flavor_specs, image_props, flavor_name, image_name in cases:
            count += 1
            mismatches.extend(compare(flavor_specs, image_props,
                                      flavor_name, image_name))
        self.assertGreater(count, 0)
        if mismatches:
            self.fail('%d of %d flavor x image pairs disagree with Nova:\n%s'
                      % (len(mismatches), count, '\n'.join(mismatches)))
        return count

    def test_tpm_keys_every_combination(self):
        def cases():
            for fv, fm, fs, iv, im in itertools.product(
                    FLAVOR_TPM_VERSIONS, FLAVOR_TPM_MODELS,
                    FLAVOR_SECRET_SECURITY, IMAGE_TPM_VERSIONS,
                    IMAGE_TPM_MODELS):
                yield (build([('hw:tpm_version', fv), ('hw:tpm_model', fm),
                              ('hw:tpm_secret_security', fs)]),
                       build([('hw_tpm_version', iv), ('hw_tpm_model', im)]),
                       FLAVOR_NAME, IMAGE_NAME)
        count = self.assertAgree(cases())
        self.assertEqual(6 * 5 * 6 * 5 * 5, count)

    def test_os_type_subset(self):
        # os_type is typed (and lower-cased) by Nova before any vTPM rule:
        # every os_type with the version/model grid, and the secret security
        # and flavor model values that change the outcome.
        def cases():
            for fv, fm, fs, iv, im, os_type in itertools.product(
                    FLAVOR_TPM_VERSIONS, (ABSENT, 'tpm-crb', 'foo'),
                    (ABSENT, 'host', 'bogus'), IMAGE_TPM_VERSIONS,
                    IMAGE_TPM_MODELS, IMAGE_OS_TYPES[1:]):
                yield (build([('hw:tpm_version', fv), ('hw:tpm_model', fm),
                              ('hw:tpm_secret_security', fs)]),
                       build([('hw_tpm_version', iv), ('hw_tpm_model', im),
                              ('os_type', os_type)]),
                       FLAVOR_NAME, IMAGE_NAME)
        count = self.assertAgree(cases())
        self.assertEqual(6 * 3 * 3 * 5 * 5 * 3, count)

    def test_names_in_conflict_messages(self):
        names = ('m1.small', 'vtpm flavor', 'flävor-ü', '%s %(x)s',
                 'a' * 255)
        conflicts = (
            ({'hw:tpm_version': '2.0'}, {'hw_tpm_version': '1.2'}),
            ({'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb'},
             {'hw_tpm_model': 'tpm-tis'}),
        )

        def cases():
            for flavor_name, image_name in itertools.product(names, names):
                for flavor_specs, image_props in conflicts:
                    yield flavor_specs, image_props, flavor_name, image_name
        self.assertAgree(cases())

    def test_keys_nova_ignores(self):
        # Keys outside Nova's vTPM rules must not change the Nova outcome:
        # nova-vtpm's attestation keys, an image hw_tpm_secret_security
        # (deliberately not a Nova property) and unknown hw:tpm_ specs.
        extra_flavor = (
            {}, {'keylime:attestation': 'required'},
            {'keylime:attestation': 'bogus', 'keylime:tpm_policy': '!'},
            {'hw:tpm_foo': 'bar'},
        )
        extra_image = (
            {}, {'keylime_attestation': 'optional'},
            {'hw_tpm_secret_security': 'bogus'},
            {'keylime_runtime_policy': 'ima-v1', 'keylime_foo': 'x'},
        )

        def cases():
            for fv, fs, iv, ef, ei in itertools.product(
                    FLAVOR_TPM_VERSIONS, (ABSENT, 'host', 'bogus'),
                    IMAGE_TPM_VERSIONS, extra_flavor, extra_image):
                flavor_specs = build([('hw:tpm_version', fv),
                                      ('hw:tpm_secret_security', fs)])
                flavor_specs.update(ef)
                image_props = build([('hw_tpm_version', iv)])
                image_props.update(ei)
                yield flavor_specs, image_props, FLAVOR_NAME, IMAGE_NAME
        self.assertAgree(cases())

    def test_default_attestation_does_not_change_nova_outcome(self):
        mismatches = []
        for mode in tpm.ATTESTATION_MODES:
            for fv, iv in itertools.product(FLAVOR_TPM_VERSIONS,
                                            IMAGE_TPM_VERSIONS):
                mismatches.extend(compare(
                    build([('hw:tpm_version', fv)]),
                    build([('hw_tpm_version', iv)]), FLAVOR_NAME,
                    IMAGE_NAME, default_attestation=mode))
        self.assertEqual([], mismatches)

    def test_nova_error_is_the_first_error(self):
        # Nova's error comes first in Resolution.errors, so that a caller
        # printing the errors shows what Nova says before what nova-vtpm
        # adds.
        for flavor_specs, image_props in (
                ({'hw:tpm_version': '3', 'hw:tpm_foo': 'x'}, {}),
                ({'hw:tpm_version': '2.0'}, {'hw_tpm_model': 'bar'}),
                ({'hw:tpm_version': '2.0',
                  'hw:tpm_secret_security': 'bogus',
                  'keylime:attestation': 'nope'}, {})):
            nova = nova_outcome(flavor_specs, image_props, FLAVOR_NAME,
                                IMAGE_NAME)
            resolution = tpm.resolve(flavor_specs, image_props,
                                     flavor_name=FLAVOR_NAME,
                                     image_name=IMAGE_NAME)
            self.assertIsNotNone(nova.error)
            self.assertEqual(nova.error, resolution.errors[0])
            self.assertIsNone(resolution.vtpm)
