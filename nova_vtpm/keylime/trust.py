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

"""The CAs that may issue vTPM EK certificates.

A :class:`TrustStore` reads a directory of certificate files (PEM, one or
more certificates each; DER is accepted too), typically every compute
host's swtpm-localca root (``swtpm-localca-rootca-cert.pem``) and
intermediate (``issuercert.pem``), renamed so that they do not collide.

Self-signed CA certificates are the trust anchors (*roots*); the other CA
certificates are *intermediates*, used only to build a chain up to a root.
An intermediate whose root is missing therefore trusts nothing, unlike
Keylime's tenant, which trusts whatever certificate of its store signed the
EK certificate.

Every problem with a file (unreadable, not a certificate, not a CA) is
recorded in :attr:`TrustStore.errors` and the file is skipped: loading never
raises.
"""

import dataclasses
import os

from cryptography.hazmat.primitives import hashes
from cryptography import x509
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

# A store file larger than this is not a certificate bundle.
MAX_FILE_SIZE = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class TrustFileError:
    path: str
    reason: str

    def __str__(self):
        return '%s: %s' % (self.path, self.reason)


@dataclasses.dataclass(frozen=True)
class TrustedCert:
    """A CA certificate of the store and the file it came from."""

    cert: x509.Certificate
    path: str

    @property
    def subject(self):
        return self.cert.subject.rfc4514_string()

    @property
    def fingerprint(self):
        return self.cert.fingerprint(_SHA256).hex()


_SHA256 = hashes.SHA256()


def _is_self_signed(cert):
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:
        return False
    return True


def _ca_problem(cert):
    """Why ``cert`` cannot be a CA, or None."""
    try:
        bc = cert.extensions.get_extension_for_class(
            x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return 'not a CA certificate (no basicConstraints extension)'
    except ValueError as e:
        return 'unparsable extensions (%s)' % e
    if not bc.ca:
        return 'not a CA certificate (basicConstraints CA:FALSE)'
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not ku.key_cert_sign:
        return 'a CA certificate without the keyCertSign key usage'
    return None


def load_certificates(data):
    """All certificates in ``data`` (PEM, possibly several, or DER)."""
    if b'-----BEGIN' in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


class TrustStore:
    """The CA certificates of a directory.

    :ivar roots: the self-signed CA certificates (:class:`TrustedCert`).
    :ivar intermediates: the other CA certificates.
    :ivar errors: a :class:`TrustFileError` per skipped file or
        certificate.
    """

    def __init__(self, directory=None, certificates=()):
        """Load ``directory`` (may be None) and/or ``certificates``.

        :param certificates: ``(x509.Certificate, label)`` pairs, for
            callers that hold certificates rather than files.
        """
        self.directory = directory
        self._extra = list(certificates)
        self._signature = None
        self.roots = []
        self.intermediates = []
        self.errors = []
        self.load()

    def __repr__(self):
        return ('<TrustStore %s: %d root(s), %d intermediate(s), %d '
                'error(s)>' % (self.directory, len(self.roots),
                               len(self.intermediates), len(self.errors)))

    @property
    def empty(self):
        return not self.roots

    def _files(self):
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            self.errors.append(TrustFileError(
                self.directory, 'the EK trust directory does not exist; '
                'create it and put the compute hosts\' swtpm-localca '
                'certificates in it, or fix [nova_vtpm_keylime] '
                'ek_trust_dir'))
            return []
        except OSError as e:
            self.errors.append(TrustFileError(
                self.directory,
                'cannot read the EK trust directory: %s' % e))
            return []
        files = []
        for name in names:
            path = os.path.join(self.directory, name)
            if name.startswith('.') or not os.path.isfile(path):
                continue
            files.append(path)
        return files

    def signature(self):
        """What changes when a file of the directory changes."""
        if not self.directory:
            return ()
        sig = []
        try:
            entries = sorted(os.scandir(self.directory),
                             key=lambda e: e.name)
        except OSError:
            return None
        for entry in entries:
            try:
                st = entry.stat()
            except OSError:
                continue
            sig.append((entry.name, st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(sig)

    def reload_if_changed(self):
        """Reload when a file was added, removed or changed.

        :returns: True if the store was reloaded.
        """
        if self.signature() == self._signature:
            return False
        self.load()
        return True

    def load(self):
        self.roots, self.intermediates, self.errors = [], [], []
        self._signature = self.signature()
        seen = set()
        sources = []
        if self.directory:
            for path in self._files():
                sources.extend(self._read(path))
        sources.extend((cert, label) for cert, label in self._extra)
        for cert, label in sources:
            fingerprint = cert.fingerprint(_SHA256)
            if fingerprint in seen:
                continue
            seen.add(fingerprint)
            problem = _ca_problem(cert)
            if problem:
                self.errors.append(TrustFileError(
                    label, '%s (subject %s): skipped' % (
                        problem, cert.subject.rfc4514_string())))
                continue
            trusted = TrustedCert(cert, label)
            if _is_self_signed(cert):
                self.roots.append(trusted)
            else:
                self.intermediates.append(trusted)
        for error in self.errors:
            LOG.warning('EK trust store: %s', error)
        LOG.debug('%r', self)

    def _read(self, path):
        try:
            if os.path.getsize(path) > MAX_FILE_SIZE:
                self.errors.append(TrustFileError(
                    path, 'larger than %d bytes: not a certificate file, '
                    'skipped' % MAX_FILE_SIZE))
                return []
            with open(path, 'rb') as f:
                data = f.read()
        except OSError as e:
            self.errors.append(TrustFileError(
                path, 'cannot read: %s' % e))
            return []
        if b'PRIVATE KEY-----' in data:
            # Never parse or echo it; an operator copied the wrong file.
            self.errors.append(TrustFileError(
                path, 'holds a PRIVATE KEY: skipped. A trust directory '
                'needs certificates only: remove the file (and keep the '
                'CA key on its host)'))
            return []
        try:
            certs = load_certificates(data)
        except ValueError as e:
            self.errors.append(TrustFileError(
                path, 'not a PEM or DER X.509 certificate (%s): skipped'
                % str(e).split('. ')[0]))
            return []
        if not certs:
            self.errors.append(TrustFileError(
                path, 'holds no certificate: skipped'))
        if len(certs) == 1:
            return [(certs[0], path)]
        return [(cert, '%s[%d]' % (path, i)) for i, cert in enumerate(certs)]

    def describe(self):
        """One line per certificate, for an operator."""
        lines = []
        for kind, certs in (('root', self.roots),
                            ('intermediate', self.intermediates)):
            for trusted in certs:
                lines.append('%s %s (%s, sha256 %s)' % (
                    kind, trusted.subject, trusted.path,
                    trusted.fingerprint[:16]))
        lines.extend('error %s' % e for e in self.errors)
        return lines
