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

from oslo_config import cfg

from nova_vtpm.conf import groups
from nova_vtpm import tpm

GROUP_NAME = 'nova_vtpm_attestation'

attestation_group = cfg.OptGroup(
    GROUP_NAME,
    title='nova-vtpm attestation options',
    help="""
How nova-vtpm decides whether and how a server with a vTPM is enrolled for
remote attestation with Keylime.
""")

ATTESTATION_OPTS = [
    cfg.StrOpt(
        'default_mode',
        default=tpm.DEFAULT_ATTESTATION,
        choices=[
            ('required', 'Every TPM 2.0 server is attested; one that cannot '
                         'be enrolled gets the configured failure action.'),
            ('optional', 'Every TPM 2.0 server is enrolled when its guest '
                         'registers with Keylime; no action when it does '
                         'not.'),
            ('disabled', 'Only servers whose flavor or image ask for '
                         'attestation are attested.'),
        ],
        help="""
Attestation mode of a TPM 2.0 server whose flavor (``keylime:attestation``)
and image (``keylime_attestation``) do not choose one.

Servers without a TPM 2.0 vTPM are never attested by default.

Related options:

* ``tpm_policy_file``
"""),
    cfg.StrOpt(
        'tpm_policy_file',
        help="""
A JSON file that defines the TPM (PCR) policies a flavor or image can name
with ``keylime:tpm_policy`` / ``keylime_tpm_policy``.

The file holds one object whose keys are policy names and whose values are
Keylime TPM policies, for example::

    {"boot": {"mask": "0x80", "7": ["<sha256 hex digest>"]},
     "none": {}}

Possible values:

* unset: policy names are checked for their format only;
* the path of a readable JSON file: names must be defined in it.
"""),
]


def register_opts(conf):
    conf.register_group(groups.fresh(attestation_group))
    conf.register_opts(ATTESTATION_OPTS, group=GROUP_NAME)


def list_opts():
    return {attestation_group: ATTESTATION_OPTS}
