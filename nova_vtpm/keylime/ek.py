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

"""Is a registered Keylime agent the vTPM of a given instance?

The registrar checks that the EK the TPM proved (``ek_tpm``) matches the EK
certificate, nothing more; Keylime's tenant then checks the certificate
against a directory of CAs, one level deep, and nothing compares the
certificate with the agent UUID. A guest can therefore register under
another instance's UUID with its own, validly issued EK certificate, and
be attested as that instance.

:func:`verify_ek` closes that gap. The EK certificate must:

1. chain, through intermediates of the :class:`~nova_vtpm.keylime.trust.
   TrustStore`, to one of its self-signed roots, with valid signatures and
   validity dates at every level (RFC 5280 path validation by
   ``cryptography``'s verifier; several CAs with the same name, as every
   swtpm-localca has, are fine);
2. name the instance: its subject CN is what libvirt passes to
   ``swtpm_setup --vmid``, ``<domain name>:<instance uuid>``;
3. hold the public key the registrar saw the TPM prove (``ek_tpm``, a
   ``TPM2B_PUBLIC``; RSA modulus and exponent, or ECC curve and point).

Every failed check adds a reason to the :class:`EKVerdict`; ``ok`` only if
there is none.
"""

import base64
import binascii
import dataclasses
import datetime
import struct
import uuid as uuidlib

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.x509 import verification

# Chains longer than this are not vTPM CAs.
MAX_CHAIN_DEPTH = 4

TPM_ALG_RSA = 0x0001
TPM_ALG_NULL = 0x0010
TPM_ALG_ECC = 0x0023
TPM_ALG_ECDAA = 0x001A
# Asymmetric schemes without details (TPMS_EMPTY).
_EMPTY_SCHEMES = frozenset((TPM_ALG_NULL, 0x0015))   # NULL, RSAES
TPM_ECC_CURVES = {
    0x0001: ec.SECP192R1,
    0x0002: ec.SECP224R1,
    0x0003: ec.SECP256R1,
    0x0004: ec.SECP384R1,
    0x0005: ec.SECP521R1,
}


@dataclasses.dataclass
class EKVerdict:
    """The outcome of :func:`verify_ek`.

    :ivar ok: every check passed.
    :ivar reasons: why not, one sentence each.
    :ivar subject: the EK certificate's subject, when it could be read.
    :ivar chain: the subjects from the EK certificate up to the root.
    """

    ok: bool
    reasons: list = dataclasses.field(default_factory=list)
    subject: str = None
    chain: list = dataclasses.field(default_factory=list)

    def __bool__(self):
        return self.ok

    def __str__(self):
        if self.ok:
            return 'EK trusted: %s' % ' <- '.join(self.chain)
        return 'EK refused: %s' % ' '.join(self.reasons)


class TPMPublicError(ValueError):
    """A TPM2B_PUBLIC that cannot be parsed."""


class _Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise TPMPublicError('truncated at byte %d (need %d more)'
                                 % (self.pos, n))
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u16(self):
        return struct.unpack('>H', self.take(2))[0]

    def u32(self):
        return struct.unpack('>I', self.take(4))[0]

    def tpm2b(self):
        return self.take(self.u16())


def public_key_from_tpm2b_public(data):
    """The RSA or ECC public key in a ``TPM2B_PUBLIC``.

    :param data: the structure, bytes (with its 2-byte size).
    :returns: a ``cryptography`` public key.
    :raises TPMPublicError: not a well-formed RSA/ECC TPM2B_PUBLIC.
    """
    outer = _Reader(data)
    size = outer.u16()
    if size != len(data) - 2:
        raise TPMPublicError('size field %d does not match the %d bytes '
                             'that follow' % (size, len(data) - 2))
    r = _Reader(outer.take(size))
    alg = r.u16()
    r.u16()          # nameAlg
    r.u32()          # objectAttributes
    r.tpm2b()        # authPolicy
    # TPMT_SYM_DEF_OBJECT: algorithm [keyBits mode]
    if r.u16() != TPM_ALG_NULL:
        r.u16()
        r.u16()
    if alg == TPM_ALG_RSA:
        scheme = r.u16()
        if scheme not in _EMPTY_SCHEMES:
            r.u16()      # hashAlg
        r.u16()          # keyBits
        exponent = r.u32() or 65537
        modulus = r.tpm2b()
        if not modulus:
            raise TPMPublicError('empty RSA modulus')
        key = rsa.RSAPublicNumbers(
            exponent, int.from_bytes(modulus, 'big')).public_key()
    elif alg == TPM_ALG_ECC:
        scheme = r.u16()
        if scheme not in _EMPTY_SCHEMES:
            r.u16()      # hashAlg
            if scheme == TPM_ALG_ECDAA:
                r.u16()  # count
        curve_id = r.u16()
        if r.u16() != TPM_ALG_NULL:   # kdf scheme
            r.u16()
        x = r.tpm2b()
        y = r.tpm2b()
        curve = TPM_ECC_CURVES.get(curve_id)
        if curve is None:
            raise TPMPublicError('unsupported ECC curve 0x%04x' % curve_id)
        try:
            key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, 'big'), int.from_bytes(y, 'big'),
                curve()).public_key()
        except ValueError as e:
            raise TPMPublicError('invalid ECC point: %s' % e)
    else:
        raise TPMPublicError('not an RSA or ECC key (type 0x%04x)' % alg)
    if r.pos != len(r.data):
        raise TPMPublicError('%d unexpected trailing bytes'
                             % (len(r.data) - r.pos))
    return key


