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

"""The vTPM request model.

A server's vTPM is requested by flavor extra specs (``hw:tpm_*``) and image
properties (``hw_tpm_*``); its remote attestation by nova-vtpm's own keys
(``keylime:*`` on the flavor, ``keylime_*`` on the image).
:func:`resolve` turns both into a :class:`Resolution`:

* ``vtpm``: what Nova will give the server, resolved with Nova's own rules
  (``nova.virt.hardware.get_vtpm_constraint`` and the scheduler's
  ``tpm_secret_security_filter``), or ``None``;
* ``attestation``: the Keylime enrolment nova-vtpm will do, or ``None``;
* ``errors``: why the request cannot work. Errors Nova itself raises carry
  Nova's exact wording; Nova only raises them when the server is scheduled,
  so a bad flavor x image pair becomes an ERROR server. Resolving first turns
  that into an answer before the boot;
* ``warnings``: what Nova accepts silently but an operator wants to hear.

This module is pure Python and imports nothing from Nova, so that it can run
in offline tools and in every nova-vtpm service.
"""

import re

TPM_VERSIONS = ('1.2', '2.0')
TPM_MODELS = ('tpm-tis', 'tpm-crb')
SECRET_SECURITY_MODES = ('user', 'host', 'deployment')
ATTESTATION_MODES = ('required', 'optional', 'disabled')
POLICY_KINDS = ('tpm_policy', 'runtime_policy', 'mb_policy')
OS_TYPES = ('linux', 'windows')

DEFAULT_MODEL = 'tpm-tis'
DEFAULT_SECRET_SECURITY = 'user'
DEFAULT_ATTESTATION = 'disabled'

# The flavor extra specs Nova knows in the hw:tpm_ family, with their values.
NOVA_FLAVOR_KEYS = {
    'hw:tpm_version': TPM_VERSIONS,
    'hw:tpm_model': TPM_MODELS,
    'hw:tpm_secret_security': SECRET_SECURITY_MODES,
}
# Image properties Nova types as enums, in the order Nova's ImageMetaProps
# declares (and therefore checks) them. The first invalid one fails the boot.
NOVA_TYPED_IMAGE_PROPS = (
    ('hw_tpm_model', TPM_MODELS),
    ('hw_tpm_version', TPM_VERSIONS),
    ('os_type', OS_TYPES),
)

ATTESTATION_FLAVOR_KEYS = tuple(
    'keylime:' + key for key in ('attestation',) + POLICY_KINDS)
ATTESTATION_IMAGE_PROPS = tuple(
    'keylime_' + key for key in ('attestation',) + POLICY_KINDS)

# A policy name: what Keylime accepts as a runtime/mb policy name and what
# nova-vtpm accepts as a TPM policy name.
POLICY_NAME_PATTERN = r'[A-Za-z0-9][A-Za-z0-9._-]{0,254}'
_POLICY_NAME_RE = re.compile(POLICY_NAME_PATTERN)

# Where a problem comes from. ``nova``: Nova's own rule at boot/scheduling
# time, worded as Nova words it. ``nova-api``: what Nova's flavor API
# rejects from microversion 2.86 (older microversions store anything).
# ``nova-vtpm``: nova-vtpm's own rules and attestation keys.
SOURCE_NOVA = 'nova'
SOURCE_NOVA_API = 'nova-api'
SOURCE_NOVA_VTPM = 'nova-vtpm'

UNNAMED = '(unnamed)'


class VTPM:
    """The vTPM Nova creates for a server."""

    __slots__ = ('version', 'model', 'secret_security')

    def __init__(self, version, model, secret_security):
        self.version = version
        self.model = model
        self.secret_security = secret_security

    def to_dict(self):
        return {'version': self.version, 'model': self.model,
                'secret_security': self.secret_security}

    def __eq__(self, other):
        return isinstance(other, VTPM) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return 'VTPM(%r, %r, %r)' % (self.version, self.model,
                                     self.secret_security)


class Attestation:
    """The Keylime enrolment nova-vtpm does for a server."""

    __slots__ = ('mode',) + POLICY_KINDS

    def __init__(self, mode, tpm_policy=None, runtime_policy=None,
                 mb_policy=None):
        self.mode = mode
        self.tpm_policy = tpm_policy
        self.runtime_policy = runtime_policy
        self.mb_policy = mb_policy

    def to_dict(self):
        return {'mode': self.mode, 'tpm_policy': self.tpm_policy,
                'runtime_policy': self.runtime_policy,
                'mb_policy': self.mb_policy}

    def __eq__(self, other):
        return (isinstance(other, Attestation) and
                self.to_dict() == other.to_dict())

    def __repr__(self):
        return 'Attestation(%r)' % (self.to_dict(),)


