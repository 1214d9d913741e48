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

"""TPM (PCR) policies named by ``keylime:tpm_policy``.

Keylime's verifier takes a TPM policy as a JSON object mapping PCR numbers
to the digests each PCR may hold, plus a ``mask`` of the PCRs it quotes.
Operators define them once, by name, in ``[nova_vtpm_attestation]
tpm_policy_file``; flavors and images name them.
"""

import json
import re

from nova_vtpm import exception
from nova_vtpm import tpm

_HEX_DIGEST_RE = re.compile(r'(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64}|'
                            r'[0-9a-fA-F]{96}|[0-9a-fA-F]{128})')
_MASK_RE = re.compile(r'0x[0-9a-fA-F]{1,6}')
_POLICY_NAME_RE = re.compile(tpm.POLICY_NAME_PATTERN)
MAX_PCR = 23


def validate_tpm_policy(name, policy):
    """Check one TPM policy and return it in Keylime's form (mask set).

    :raises: ValueError with a message naming what is wrong.
    """
    if not _POLICY_NAME_RE.fullmatch(name):
        raise ValueError('policy name %r is not a valid policy name' % name)
    if not isinstance(policy, dict):
        raise ValueError('policy %r must be a JSON object, not %s' % (
            name, type(policy).__name__))
    mask = 0
    result = {}
    for key, value in policy.items():
        if key == 'mask':
            if not isinstance(value, str) or not _MASK_RE.fullmatch(value):
                raise ValueError(
                    'policy %r: mask must be a hex string such as "0x80", '
                    'not %r' % (name, value))
            continue
        if not key.isdigit() or int(key) > MAX_PCR:
            raise ValueError(
                'policy %r: %r is not a PCR number (0-%d) nor "mask"' % (
                    name, key, MAX_PCR))
        if (not isinstance(value, list) or not value or not all(
                isinstance(d, str) and _HEX_DIGEST_RE.fullmatch(d)
                for d in value)):
            raise ValueError(
                'policy %r: PCR %s must list one or more hex digests' % (
                    name, key))
        mask |= 1 << int(key)
        result[str(int(key))] = [d.lower() for d in value]
    if 'mask' in policy:
        declared = int(policy['mask'], 16)
        if declared & mask != mask:
            raise ValueError(
                'policy %r: mask %s leaves out PCRs the policy checks' % (
                    name, policy['mask']))
        mask = declared
    result['mask'] = hex(mask)
    return result


def load_tpm_policies(path):
    """Read and check a TPM policy file.

    :returns: a dict of policy name to Keylime TPM policy.
    :raises: nova_vtpm.exception.PolicyFileError, naming the problem.
    """
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except OSError as e:
        raise exception.PolicyFileError(path=path, reason=e.strerror or e)
    except (ValueError, UnicodeDecodeError) as e:
        raise exception.PolicyFileError(path=path,
                                        reason='not valid JSON (%s)' % e)
    if not isinstance(data, dict):
        raise exception.PolicyFileError(
            path=path, reason='the file must hold one JSON object of '
                              'policy names to policies')
    policies = {}
    for name, policy in data.items():
        try:
            policies[name] = validate_tpm_policy(name, policy)
        except ValueError as e:
            raise exception.PolicyFileError(path=path, reason=str(e))
    return policies