def _same_public_key(a, b):
    if isinstance(a, rsa.RSAPublicKey) and isinstance(b, rsa.RSAPublicKey):
        return a.public_numbers() == b.public_numbers()
    if (isinstance(a, ec.EllipticCurvePublicKey)
            and isinstance(b, ec.EllipticCurvePublicKey)):
        return (a.curve.name == b.curve.name
                and a.public_numbers() == b.public_numbers())
    return False


def load_ek_certificate(ek_cert):
    """Load an EK certificate.

    :param ek_cert: PEM or DER bytes, PEM text or base64 DER text (what
        the registrar returns as ``ekcert``).

    :raises ValueError: none of these.
    """
    if isinstance(ek_cert, str):
        text = ek_cert.strip()
        if text.startswith('-----BEGIN'):
            return x509.load_pem_x509_certificate(text.encode('ascii'))
        try:
            ek_cert = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError('neither PEM nor base64 DER: %s' % e)
    if ek_cert.lstrip().startswith(b'-----BEGIN'):
        return x509.load_pem_x509_certificate(ek_cert)
    return x509.load_der_x509_certificate(ek_cert)


def _cn(cert):
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return [n.value for n in names]


def _check_binding(cert, instance_uuid, reasons):
    try:
        wanted = uuidlib.UUID(str(instance_uuid))
    except ValueError:
        reasons.append('%r is not an instance UUID.' % (instance_uuid,))
        return
    cns = _cn(cert)
    if len(cns) != 1:
        reasons.append(
            'The EK certificate subject %s has %d common names; a vTPM EK '
            'certificate has one, "<domain name>:<instance uuid>".'
            % (cert.subject.rfc4514_string(), len(cns)))
        return
    cn = cns[0]
    _, sep, tail = cn.rpartition(':')
    try:
        found = uuidlib.UUID(tail) if sep else None
    except ValueError:
        found = None
    if found is None:
        reasons.append(
            'The EK certificate subject CN "%s" does not end in an instance '
            'UUID (expected "<domain name>:%s", as libvirt passes to '
            'swtpm_setup --vmid): it is not the vTPM of instance %s.'
            % (cn, wanted, wanted))
    elif found != wanted:
        reasons.append(
            'The EK certificate belongs to instance %s (CN "%s"), not to '
            'instance %s: a guest registered under another instance\'s '
            'UUID.' % (found, cn, wanted))


def _check_dates(cert, now, reasons):
    before = cert.not_valid_before_utc
    after = cert.not_valid_after_utc
    if now < before:
        reasons.append('The EK certificate is not valid before %s (now %s): '
                       'check the clocks.' % (before.isoformat(),
                                              now.isoformat()))
    elif now > after:
        reasons.append('The EK certificate expired on %s.'
                       % after.isoformat())


def _ca_validator(policy, cert, ext):
    if ext is None or not ext.ca:
        raise ValueError('issuer is not a CA (basicConstraints)')


def _ca_key_usage(policy, cert, ext):
    if ext is not None and not ext.key_cert_sign:
        raise ValueError('issuer lacks keyCertSign')


def _ee_validator(policy, cert, ext):
    if ext is not None and ext.ca:
        raise ValueError('the EK certificate is a CA certificate')


def _extension_policies():
    """CA and EK policies for cryptography's path validation.

    The Web PKI defaults do not fit EK certificates (no DNS names, the EK
    certificate EKU 2.23.133.8.1, a critical directoryName SAN): the EK
    (leaf) certificate may carry any extension, but must not be a CA; the
    CAs must be CAs (basicConstraints CA:TRUE, keyCertSign if key usage
    is given). Signatures, validity dates and path length are always
    checked.
    """
    ep = verification.ExtensionPolicy
    crit = verification.Criticality.AGNOSTIC
    ca = ep.permit_all().require_present(
        x509.BasicConstraints, crit, _ca_validator).may_be_present(
        x509.KeyUsage, crit, _ca_key_usage)
    ee = ep.permit_all().may_be_present(
        x509.BasicConstraints, crit, _ee_validator)
    return ca, ee