class Problem:
    """One error found in a request, and which rule found it."""

    __slots__ = ('message', 'source')

    def __init__(self, message, source):
        self.message = message
        self.source = source

    def __repr__(self):
        return 'Problem(%r, %r)' % (self.message, self.source)

    def __str__(self):
        return self.message


class Resolution:
    """The outcome of :func:`resolve`."""

    __slots__ = ('vtpm', 'attestation', 'problems', 'warnings')

    def __init__(self, vtpm=None, attestation=None, problems=None,
                 warnings=None):
        self.vtpm = vtpm
        self.attestation = attestation
        self.problems = problems if problems is not None else []
        self.warnings = warnings if warnings is not None else []

    @property
    def errors(self):
        """Every error message, Nova's first."""
        return [p.message for p in self.problems]

    @property
    def ok(self):
        return not self.problems

    @property
    def nova_error(self):
        """The error Nova itself raises for this request, or None."""
        for problem in self.problems:
            if problem.source == SOURCE_NOVA:
                return problem.message
        return None

    def to_dict(self):
        """The JSON contract of ``nova-vtpm check --format json``."""
        return {
            'vtpm': self.vtpm.to_dict() if self.vtpm else None,
            'attestation': (self.attestation.to_dict()
                            if self.attestation else None),
            'errors': self.errors,
            'warnings': list(self.warnings),
        }


def _conflict(prefix, key, flavor_name, flavor_value, image_name,
              image_value):
    # Nova's wording (nova.virt.hardware._get_unique_flavor_image_meta).
    return (
        "Flavor %s has %s:%s extra spec explicitly set to %s, conflicting "
        "with image %s which has %s_%s explicitly set to %s." % (
            flavor_name, prefix, key, flavor_value, image_name, prefix, key,
            image_value))


def _nova_image_error(image_props):
    """Nova's error for image properties it cannot type, or None.

    Nova builds an ``ImageMeta`` object before anything else; an enum field
    with a value outside the enum fails the request with this message.
    """
    for name, allowed in NOVA_TYPED_IMAGE_PROPS:
        value = image_props.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            value = str(value)
        if name == 'os_type':
            # Nova canonicalises os_type to lower case before checking it.
            value = value.lower()
        if value not in allowed:
            return ('Invalid image metadata. Error: Field value %s is '
                    'invalid' % value)
    return None


def _resolve_vtpm(flavor_specs, image_props, flavor_name, image_name):
    """Nova's rules.

    :returns: (VTPM or None, Nova's error or None, the flavor key that error
        is about or None)
    """
    error = _nova_image_error(image_props)
    if error:
        return None, error, None

    flavor_version = flavor_specs.get('hw:tpm_version')
    image_version = image_props.get('hw_tpm_version')
    if image_version and flavor_version and image_version != flavor_version:
        return None, _conflict('hw', 'tpm_version', flavor_name,
                               flavor_version, image_name,
                               image_version), 'hw:tpm_version'
    version = flavor_version or image_version
    if version is None:
        return None, None, None
    if version not in TPM_VERSIONS:
        return None, ('Invalid TPM version %r. Allowed values: %s.' %
                      (version, ', '.join(TPM_VERSIONS))), 'hw:tpm_version'

    flavor_model = flavor_specs.get('hw:tpm_model')
    image_model = image_props.get('hw_tpm_model')
    if image_model and flavor_model and image_model != flavor_model:
        return None, _conflict('hw', 'tpm_model', flavor_name, flavor_model,
                               image_name, image_model), 'hw:tpm_model'
    model = flavor_model or image_model
    if model is None:
        model = DEFAULT_MODEL
    elif model not in TPM_MODELS:
        return None, ('Invalid TPM model %r. Allowed values: %s.' %
                      (model, ', '.join(TPM_MODELS))), 'hw:tpm_model'
    elif model == 'tpm-crb' and version != '2.0':
        return (None, 'TPM model CRB is only valid with TPM version 2.0.',
                None)

    security = (flavor_specs.get('hw:tpm_secret_security') or
                DEFAULT_SECRET_SECURITY)
    if security not in SECRET_SECURITY_MODES:
        return None, ("TPM secret security '%s' is not supported." %
                      security), 'hw:tpm_secret_security'
    return VTPM(version, model, security), None, None


def _flavor_api_problems(flavor_specs, reported_key):
    """What Nova's flavor API rejects (microversion 2.86 and later).

    Only reported where Nova's boot-time rules did not already say it
    (``reported_key``), so that one bad value gives one error.
    """
    problems = []
    for key, value in flavor_specs.items():
        if not key.startswith('hw:tpm_'):
            continue
        allowed = NOVA_FLAVOR_KEYS.get(key)
        if allowed is None:
            problems.append(Problem(
                "Validation failed; extra spec '%s' does not appear to be a "
                "valid extra spec." % key, SOURCE_NOVA_API))
        elif value not in allowed and key != reported_key:
            problems.append(Problem(
                "Validation failed; '%s' is not one of: %s." % (
                    value, ', '.join(allowed)), SOURCE_NOVA_API))
    return problems


