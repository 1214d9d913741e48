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

"""``nova-vtpm ca export``: this compute host's vTPM EK certificate CA.

libvirt has ``swtpm_setup`` create each vTPM's EK certificate, signed by the
host's swtpm-localca: an intermediate (``issuercert``, ``CN=swtpm-localca``)
under a self-signed root (``swtpm-localca-rootca-cert.pem``), both in the
``statedir`` of ``/etc/swtpm-localca.conf``. Every host has its own. The
keylime hook on the controller trusts an EK certificate only if it chains to
a root in ``[nova_vtpm_keylime] ek_trust_dir``: this command prints or writes
the two certificates named after the host, ``<host>-root.pem`` and
``<host>-issuer.pem``, so that one directory holds every host's.

Only certificates are read and written: never ``signingkey`` nor the root's
private key. ``--create`` creates the CA when the host has none yet (swtpm
creates it at the first vTPM otherwise), with ``swtpm_localca`` itself, as
the owner of the state directory.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography import x509

from nova_vtpm.cmd import common

DEFAULT_LOCALCA_CONF = '/etc/swtpm-localca.conf'
DEFAULT_STATEDIR = '/var/lib/swtpm-localca'
ROOT_CERT_NAME = 'swtpm-localca-rootca-cert.pem'
ISSUER_CERT_NAME = 'issuercert.pem'
SWTPM_LOCALCA = 'swtpm_localca'

_HOST_RE = re.compile(r'[^A-Za-z0-9._-]')


class CAError(Exception):
    """The CA cannot be read or created; the message says why and how."""


def parse_localca_conf(path):
    """The ``key = value`` settings of a swtpm-localca.conf."""
    settings = {}
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith('#') or '=' not in line:
                continue
            key, value = line.split('=', 1)
            settings[key.strip()] = value.strip()
    return settings


class LocalCA:
    """Where a host's swtpm-localca keeps its certificates.

    :param conf_path: its swtpm-localca.conf.
    """

    def __init__(self, conf_path=DEFAULT_LOCALCA_CONF):
        self.conf_path = conf_path
        try:
            settings = parse_localca_conf(conf_path)
        except FileNotFoundError:
            raise CAError('%s does not exist: is swtpm (swtpm-tools) '
                          'installed on this host? Name another file with '
                          '--localca-conf.' % conf_path)
        except OSError as e:
            raise CAError('cannot read %s: %s' % (conf_path, e))
        self.settings = settings
        self.statedir = settings.get('statedir') or DEFAULT_STATEDIR
        self.issuer_path = settings.get('issuercert') or os.path.join(
            self.statedir, ISSUER_CERT_NAME)
        self.root_path = os.path.join(self.statedir, ROOT_CERT_NAME)
        self.signingkey = settings.get('signingkey')

    @property
    def exists(self):
        return (os.path.exists(self.root_path) and
                os.path.exists(self.issuer_path))

    def create(self, swtpm_localca=SWTPM_LOCALCA, timeout=60):
        """Create the CA, as swtpm does at its first EK certificate.

        Runs ``swtpm_localca`` for a throw-away EK certificate (a random
        RSA key that is no TPM's) and deletes that certificate. The files
        swtpm_localca writes get the owner of the state directory, so that
        libvirt's swtpm user can go on using the CA.

        :returns: False if the CA existed already.
        """
        if self.exists:
            return False
        if not shutil.which(swtpm_localca):
            raise CAError('%s is not installed: install swtpm-tools'
                          % swtpm_localca)
        os.makedirs(self.statedir, mode=0o750, exist_ok=True)
        modulus = os.urandom(256).hex()
        with tempfile.TemporaryDirectory(prefix='nova-vtpm-ca-') as tmp:
            cmd = [swtpm_localca, '--type', 'ek', '--ek', modulus,
                   '--dir', tmp, '--vmid', 'nova-vtpm-ca-init', '--tpm2',
                   '--configfile', self.conf_path,
                   '--tpm-spec-family', '2.0', '--tpm-spec-revision', '146',
                   '--tpm-spec-level', '0',
                   '--tpm-manufacturer', 'id:00001014',
                   '--tpm-model', 'swtpm', '--tpm-version', 'id:20191023',
                   '--decryption']
            options = os.path.join(os.path.dirname(self.conf_path),
                                   'swtpm-localca.options')
            if os.path.exists(options):
                cmd[cmd.index('--configfile'):
                    cmd.index('--configfile')] = ['--optsfile', options]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=timeout)
            except (OSError, subprocess.SubprocessError) as e:
                raise CAError('%s failed: %s' % (swtpm_localca, e))
            if proc.returncode:
                raise CAError('%s failed (exit %d): %s' % (
                    swtpm_localca, proc.returncode,
                    (proc.stderr or proc.stdout).strip()))
        self._chown_like_statedir()
        if not self.exists:
            raise CAError('%s ran but %s and %s are not there: check %s'
                          % (swtpm_localca, self.root_path,
                             self.issuer_path, self.conf_path))
        return True

    def _chown_like_statedir(self):
        if os.geteuid() != 0:
            return
        st = os.stat(self.statedir)
        for name in os.listdir(self.statedir):
            path = os.path.join(self.statedir, name)
            try:
                os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)
            except OSError:
                pass

    def certificates(self, host):
        """[(file name, x509.Certificate, PEM bytes)]: root, issuer."""
        if not self.exists:
            raise CAError(
                'this host has no swtpm-localca yet (%s and %s are missing; '
                'swtpm creates them with the first vTPM): run again with '
                '--create to create it now' % (self.root_path,
                                               self.issuer_path))
        result = []
        for path, suffix in ((self.root_path, 'root'),
                             (self.issuer_path, 'issuer')):
            cert = _read_certificate(path)
            result.append(('%s-%s.pem' % (safe_host(host), suffix), cert,
                           cert.public_bytes(serialization.Encoding.PEM)))
        root, issuer = result[0][1], result[1][1]
        try:
            issuer.verify_directly_issued_by(root)
        except Exception:
            raise CAError('%s is not signed by %s: the swtpm-localca state '
                          'is inconsistent' % (self.issuer_path,
                                               self.root_path))
        return result


def _read_certificate(path):
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except PermissionError:
        raise CAError('cannot read %s: permission denied (run as root or as '
                      'the owner of the swtpm-localca state directory)'
                      % path)
    except OSError as e:
        raise CAError('cannot read %s: %s' % (path, e))
    if b'PRIVATE KEY' in data:
        # Never echo it.
        raise CAError('%s holds a private key, not a certificate: check the '
                      'swtpm-localca configuration' % path)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise CAError('%s is not a PEM certificate: %s' % (path, e))
    if len(certs) != 1:
        raise CAError('%s holds %d certificates, expected one'
                      % (path, len(certs)))
    return certs[0]


def safe_host(host):
    """A host name usable in a file name."""
    name = _HOST_RE.sub('_', host or '').strip('.')
    if not name:
        raise CAError('no usable host name: give one with --host')
    return name


def describe(name, cert):
    return {
        'file': name,
        'subject': cert.subject.rfc4514_string(),
        'issuer': cert.issuer.rfc4514_string(),
        'sha256': cert.fingerprint(hashes.SHA256()).hex(),
        'not_after': cert.not_valid_after_utc.isoformat(),
    }


def write_atomic(path, data, mode=0o644):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path),
                               dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def add_parser(subparsers):
    parser = subparsers.add_parser(
        'ca', help="This host's vTPM EK certificate CA (swtpm-localca).",
        description="The swtpm-localca certificates that sign this compute "
                    "host's vTPM EK certificates, for the controller's EK "
                    "trust directory ([nova_vtpm_keylime] ek_trust_dir).")
    sub = parser.add_subparsers(dest='action', metavar='ACTION')
    sub.required = True
    p = sub.add_parser(
        'export', help='Print or write the root and issuer certificates.',
        description='Print (default) or write (--output-dir) the '
                    'swtpm-localca root and intermediate certificates of '
                    'this host, as <host>-root.pem and <host>-issuer.pem. '
                    'Private keys are never read.')
    p.add_argument('--output-dir', metavar='DIR',
                   help='Write the files into DIR (created if needed; '
                        'existing files of this host are replaced).')
    p.add_argument('--host',
                   help='The host name in the file names (default: '
                        '[nova_vtpm_agent] host).')
    p.add_argument('--localca-conf', default=DEFAULT_LOCALCA_CONF,
                   metavar='PATH',
                   help='The swtpm-localca configuration (default: '
                        '%(default)s).')
    p.add_argument('--create', action='store_true',
                   help='Create the CA first if this host has none yet.')
    p.add_argument('--format', choices=('pem', 'json', 'table'),
                   default=None,
                   help='Output: the PEM certificates (default without '
                        '--output-dir), JSON, or a table of what was '
                        'written (default with --output-dir).')
    p.set_defaults(func=do_export)


def do_export(args, conf):
    host = args.host or conf.nova_vtpm_agent.host
    fmt = args.format or ('table' if args.output_dir else 'pem')
    try:
        ca = LocalCA(args.localca_conf)
        created = ca.create() if args.create else False
        certs = ca.certificates(host)
    except CAError as e:
        sys.stderr.write('nova-vtpm ca export: %s\n' % e)
        return common.EXIT_PROBLEMS
    written = []
    if args.output_dir:
        try:
            os.makedirs(args.output_dir, mode=0o755, exist_ok=True)
            for name, _, pem in certs:
                path = os.path.join(args.output_dir, name)
                write_atomic(path, pem)
                written.append(path)
        except OSError as e:
            sys.stderr.write('nova-vtpm ca export: cannot write to %s: %s\n'
                             % (args.output_dir, e))
            return common.EXIT_PROBLEMS
    info = [describe(name, cert) for name, cert, _ in certs]
    for item, path in zip(info, written):
        item['path'] = path
    if fmt == 'json':
        for item, (_, _, pem) in zip(info, certs):
            item['pem'] = pem.decode('ascii')
        common.print_json({'host': host, 'created': created,
                           'localca_conf': ca.conf_path,
                           'certificates': info})
    elif fmt == 'pem':
        for item, (_, _, pem) in zip(info, certs):
            sys.stdout.write('# %s: %s (issuer %s), sha256 %s, valid until '
                             '%s\n' % (item['file'], item['subject'],
                                       item['issuer'], item['sha256'],
                                       item['not_after']))
            sys.stdout.write(pem.decode('ascii'))
    else:
        if created:
            print('Created the swtpm-localca of %s in %s' % (host,
                                                             ca.statedir))
        common.print_table(info, [('path' if written else 'file', 'File'),
                                  ('subject', 'Subject'),
                                  ('sha256', 'SHA-256'),
                                  ('not_after', 'Valid until')])
    return common.EXIT_OK