def _check_chain(cert, trust_store, now, reasons):
    if trust_store is None or trust_store.empty:
        where = getattr(trust_store, 'directory', None) or 'unset'
        reasons.append(
            'The EK trust store (%s) has no root CA certificate, so no EK '
            'certificate can be trusted: put each compute host\'s '
            'swtpm-localca-rootca-cert.pem and issuercert.pem in '
            '[nova_vtpm_keylime] ek_trust_dir.' % where)
        return []
    if not hasattr(verification.PolicyBuilder, 'extension_policies'):
        reasons.append('EK certificate chains cannot be checked with this '
                       'cryptography release: nova-vtpm needs '
                       'cryptography >= 45.')
        return []
    ca_policy, ee_policy = _extension_policies()
    builder = (verification.PolicyBuilder()
               .store(verification.Store(
                   [t.cert for t in trust_store.roots]))
               .time(now)
               .max_chain_depth(MAX_CHAIN_DEPTH)
               .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy))
    try:
        verified = builder.build_client_verifier().verify(
            cert, [t.cert for t in trust_store.intermediates])
    except verification.VerificationError as e:
        reasons.append(
            'The EK certificate (issuer %s) does not chain to a trusted '
            'root CA of %s: %s. If its compute host is legitimate, add that '
            'host\'s swtpm-localca root and issuercert.pem to the EK trust '
            'directory.' % (cert.issuer.rfc4514_string(),
                            trust_store.directory or 'the trust store', e))
        return []
    return [c.subject.rfc4514_string() for c in verified.chain]


def _check_key(cert, registrar_ek_tpm, reasons):
    if not registrar_ek_tpm:
        reasons.append('The registrar returned no ek_tpm (the EK the TPM '
                       'proved): the EK certificate cannot be tied to the '
                       'TPM.')
        return
    try:
        data = registrar_ek_tpm
        if isinstance(data, str):
            data = base64.b64decode(data, validate=True)
        tpm_key = public_key_from_tpm2b_public(data)
    except (binascii.Error, ValueError) as e:
        reasons.append('The registrar\'s ek_tpm is not a base64 RSA/ECC '
                       'TPM2B_PUBLIC: %s.' % e)
        return
    try:
        cert_key = cert.public_key()
    except ValueError as e:
        reasons.append('The EK certificate\'s public key cannot be read: '
                       '%s.' % e)
        return
    if not _same_public_key(tpm_key, cert_key):
        reasons.append('The EK certificate\'s public key is not the EK the '
                       'TPM proved to the registrar (ek_tpm): the '
                       'certificate is not this TPM\'s.')


def verify_ek(ek_cert, registrar_ek_tpm, instance_uuid, trust_store,
              now=None):
    """Whether an agent's EK is the vTPM EK of instance ``instance_uuid``.

    :param ek_cert: the EK certificate: PEM/DER bytes, PEM text or the
        registrar's base64 DER ``ekcert``.
    :param registrar_ek_tpm: the registrar's ``ek_tpm`` (base64
        TPM2B_PUBLIC, or its bytes).
    :param instance_uuid: the instance the agent registered for.
    :param trust_store: a :class:`~nova_vtpm.keylime.trust.TrustStore`.
    :param now: the validation time (aware datetime), default: now.
    :returns: an :class:`EKVerdict`.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    reasons = []
    if not ek_cert:
        return EKVerdict(False, [
            'The agent registered no EK certificate: the vTPM must have one '
            '(swtpm_setup --create-ek-cert, which libvirt runs).'])
    try:
        cert = load_ek_certificate(ek_cert)
    except (TypeError, ValueError) as e:
        return EKVerdict(False, [
            'The EK certificate cannot be parsed: %s.' % e])
    try:
        subject = cert.subject.rfc4514_string()
    except ValueError as e:
        return EKVerdict(False, [
            'The EK certificate subject cannot be read: %s.' % e])
    _check_binding(cert, instance_uuid, reasons)
    date_reasons = []
    _check_dates(cert, now, date_reasons)
    reasons.extend(date_reasons)
    chain = []
    if not date_reasons:
        # (The verifier would only repeat a date problem of the EK
        # certificate itself, less clearly.)
        chain = _check_chain(cert, trust_store, now, reasons)
    _check_key(cert, registrar_ek_tpm, reasons)
    return EKVerdict(not reasons, reasons, subject, chain)