def _vtpm_warnings(flavor_specs, image_props, vtpm, nova_error):
    warnings = []
    has_version = bool(flavor_specs.get('hw:tpm_version') or
                       image_props.get('hw_tpm_version'))
    if not has_version and not nova_error:
        for key, value in (('hw:tpm_model', flavor_specs.get('hw:tpm_model')),
                           ('hw_tpm_model', image_props.get('hw_tpm_model'))):
            if value:
                warnings.append(
                    '%s=%s is set but no TPM version is requested '
                    '(hw:tpm_version or hw_tpm_version): Nova silently '
                    'creates no vTPM for this server.' % (key, value))
        security = flavor_specs.get('hw:tpm_secret_security')
        if security:
            warnings.append(
                'hw:tpm_secret_security=%s has no effect: no TPM version is '
                'requested, so Nova creates no vTPM.' % security)
        if flavor_specs.get('hw:tpm_version') == '':
            warnings.append(
                'hw:tpm_version is set to an empty string: Nova treats it as '
                'unset and creates no vTPM.')
    for key in image_props:
        if key.startswith('hw_tpm_') and key not in (
                'hw_tpm_version', 'hw_tpm_model'):
            if key == 'hw_tpm_secret_security':
                warnings.append(
                    'Image property hw_tpm_secret_security is ignored by '
                    'Nova on purpose (it would lock the mode in, since '
                    'rebuild is refused): set hw:tpm_secret_security on the '
                    'flavor instead.')
            else:
                warnings.append(
                    'Image property %s is not a Nova vTPM property and is '
                    'ignored.' % key)
    if vtpm is None:
        return warnings
    os_type = image_props.get('os_type')
    if (vtpm.version == '1.2' and isinstance(os_type, str) and
            os_type.lower() == 'windows'):
        warnings.append(
            'The image is os_type=windows but the vTPM is TPM 1.2: Windows '
            '11 and Windows Server 2022 and later require TPM 2.0.')
    if vtpm.secret_security == 'user':
        warnings.append(
            "TPM secret security 'user'%s: Nova refuses to live-migrate this "
            "server, and only its owner can resize or cold-migrate it (the "
            "secret lives in the owner's Barbican project). Use 'host' for "
            "live-migratable vTPMs." % (
                '' if flavor_specs.get('hw:tpm_secret_security')
                else ' (the default)'))
    elif vtpm.secret_security == 'deployment':
        warnings.append(
            "TPM secret security 'deployment': Nova refuses to live-migrate "
            "this server and to resize it to or from another secret "
            "security mode.")
    return warnings


