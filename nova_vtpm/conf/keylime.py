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

GROUP_NAME = 'nova_vtpm_keylime'

keylime_group = cfg.OptGroup(
    GROUP_NAME,
    title='nova-vtpm Keylime enrolment options',
    help="""
How nova-vtpm reaches the Keylime registrar and verifier, decides whether a
registered agent really is the vTPM of an instance, and what it does when an
instance cannot be enrolled or fails attestation.

nova-vtpm talks to both services over HTTPS with mutual TLS; the server
certificates are always verified.
""")

KEYLIME_OPTS = [
    cfg.URIOpt(
        'registrar_url',
        schemes=['https'],
        help="""
The Keylime registrar's TLS endpoint, e.g. ``https://registrar:8891``
(the registrar's ``tls_port``, not the plain HTTP port its agents use).
"""),
    cfg.URIOpt(
        'verifier_url',
        schemes=['https'],
        help="""
The Keylime verifier's endpoint, e.g. ``https://verifier:8881``.
"""),
    cfg.HostAddressOpt(
        'verifier_ip',
        help="""
The verifier address sent with each added agent (the verifier records it).
Unset: the host of ``verifier_url``.
"""),
    cfg.PortOpt(
        'verifier_port',
        help="""
The verifier port sent with each added agent. Unset: the port of
``verifier_url``.
"""),
    cfg.StrOpt(
        'verifier_id',
        help="""
The verifier's ``[verifier] uuid``, when several verifiers share one
database: nova-vtpm then lists only this verifier's agents. Unset: all.
"""),
    cfg.StrOpt(
        'cert_file',
        help="""
PEM client certificate nova-vtpm presents to the registrar and verifier
(e.g. the ``client-cert.crt`` in the verifier's ``cv_ca`` directory).
"""),
    cfg.StrOpt(
        'key_file',
        help="""
PEM private key of ``cert_file`` (a path; the key itself is never logged).
"""),
    cfg.StrOpt(
        'key_password',
        secret=True,
        help="""
Password of ``key_file`` when the key is encrypted.
"""),
    cfg.StrOpt(
        'ca_file',
        help="""
PEM bundle of the CAs that sign the registrar's and verifier's server
certificates (e.g. ``cacert.crt`` in the verifier's ``cv_ca``). Unset: the
system's CAs. The certificates must name the hosts of the URLs.
"""),
    cfg.FloatOpt(
        'timeout',
        default=30.0,
        min=1.0,
        help='Seconds to connect to, and then to wait for, a Keylime '
             'service.'),
    cfg.IntOpt(
        'retries',
        default=3,
        min=0,
        help="""
Further attempts of a Keylime call after a connection error, a timeout or a
5xx answer, with exponential backoff. Past them the hook retries the event
later.
"""),
    cfg.FloatOpt(
        'retry_backoff',
        default=0.5,
        min=0.0,
        help='Seconds before the first retry of a Keylime call, doubled at '
             'each further one (at most 30).'),
    cfg.StrOpt(
        'ek_trust_dir',
        help="""
Directory of PEM CA certificates that may issue vTPM EK certificates: for
each compute host, its swtpm-localca root (``swtpm-localca-rootca-cert.pem``)
and intermediate (``issuercert.pem``), under distinct file names. An EK
certificate must chain to a self-signed root in this directory, through
intermediates from it. Every compute host has its own CA, and a server
keeps the EK certificate of the host it was created on after a migration:
the directory needs the CAs of all compute hosts.

Unset: EK certificates cannot be trusted and no instance is enrolled.
"""),
    cfg.IntOpt(
        'registration_deadline',
        default=600,
        min=0,
        help="""
Seconds after a server became ACTIVE within which its guest's Keylime agent
must register. Past the deadline, a server whose attestation is required
gets the ``failure_action``.
"""),
    cfg.StrOpt(
        'failure_action',
        default='tag',
        choices=[
            ('none', 'Only record and log the failure.'),
            ('lock', 'Lock the server (admin lock).'),
            ('pause', 'Pause the server.'),
            ('stop', 'Stop (power off) the server.'),
            ('tag', 'Add the tag ``keylime-attestation-failed`` to the '
                    'server.'),
        ],
        help="""
What nova-vtpm does to a server whose attestation is required when it
cannot be enrolled (no registration before the deadline, an EK that is not
its vTPM's) or when the verifier reports a failed attestation.
"""),
    cfg.StrOpt(
        'agent_network',
        help="""
Name of the Nova network whose fixed address of the server the verifier
uses to reach the guest's agent. Unset: the address the agent registered
with (which a guest chooses itself).
"""),
    cfg.PortOpt(
        'agent_port',
        default=9002,
        help="""
Port of the guest's agent when it registered none.
"""),
    cfg.StrOpt(
        'agent_api_version',
        default='2.1',
        help="""
Agent REST API version the verifier starts with. The verifier moves to a
newer version the agent supports by itself, never to an older one: keep the
oldest version the guests' agents speak.
"""),
    cfg.StrOpt(
        'default_tpm_policy',
        default='{}',
        help="""
Keylime TPM (PCR) policy, as JSON, for a server whose flavor and image name
none: ``{"<pcr>": ["<digest>", ...]}``. ``{}`` checks no PCR (quotes are
still verified).
"""),
    cfg.StrOpt(
        'default_runtime_policy_name',
        default='',
        help="""
Name of an IMA runtime policy stored on the verifier, for servers whose
flavor and image name none. Empty: no runtime policy.
"""),
    cfg.StrOpt(
        'default_mb_policy_name',
        default='',
        help="""
Name of a measured boot policy stored on the verifier, for servers whose
flavor and image name none. Empty: none.
"""),
    cfg.ListOpt(
        'accept_tpm_hash_algs',
        default=['sha512', 'sha384', 'sha256'],
        help='Hash algorithms the verifier accepts from the vTPMs.'),
    cfg.ListOpt(
        'accept_tpm_encryption_algs',
        default=['ecc', 'rsa'],
        help='Encryption algorithms the verifier accepts from the vTPMs.'),
    cfg.ListOpt(
        'accept_tpm_signing_algs',
        default=['ecschnorr', 'rsassa'],
        help='Signing algorithms the verifier accepts from the vTPMs.'),
]


def register_opts(conf):
    conf.register_group(groups.fresh(keylime_group))
    conf.register_opts(KEYLIME_OPTS, group=GROUP_NAME)


def list_opts():
    return {keylime_group: KEYLIME_OPTS}
