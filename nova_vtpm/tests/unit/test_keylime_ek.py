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

"""EK verification and the EK trust store, on certificates made here.

The CAs mimic swtpm-localca: every host's root is "CN=swtpm-localca-rootca"
and its intermediate "CN=swtpm-localca", so only keys tell hosts apart.
"""

import base64
import datetime
import os
import struct
import uuid

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography import x509
from cryptography.x509.oid import NameOID
import fixtures
from oslotest import base

from nova_vtpm.keylime import ek
from nova_vtpm.keylime import trust

UTC = datetime.timezone.utc
NOW = datetime.datetime.now(UTC)
DAY = datetime.timedelta(days=1)
EK_CERT_OID = x509.ObjectIdentifier('2.23.133.8.1')

# A real swtpm 0.7.1 EK (RSA 2048) as the Keylime registrar returned it:
# ek_tpm (TPM2B_PUBLIC) and ekcert (DER), CN=vm-a:3b082e1f-...
REAL_EK_TPM = (
    'AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgA'
    'AAAAAAEAtBt3f9QLmFrevNr2pf929XV09+3IPHwlPljdSccOK8066KahT79AuPfwqNvP8bic'
    'HN5EfGz7v7LpelD0VeU7IZHZvcAxARUF9WRm6uq7WYoqWHQHDPLOaCvpgO5D/Z+ueVYNsGOA'
    'wXD7KYZcMk7/V3BOJ5d1SZnq36BALftj3P28VTRddkwswAMeXeDP0nc0Zl+sEyZoKy7tKYuS'
    'IwByY6vFnsLbmyBwIoeDqck2K+Csd1XfEq9ynTMZ1gdT6iJaWgRyadKGWZhYXpvwSvNrEewh'
    'g8cpRUWGhilpGe/PBw+NvRtw9U8l5VqrJpuRSLLGGfehNf7d1a6IoD56CTK9Iw==')
REAL_EK_CERT = (
    'MIIEFjCCAn6gAwIBAgIBAjANBgkqhkiG9w0BAQsFADAYMRYwFAYDVQQDEw1zd3RwbS1sb2Nh'
    'bGNhMCAXDTI2MTIwNDIxMTIzMFoYDzk5OTkxMjMxMjM1OTU5WjA0MTIwMAYDVQQDEyl2bS1h'
    'OjNiMDgyZTFmLTRlNWMtNDAzOC1hN2JlLTUzMzA2ZDA4ZDVlNzCCASIwDQYJKoZIhvcNAQEB'
    'BQADggEPADCCAQoCggEBALQbd3/UC5ha3rza9qX/dvV1dPftyDx8JT5Y3UnHDivNOuimoU+/'
    'QLj38Kjbz/G4nBzeRHxs+7+y6XpQ9FXlOyGR2b3AMQEVBfVkZurqu1mKKlh0Bwzyzmgr6YDu'
    'Q/2frnlWDbBjgMFw+ymGXDJO/1dwTieXdUmZ6t+gQC37Y9z9vFU0XXZMLMADHl3gz9J3NGZf'
    'rBMmaCsu7SmLkiMAcmOrxZ7C25sgcCKHg6nJNivgrHdV3xKvcp0zGdYHU+oiWloEcmnShlmY'
    'WF6b8ErzaxHsIYPHKUVFhoYpaRnvzwcPjb0bcPVPJeVaqyabkUiyxhn3oTX+3dWuiKA+egky'
    'vSMCAwEAAaOBzDCByTAQBgNVHSUECTAHBgVngQUIATBSBgNVHREBAf8ESDBGpEQwQjEWMBQG'
    'BWeBBQIBDAtpZDowMDAwMTAxNDEQMA4GBWeBBQICDAVzd3RwbTEWMBQGBWeBBQIDDAtpZDoy'
    'MDE5MTAyMzAMBgNVHRMBAf8EAjAAMCIGA1UdCQQbMBkwFwYFZ4EFAhAxDjAMDAMyLjACAQAC'
    'AgCkMB8GA1UdIwQYMBaAFFGr/wBWbAs8F3WEZEf+gfeSbRXkMA4GA1UdDwEB/wQEAwIFIDAN'
    'BgkqhkiG9w0BAQsFAAOCAYEA2WFJw/ZNMLS8DoJkfnkAx1yhn7GDrd3n1KXJNv8cEABmG5wY'
    'CABzfegDQkEqfRMgCUwHSt9S7JiS3P6dqMOx14oVF3tCZF/1PFwdGqkQwfyqXcSNnRU4poDX'
    'xDhEXZafyQOgJXBW6uyiulUb+tQ5anZ6XhO3qU0l7kYoge55WmFXxrKBgv6GPNYyhuUnKeLr'
    'hNVOU5tloyqRa140amDX2L7lq5H+zYXi8eT45D/wT2HwBul7U9yFUb9UJoBT/8hBVNN9Qcwq'
    '51lGzOW+y1TUApihIffgZGJ2ZUWzVD9ta2AfWaRG/i2LvoY0PAHqdhq8RouM60gVo+OLwvMo'
    '2hQpQpZXwTBZIynwcxQie/3GbaOAxyBVGqqO6Ncg2qSeENospDRWT25q5uFJy5tIio+0glm6'
    'm8J4IHQAvj8N8wC8PBVMnoAv50x2Q76rVmPPhgqNj4RM/Do7paxQvEZvLHIJV3NlhoLvIrAG'
    'RQLgL5WbjoeGiVDMaCIV8btywUErIsSF')