def _resolve_attestation(flavor_specs, image_props, flavor_name, image_name,
                         vtpm, nova_error, default_mode, tpm_policies):
    problems = []
    warnings = []

    for key in flavor_specs:
        if key.startswith('keylime:') and key not in ATTESTATION_FLAVOR_KEYS:
            problems.append(Problem(
                "Validation failed; extra spec '%s' does not appear to be a "
                "valid extra spec." % key, SOURCE_NOVA_VTPM))
    for key in image_props:
        if key.startswith('keylime_') and key not in ATTESTATION_IMAGE_PROPS:
            warnings.append(
                'Image property %s is not a nova-vtpm attestation property '
                'and is ignored (known: %s).' % (
                    key, ', '.join(ATTESTATION_IMAGE_PROPS)))

    values = {}
    explicit = {}
    unusable = set()
    for key in ('attestation',) + POLICY_KINDS:
        fkey = 'keylime:' + key
        ikey = 'keylime_' + key
        flavor_value = flavor_specs.get(fkey)
        image_value = image_props.get(ikey)
        if (flavor_value and image_value and flavor_value != image_value):
            problems.append(Problem(
                _conflict('keylime', key, flavor_name, flavor_value,
                          image_name, image_value), SOURCE_NOVA_VTPM))
            values[key] = None
            unusable.add(key)
            continue
        value = flavor_value or image_value
        source = fkey if flavor_value else ikey
        if not value:
            values[key] = None
            continue
        if key == 'attestation':
            if value not in ATTESTATION_MODES:
                problems.append(Problem(
                    'Invalid attestation mode %r (%s). Allowed values: '
                    '%s.' % (value, source, ', '.join(ATTESTATION_MODES)),
                    SOURCE_NOVA_VTPM))
                value = None
                unusable.add(key)
        elif not _POLICY_NAME_RE.fullmatch(value):
            problems.append(Problem(
                'Invalid policy name %r (%s): a policy name is 1 to 255 '
                "letters, digits, '.', '_' or '-', starting with a letter or "
                'a digit.' % (value, source), SOURCE_NOVA_VTPM))
            value = None
        elif (key == 'tpm_policy' and tpm_policies is not None and
              value not in tpm_policies):
            problems.append(Problem(
                'TPM policy %r (%s) is not defined in the nova-vtpm TPM '
                'policy file; defined policies: %s.' % (
                    value, source, ', '.join(sorted(tpm_policies)) or
                    'none'), SOURCE_NOVA_VTPM))
            value = None
        values[key] = value
        explicit[key] = source

    mode = values['attestation']
    policies = {k: values[k] for k in POLICY_KINDS}
    is_tpm2 = vtpm is not None and vtpm.version == '2.0'
    if mode is None:
        if 'attestation' in unusable:
            # An explicit but unusable mode: reported above.
            return None, problems, warnings
        if not is_tpm2:
            # The default mode only ever applies to TPM 2.0 vTPMs.
            if any(policies.values()):
                warnings.append(
                    'Keylime policies are set (%s) but the server has no '
                    'TPM 2.0 vTPM and no attestation mode: they have no '
                    'effect.' % ', '.join(
                        explicit[k] for k in POLICY_KINDS if policies[k]))
            return None, problems, warnings
        mode = default_mode

    if mode == 'disabled':
        if any(policies.values()):
            warnings.append(
                'Keylime policies are set (%s) but attestation is disabled: '
                'they have no effect.' % ', '.join(
                    explicit[k] for k in POLICY_KINDS if policies[k]))
        return None, problems, warnings

    if not is_tpm2 and not nova_error:
        what = ('a TPM 1.2 vTPM' if vtpm is not None else 'no vTPM')
        if mode == 'required':
            problems.append(Problem(
                'Attestation is required (%s=required) but the server gets '
                '%s: Keylime attests TPM 2.0 only. Set hw:tpm_version=2.0 on '
                'the flavor or hw_tpm_version=2.0 on the image.' % (
                    explicit.get('attestation', 'keylime:attestation'),
                    what), SOURCE_NOVA_VTPM))
            return Attestation(mode, **policies), problems, warnings
        warnings.append(
            'Attestation is optional (%s=optional) but the server gets %s: '
            'it will not be attested (Keylime attests TPM 2.0 only).' % (
                explicit.get('attestation', 'keylime:attestation'), what))
        return None, problems, warnings
    if nova_error:
        return None, problems, warnings
    return Attestation(mode, **policies), problems, warnings


def _as_str_mapping(mapping, what, problems):
    """Keep the string items; report the others (they cannot be specs)."""
    clean = {}
    for key, value in (mapping or {}).items():
        if isinstance(key, str) and isinstance(value, str):
            clean[key] = value
        else:
            problems.append(Problem(
                '%s %r=%r: keys and values must be strings.' % (
                    what, key, value), SOURCE_NOVA_VTPM))
    return clean


def resolve(flavor_specs, image_props=None, flavor_name=None,
            image_name=None, default_attestation=DEFAULT_ATTESTATION,
            tpm_policies=None):
    """Resolve a flavor x image pair into what Nova and nova-vtpm will do.

    :param flavor_specs: the flavor's extra specs (a mapping of strings).
    :param image_props: the image's properties (a mapping of strings).
    :param flavor_name: the flavor's name, for messages.
    :param image_name: the image's name, for messages.
    :param default_attestation: the attestation mode of a TPM 2.0 server
        whose flavor and image do not choose one.
    :param tpm_policies: the names of the TPM policies nova-vtpm knows, or
        None not to check ``tpm_policy`` names against a list.
    :returns: a :class:`Resolution`; this function never raises on bad
        input: every problem is in the result.
    """
    if default_attestation not in ATTESTATION_MODES:
        raise ValueError('default_attestation must be one of %s, not %r' % (
            ', '.join(ATTESTATION_MODES), default_attestation))
    problems = []
    flavor_specs = _as_str_mapping(flavor_specs, 'Flavor extra spec',
                                   problems)
    image_props = _as_str_mapping(image_props, 'Image property', problems)
    flavor_name = flavor_name or UNNAMED
    image_name = image_name or UNNAMED

    vtpm, nova_error, reported_key = _resolve_vtpm(
        flavor_specs, image_props, flavor_name, image_name)
    if nova_error:
        problems.insert(0, Problem(nova_error, SOURCE_NOVA))
    problems.extend(_flavor_api_problems(flavor_specs, reported_key))
    warnings = _vtpm_warnings(flavor_specs, image_props, vtpm, nova_error)
    attestation, att_problems, att_warnings = _resolve_attestation(
        flavor_specs, image_props, flavor_name, image_name, vtpm,
        nova_error, default_attestation, tpm_policies)
    problems.extend(att_problems)
    warnings.extend(att_warnings)
    return Resolution(vtpm, attestation, problems, warnings)
