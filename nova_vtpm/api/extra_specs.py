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

"""Extra spec validators for nova-vtpm's ``keylime:`` keys.

nova-api loads this module through the ``nova.api.extra_spec_validators``
entry point and calls :func:`register`. Nova keeps its validators in a dict
keyed by name, where the last one loaded wins, so this module only ever
registers names in the ``keylime:`` namespace and never one of Nova's own
(``hw:tpm_*`` stays Nova's). Registering a namespace also makes Nova refuse
unknown keys in it, so a typo such as ``keylime:attest`` is a 400 and not a
silently ignored spec.
"""

from nova_vtpm import tpm

_DESCRIPTIONS = {
    'tpm_policy': (
        'The name of the TPM (PCR) policy the Keylime verifier enforces, as '
        'defined in nova-vtpm\'s [nova_vtpm_attestation] tpm_policy_file.'),
    'runtime_policy': (
        'The name of a runtime (IMA) policy stored in the Keylime verifier.'),
    'mb_policy': (
        'The name of a measured boot policy stored in the Keylime verifier.'),
}


def _validators():
    # Imported here: this module is only ever loaded inside nova-api, and
    # the rest of nova-vtpm must import without Nova installed.
    from nova.api.validation.extra_specs import base

    validators = [
        base.ExtraSpecValidator(
            name='keylime:attestation',
            description=(
                'Whether nova-vtpm enrols the server with the Keylime '
                'verifier for remote attestation. "required" needs a TPM 2.0 '
                'vTPM (hw:tpm_version=2.0). Provided by nova-vtpm.'),
            value={
                'type': str,
                'description': 'An attestation mode.',
                'enum': list(tpm.ATTESTATION_MODES),
            },
        ),
    ]
    for kind in tpm.POLICY_KINDS:
        validators.append(base.ExtraSpecValidator(
            name='keylime:' + kind,
            description=_DESCRIPTIONS[kind] + ' Provided by nova-vtpm.',
            value={
                'type': str,
                'description': 'A policy name.',
                'pattern': tpm.POLICY_NAME_PATTERN,
            },
        ))
    return validators


def register():
    """Return nova-vtpm's extra spec validators (called by nova-api)."""
    return _validators()