REAL_EK_UUID = '3b082e1f-4e5c-4038-a7be-53306d08d5e7'

# Keys are slow to make: a few, shared by every test.
_RSA_EK = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_RSA_EK2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_EC_EK = ec.generate_private_key(ec.SECP256R1())


def _ca_key():
    return ec.generate_private_key(ec.SECP384R1())


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, public_key, issuer_name, issuer_key, ca, not_before=None,
          not_after=None, extensions=True, key_usage=True):
    builder = (x509.CertificateBuilder()
               .subject_name(subject if isinstance(subject, x509.Name)
                             else _name(subject))
               .issuer_name(issuer_name)
               .public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before or NOW - DAY)
               .not_valid_after(not_after or NOW + 3650 * DAY))
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if ca:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key),
            critical=False)
        if key_usage:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False,
                key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=False,
                encipher_only=False, decipher_only=False), critical=True)
    elif extensions:
        # As swtpm writes them: EK certificate EKU, a critical directory
        # name SAN (TPM manufacturer/model/version), key encipherment.
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([EK_CERT_OID]), critical=False)
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DirectoryName(x509.Name([
                x509.NameAttribute(x509.ObjectIdentifier('2.23.133.2.1'),
                                   'id:00001014'),
                x509.NameAttribute(x509.ObjectIdentifier('2.23.133.2.2'),
                                   'swtpm'),
                x509.NameAttribute(x509.ObjectIdentifier('2.23.133.2.3'),
                                   'id:20191023')]))]), critical=True)
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False,
            key_encipherment=True, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


class HostCA:
    """A compute host's swtpm-localca: root -> intermediate."""

    def __init__(self, root_not_after=None, inter_not_after=None):
        self.root_key = _ca_key()
        self.root = _cert('swtpm-localca-rootca', self.root_key.public_key(),
                          _name('swtpm-localca-rootca'), self.root_key, True,
                          not_after=root_not_after)
        self.key = _ca_key()
        self.intermediate = _cert('swtpm-localca', self.key.public_key(),
                                  self.root.subject, self.root_key, True,
                                  not_after=inter_not_after)

    def ek_cert(self, cn, key=_RSA_EK, **kwargs):
        return _cert(cn, key.public_key(), self.intermediate.subject,
                     self.key, False, **kwargs)

    def install(self, directory, prefix):
        for cert, suffix in ((self.root, 'rootca.pem'),
                             (self.intermediate, 'issuercert.pem')):
            _write(os.path.join(directory, '%s-%s' % (prefix, suffix)),
                   cert.public_bytes(serialization.Encoding.PEM))


def _write(path, data):
    with open(path, 'wb') as f:
        f.write(data)


def tpm2b_rsa(key):
    """A TPM2B_PUBLIC like the TCG default RSA 2048 EK template's."""
    numbers = key.public_key().public_numbers()
    modulus = numbers.n.to_bytes(256, 'big')
    exponent = 0 if numbers.e == 65537 else numbers.e
    body = (struct.pack('>HHI', 0x0001, 0x000B, 0x000300B2)
            + struct.pack('>H', 32) + b'\x83' * 32
            + struct.pack('>HHH', 0x0006, 128, 0x0043)    # AES-128 CFB
            + struct.pack('>H', 0x0010)                   # scheme NULL
            + struct.pack('>HI', 2048, exponent)
            + struct.pack('>H', len(modulus)) + modulus)
    return struct.pack('>H', len(body)) + body


def tpm2b_ecc(key, scheme=0x0010, curve=0x0003):
    numbers = key.public_key().public_numbers()
    x = numbers.x.to_bytes(32, 'big')
    y = numbers.y.to_bytes(32, 'big')
    scheme_bytes = struct.pack('>H', scheme)
    if scheme == 0x001A:                  # ECDAA: hashAlg, count
        scheme_bytes += struct.pack('>HH', 0x000B, 1)
    elif scheme != 0x0010:
        scheme_bytes += struct.pack('>H', 0x000B)
    body = (struct.pack('>HHI', 0x0023, 0x000B, 0x000300B2)
            + struct.pack('>H', 0)
            + struct.pack('>HHH', 0x0006, 128, 0x0043)
            + scheme_bytes
            + struct.pack('>H', curve)
            + struct.pack('>H', 0x0010)                   # kdf NULL
            + struct.pack('>H', 32) + x + struct.pack('>H', 32) + y)
    return struct.pack('>H', len(body)) + body


def b64(data):
    return base64.b64encode(data).decode('ascii')


def der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


class TPMPublicTest(base.BaseTestCase):

    def test_rsa(self):
        key = ek.public_key_from_tpm2b_public(tpm2b_rsa(_RSA_EK))
        self.assertEqual(_RSA_EK.public_key().public_numbers(),
                         key.public_numbers())

    def test_rsa_explicit_exponent(self):
        data = bytearray(tpm2b_rsa(_RSA_EK))
        # exponent field: after size(2) type nameAlg attrs(8) policy(34)
        # sym(6) scheme(2) keyBits(2)
        offset = 2 + 8 + 34 + 6 + 2 + 2
        data[offset:offset + 4] = struct.pack('>I', 65537)
        key = ek.public_key_from_tpm2b_public(bytes(data))
        self.assertEqual(65537, key.public_numbers().e)

    def test_ecc(self):
        key = ek.public_key_from_tpm2b_public(tpm2b_ecc(_EC_EK))
        self.assertEqual(_EC_EK.public_key().public_numbers(),
                         key.public_numbers())

    def test_ecc_with_ecdaa_and_ecdsa_schemes(self):
        for scheme in (0x001A, 0x0018):
            key = ek.public_key_from_tpm2b_public(
                tpm2b_ecc(_EC_EK, scheme=scheme))
            self.assertEqual(_EC_EK.public_key().public_numbers(),
                             key.public_numbers())

    def test_real_swtpm_ek(self):
        key = ek.public_key_from_tpm2b_public(base64.b64decode(REAL_EK_TPM))
        cert = ek.load_ek_certificate(REAL_EK_CERT)
        self.assertEqual(cert.public_key().public_numbers(),
                         key.public_numbers())
        self.assertEqual(2048, key.key_size)

    def test_malformed(self):
        good = tpm2b_rsa(_RSA_EK)
        cases = {
            'truncated': good[:100],
            'size': struct.pack('>H', 5) + good[2:],
            'trailing': struct.pack('>H', len(good)) + good[2:] + b'\0\0',
            'empty': b'',
        }
        for name, data in cases.items():
            self.assertRaises(ek.TPMPublicError,
                              ek.public_key_from_tpm2b_public, data)
        keyedhash = bytearray(good)
        keyedhash[2:4] = struct.pack('>H', 0x0008)
        e = self.assertRaises(ek.TPMPublicError,
                              ek.public_key_from_tpm2b_public,
                              bytes(keyedhash))
        self.assertIn('not an RSA or ECC key', str(e))
        e = self.assertRaises(ek.TPMPublicError,
                              ek.public_key_from_tpm2b_public,
                              tpm2b_ecc(_EC_EK, curve=0x0010))
        self.assertIn('unsupported ECC curve 0x0010', str(e))
        # A point that is not on the curve.
        bad = bytearray(tpm2b_ecc(_EC_EK))
        bad[-1] ^= 1
        self.assertRaises(ek.TPMPublicError,
                          ek.public_key_from_tpm2b_public, bytes(bad))


class VerifyEKTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.host1 = HostCA()
        self.host2 = HostCA()
        self.trust_dir = self.useFixture(fixtures.TempDir()).path
        self.host1.install(self.trust_dir, 'host1')
        self.store = trust.TrustStore(self.trust_dir)
        self.uuid = str(uuid.uuid4())
        self.cert = self.host1.ek_cert('instance-0001:%s' % self.uuid)
        self.ek_tpm = b64(tpm2b_rsa(_RSA_EK))

    def verify(self, cert=None, ek_tpm=None, instance=None, store=None,
               **kwargs):
        return ek.verify_ek(b64(der(cert or self.cert)),
                            ek_tpm or self.ek_tpm, instance or self.uuid,
                            store or self.store, **kwargs)

    def assertRefused(self, verdict, *fragments):
        self.assertFalse(verdict.ok, verdict)
        self.assertFalse(verdict)
        text = ' '.join(verdict.reasons)
        for fragment in fragments:
            self.assertIn(fragment, text)
        self.assertTrue(str(verdict).startswith('EK refused: '))

    def test_good_chain(self):
        verdict = self.verify()
        self.assertTrue(verdict.ok, verdict)
        self.assertTrue(verdict)
        self.assertEqual([], verdict.reasons)
        self.assertEqual(['CN=instance-0001:%s' % self.uuid,
                          'CN=swtpm-localca', 'CN=swtpm-localca-rootca'],
                         verdict.chain)
        self.assertEqual('CN=instance-0001:%s' % self.uuid, verdict.subject)

    def test_certificate_forms(self):
        for form in (der(self.cert), pem(self.cert),
                     pem(self.cert).decode('ascii'), b64(der(self.cert))):
            verdict = ek.verify_ek(form, base64.b64decode(self.ek_tpm),
                                   self.uuid, self.store)
            self.assertTrue(verdict.ok, verdict)

    def test_uuid_case_and_form(self):
        self.assertTrue(self.verify(instance=self.uuid.upper()).ok)
        self.assertTrue(self.verify(
            instance=uuid.UUID(self.uuid).hex).ok)

    def test_wrong_cn_uuid(self):
        other = str(uuid.uuid4())
        verdict = self.verify(instance=other)
        self.assertRefused(verdict, 'belongs to instance %s' % self.uuid,
                           'not to instance %s' % other)
        self.assertEqual(1, len(verdict.reasons))

    def test_cn_without_uuid(self):
        for cn in ('instance-0001', 'instance-0001:not-a-uuid',
                   self.uuid + ':x'):
            cert = self.host1.ek_cert(cn)
            self.assertRefused(self.verify(cert=cert),
                               'does not end in an instance UUID')

    def test_bare_uuid_cn_refused(self):
        # libvirt always passes "<name>:<uuid>"; a bare UUID has no ':'.
        self.assertRefused(self.verify(cert=self.host1.ek_cert(self.uuid)),
                           'does not end in an instance UUID')

    def test_two_common_names(self):
        subject = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, 'a:%s' % self.uuid),
            x509.NameAttribute(NameOID.COMMON_NAME, 'b:%s' % self.uuid)])
        self.assertRefused(self.verify(cert=self.host1.ek_cert(subject)),
                           'has 2 common names')

    def test_not_an_instance_uuid(self):
        self.assertRefused(self.verify(instance='nope'),
                           "'nope' is not an instance UUID")

    def test_untrusted_ca_with_the_same_names(self):
        cert = self.host2.ek_cert('vm:%s' % self.uuid)
        self.assertRefused(self.verify(cert=cert),
                           'does not chain to a trusted root CA',
                           'issuer CN=swtpm-localca',
                           self.trust_dir)

    def test_several_hosts(self):
        self.host2.install(self.trust_dir, 'host2')
        store = trust.TrustStore(self.trust_dir)
        self.assertEqual(2, len(store.roots))
        for host in (self.host1, self.host2):
            cert = host.ek_cert('vm:%s' % self.uuid)
            self.assertTrue(self.verify(cert=cert, store=store).ok)

    def test_intermediate_without_its_root_trusts_nothing(self):
        directory = self.useFixture(fixtures.TempDir()).path
        _write(os.path.join(directory, 'issuercert.pem'),
               pem(self.host1.intermediate))
        store = trust.TrustStore(directory)
        self.assertTrue(store.empty)
        self.assertRefused(self.verify(store=store),
                           'has no root CA certificate')
        # ...nor with another host's root beside it.
        self.host2.install(directory, 'host2')
        self.assertRefused(self.verify(store=trust.TrustStore(directory)),
                           'does not chain')

    def test_root_without_intermediate(self):
        directory = self.useFixture(fixtures.TempDir()).path
        _write(os.path.join(directory, 'root.pem'), pem(self.host1.root))
        self.assertRefused(self.verify(store=trust.TrustStore(directory)),
                           'does not chain')

    def test_empty_or_missing_store(self):
        for store in (None, trust.TrustStore(None),
                      trust.TrustStore('/nonexistent/ek-trust')):
            self.assertRefused(self.verify(store=store) if store else
                               ek.verify_ek(der(self.cert), self.ek_tpm,
                                            self.uuid, None),
                               'has no root CA certificate')

    def test_expired(self):
        cert = self.host1.ek_cert('vm:%s' % self.uuid,
                                  not_before=NOW - 10 * DAY,
                                  not_after=NOW - DAY)
        verdict = self.verify(cert=cert)
        self.assertRefused(verdict, 'The EK certificate expired on')
        self.assertEqual(1, len(verdict.reasons))

    def test_not_yet_valid(self):
        cert = self.host1.ek_cert('vm:%s' % self.uuid,
                                  not_before=NOW + DAY)
        self.assertRefused(self.verify(cert=cert), 'is not valid before',
                           'check the clocks')

    def test_validation_time(self):
        later = NOW + 4000 * DAY
        self.assertRefused(self.verify(now=later), 'expired')

    def test_expired_intermediate(self):
        host = HostCA(inter_not_after=NOW - DAY / 2)
        directory = self.useFixture(fixtures.TempDir()).path
        host.install(directory, 'old')
        cert = host.ek_cert('vm:%s' % self.uuid)
        self.assertRefused(
            self.verify(cert=cert, store=trust.TrustStore(directory)),
            'does not chain', 'not valid at validation time')

    def test_ek_tpm_mismatch(self):
        verdict = self.verify(ek_tpm=b64(tpm2b_rsa(_RSA_EK2)))
        self.assertRefused(verdict, 'not the EK the TPM proved')
        self.assertEqual(1, len(verdict.reasons))
        self.assertRefused(self.verify(ek_tpm=b64(tpm2b_ecc(_EC_EK))),
                           'not the EK the TPM proved')

    def test_ek_tpm_missing_or_garbage(self):
        verdict = ek.verify_ek(der(self.cert), None, self.uuid, self.store)
        self.assertRefused(verdict, 'returned no ek_tpm')
        self.assertRefused(self.verify(ek_tpm='not base64!'),
                           'not a base64 RSA/ECC TPM2B_PUBLIC')
        self.assertRefused(self.verify(ek_tpm=b64(b'\x00\x02ab')),
                           'not a base64 RSA/ECC TPM2B_PUBLIC')

    def test_ecc_ek(self):
        cert = self.host1.ek_cert('vm:%s' % self.uuid, key=_EC_EK)
        verdict = self.verify(cert=cert, ek_tpm=b64(tpm2b_ecc(_EC_EK)))
        self.assertTrue(verdict.ok, verdict)

    def test_ek_cert_without_extensions(self):
        # Vendor EK certificates differ: no EKU, no SAN is fine.
        cert = self.host1.ek_cert('vm:%s' % self.uuid, extensions=False)
        self.assertTrue(self.verify(cert=cert).ok)

    def test_ek_cert_that_is_a_ca_is_refused(self):
        cert = _cert('vm:%s' % self.uuid, _RSA_EK.public_key(),
                     self.host1.intermediate.subject, self.host1.key, True)
        self.assertRefused(self.verify(cert=cert), 'does not chain')

    def test_non_ca_issuer_is_refused(self):
        # An intermediate without basicConstraints CA:TRUE cannot issue.
        key = _ca_key()
        fake = _cert('swtpm-localca', key.public_key(),
                     self.host1.root.subject, self.host1.root_key, None)
        cert = _cert('vm:%s' % self.uuid, _RSA_EK.public_key(), fake.subject,
                     key, False)
        directory = self.useFixture(fixtures.TempDir()).path
        self.host1.install(directory, 'host1')
        _write(os.path.join(directory, 'fake.pem'), pem(fake))
        store = trust.TrustStore(directory)
        self.assertIn('not a CA certificate', str(store.errors))
        self.assertRefused(self.verify(cert=cert, store=store),
                           'does not chain')

    def test_several_reasons(self):
        verdict = self.verify(instance=str(uuid.uuid4()),
                              ek_tpm=b64(tpm2b_rsa(_RSA_EK2)))
        self.assertEqual(2, len(verdict.reasons), verdict.reasons)

    def test_unparsable_certificate(self):
        for bad in (b'-----BEGIN CERTIFICATE-----\nxx\n-----END '
                    b'CERTIFICATE-----\n', b'\x30\x03abc', '%%%',
                    'bm90IGEgY2VydA=='):
            self.assertRefused(ek.verify_ek(bad, self.ek_tpm, self.uuid,
                                            self.store),
                               'cannot be parsed')

    def test_no_certificate(self):
        for nothing in (None, b'', ''):
            self.assertRefused(ek.verify_ek(nothing, self.ek_tpm, self.uuid,
                                            self.store),
                               'registered no EK certificate')

    def test_real_swtpm_certificate_binding(self):
        # Without its CA only the binding and key checks can pass.
        verdict = ek.verify_ek(REAL_EK_CERT, REAL_EK_TPM, REAL_EK_UUID,
                               self.store)
        self.assertRefused(verdict, 'does not chain')
        self.assertEqual(1, len(verdict.reasons), verdict.reasons)


class TrustStoreTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.host = HostCA()
        self.logger = self.useFixture(fixtures.FakeLogger(level='DEBUG'))

    def test_roots_and_intermediates(self):
        self.host.install(self.dir, 'h1')
        store = trust.TrustStore(self.dir)
        self.assertEqual([], store.errors)
        self.assertEqual([self.host.root], [t.cert for t in store.roots])
        self.assertEqual([self.host.intermediate],
                         [t.cert for t in store.intermediates])
        self.assertFalse(store.empty)
        lines = store.describe()
        self.assertEqual(2, len(lines))
        self.assertTrue(lines[0].startswith('root CN=swtpm-localca-rootca'))

    def test_bundle_der_duplicates_and_ignored_entries(self):
        _write(os.path.join(self.dir, 'bundle.pem'),
               pem(self.host.root) + pem(self.host.intermediate))
        _write(os.path.join(self.dir, 'root.der'), der(self.host.root))
        _write(os.path.join(self.dir, '.hidden.pem'), b'garbage')
        os.mkdir(os.path.join(self.dir, 'subdir'))
        store = trust.TrustStore(self.dir)
        self.assertEqual([], store.errors)
        self.assertEqual(1, len(store.roots))
        self.assertEqual(1, len(store.intermediates))
        self.assertIn('bundle.pem[0]', store.roots[0].path)

    def test_bad_files_are_reported_and_skipped(self):
        self.host.install(self.dir, 'h1')
        _write(os.path.join(self.dir, 'garbage.pem'), b'not a certificate')
        _write(os.path.join(self.dir, 'broken.pem'),
               b'-----BEGIN CERTIFICATE-----\nAAAA\n'
               b'-----END CERTIFICATE-----\n')
        _write(os.path.join(self.dir, 'empty.pem'), b'')
        key_pem = self.host.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        _write(os.path.join(self.dir, 'signkey.pem'), key_pem)
        leaf = self.host.ek_cert('vm:%s' % uuid.uuid4())
        _write(os.path.join(self.dir, 'leaf.pem'), pem(leaf))
        store = trust.TrustStore(self.dir)
        self.assertEqual(1, len(store.roots))
        self.assertEqual(1, len(store.intermediates))
        errors = {os.path.basename(e.path): e.reason for e in store.errors}
        self.assertEqual({'garbage.pem', 'broken.pem', 'empty.pem',
                          'signkey.pem', 'leaf.pem'}, set(errors))
        self.assertIn('holds a PRIVATE KEY', errors['signkey.pem'])
        self.assertIn('not a CA certificate', errors['leaf.pem'])
        self.assertIn('not a PEM or DER', errors['garbage.pem'])
        # The key itself is never echoed, not even in logs.
        key_body = key_pem.decode().splitlines()[1]
        self.assertNotIn(key_body, self.logger.output)
        self.assertNotIn(key_body, str(store.errors))
        self.assertIn('holds a PRIVATE KEY', self.logger.output)

    def test_ca_without_cert_sign(self):
        key = _ca_key()
        cert = _cert('odd-root', key.public_key(), _name('odd-root'), key,
                     True, key_usage=False)
        _write(os.path.join(self.dir, 'ok.pem'), pem(cert))
        # KeyUsage absent is allowed; present without keyCertSign is not.
        self.assertEqual(1, len(trust.TrustStore(self.dir).roots))
        ku = x509.KeyUsage(
            digital_signature=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False)
        bad = (x509.CertificateBuilder().subject_name(_name('bad'))
               .issuer_name(_name('bad')).public_key(key.public_key())
               .serial_number(1).not_valid_before(NOW - DAY)
               .not_valid_after(NOW + DAY)
               .add_extension(x509.BasicConstraints(ca=True,
                                                    path_length=None), True)
               .add_extension(ku, True).sign(key, hashes.SHA256()))
        _write(os.path.join(self.dir, 'bad.pem'), pem(bad))
        store = trust.TrustStore(self.dir)
        self.assertIn('without the keyCertSign', str(store.errors))

    def test_missing_directory_does_not_raise(self):
        store = trust.TrustStore(os.path.join(self.dir, 'nope'))
        self.assertTrue(store.empty)
        self.assertEqual(1, len(store.errors))
        self.assertIn('does not exist', store.errors[0].reason)
        self.assertIn('ek_trust_dir', store.errors[0].reason)

    def test_oversized_file(self):
        _write(os.path.join(self.dir, 'huge.pem'),
               b'x' * (trust.MAX_FILE_SIZE + 1))
        store = trust.TrustStore(self.dir)
        self.assertIn('larger than', store.errors[0].reason)

    def test_reload_if_changed(self):
        store = trust.TrustStore(self.dir)
        self.assertTrue(store.empty)
        self.assertFalse(store.reload_if_changed())
        self.host.install(self.dir, 'h1')
        self.assertTrue(store.reload_if_changed())
        self.assertEqual(1, len(store.roots))
        self.assertFalse(store.reload_if_changed())
        os.unlink(os.path.join(self.dir, 'h1-rootca.pem'))
        self.assertTrue(store.reload_if_changed())
        self.assertTrue(store.empty)

    def test_certificates_argument(self):
        store = trust.TrustStore(certificates=[
            (self.host.root, 'root'), (self.host.intermediate, 'inter')])
        self.assertEqual(['root'], [t.path for t in store.roots])
        self.assertEqual(['inter'], [t.path for t in store.intermediates])
