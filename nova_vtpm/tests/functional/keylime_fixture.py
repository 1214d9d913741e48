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

"""A real Keylime on loopback, and swtpm-backed guests with agents.

* :class:`KeylimeStack`: a Keylime 7.14 verifier and registrar, private to
  one test: their own ``KEYLIME_DIR`` (sqlite databases, the TLS CA the
  verifier generates), configuration copies, free ports on 127.0.0.1.
* :class:`SwtpmGuest`: a guest's TPM: an ``swtpm`` socket whose state
  ``swtpm_setup`` manufactured as libvirt does (EK and platform
  certificates, ``--vmid <name>:<uuid>``), signed by a private
  swtpm-localca (``ca_dir``; two guests can share one, as on one compute
  host, or use different ones, as on two).
* :class:`KeylimeAgent`: keylime 6.4.3's Python agent (the last with one)
  for a guest, registered under the instance UUID, through
  ``keylime_agent_launcher.py``.

Keylime comes from ``tools/install-keylime.sh`` (two virtualenvs and the
default configuration under ``.cache/keylime``, or
``$NOVA_VTPM_KEYLIME_CACHE``). Nothing global is used: no
``/etc/keylime``, no ``/var/lib/keylime``, no system swtpm-localca. The
exception is Keylime's own: as root its services create
``/run/keylime/shared_data.<pid>.sock``; the fixture removes the files of
the pids it started.

Traps handled here (see the lab notes on Keylime):

* the services' parent process ignores SIGTERM: its worker children get
  it (and SIGKILL if they outlive ``stop_timeout``);
* killing swtpm raises the TPM's dictionary-attack counter and leaves its
  clock unsafe (the next quote is invalid; after a few kills, "DA lockout
  mode"): guests stop with TPM2_Shutdown then ``swtpm_ioctl -s``;
* the 6.4.3 agent makes a new AK at every start, which the registrar
  refuses for a known agent (HTTP 403 "Agent re-registration with
  different TPM identity is forbidden for security reasons"): a restart
  deletes the agent from the verifier and the registrar first, and every
  start gets a fresh work directory (old AK files break the next start);
* the swtpm TCTI of tpm2-tools reaches the control channel at the server
  port + 1 whatever swtpm was told ("Failed to connect to control
  socket"): guests take two consecutive ports;
* in a process eventlet patched after urllib3 was imported (Nova's
  functional tests), TLS from requests recurses ("RecursionError: maximum
  recursion depth exceeded"): see :class:`EventletSSLFixture`.
"""

import configparser
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid as uuidlib

import fixtures
import requests

from nova_vtpm.keylime import client as kl_client
from nova_vtpm.tests.functional import services

LOOPBACK = services.LOOPBACK
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
CACHE_ENV = 'NOVA_VTPM_KEYLIME_CACHE'
REQUIRE_ENV = 'NOVA_VTPM_REQUIRE_KEYLIME'
LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        'keylime_agent_launcher.py')
SWTPM_TOOLS = ('swtpm', 'swtpm_setup', 'swtpm_ioctl', 'swtpm_localca',
               'tpm2_startup', 'tpm2_shutdown', 'tpm2_pcrextend',
               'tpm2_readpublic')
# Where Keylime's SharedDataManager puts its socket (root: the first).
SHARED_DATA_DIRS = ('/run/keylime',)
EK_HANDLE_RSA = '0x81010001'

KeylimeError = services.ServiceError


class KeylimeInstall:
    """Where tools/install-keylime.sh put Keylime."""

    def __init__(self, cache=None):
        self.cache = (cache or os.environ.get(CACHE_ENV)
                      or os.path.join(REPO_ROOT, '.cache', 'keylime'))
        self.server_bin = os.path.join(self.cache, 'server', 'bin')
        self.agent_python = os.path.join(self.cache, 'agent', 'bin',
                                         'python')
        self.etc = os.path.join(self.cache, 'etc')

    def server_command(self, name):
        return os.path.join(self.server_bin, name)

    @property
    def agent_config_template(self):
        found = glob.glob(os.path.join(
            self.cache, 'agent', 'lib', 'python3*', 'site-packages',
            'keylime', 'keylime.conf'))
        return found[0] if found else None

    def missing(self):
        """What is missing, as a list of sentences (empty: all there)."""
        problems = []
        for path in (self.server_command('keylime_verifier'),
                     self.server_command('keylime_registrar'),
                     self.agent_python):
            if not os.access(path, os.X_OK):
                problems.append('%s is missing' % path)
        for name in ('verifier.conf', 'registrar.conf', 'tenant.conf',
                     'ca.conf', 'logging.conf'):
            if not os.path.isfile(os.path.join(self.etc, name)):
                problems.append('%s is missing' % os.path.join(
                    self.etc, name))
        if not self.agent_config_template:
            problems.append('the keylime 6.4.3 agent has no keylime.conf')
        for tool in SWTPM_TOOLS:
            if not shutil.which(tool):
                problems.append('%s is not installed' % tool)
        return problems


def require_keylime(install=None):
    """The :class:`KeylimeInstall`, or skip the test(s) when incomplete.

    Raises ``unittest.SkipTest`` (usable in ``setUpClass``); with
    ``NOVA_VTPM_REQUIRE_KEYLIME=1`` (CI) raises :class:`KeylimeError`.
    """
    install = install or KeylimeInstall()
    problems = install.missing()
    if not problems:
        return install
    message = ('Keylime test environment incomplete (%s): run '
               'tools/install-keylime.sh' % '; '.join(problems))
    if os.environ.get(REQUIRE_ENV) in ('1', 'true', 'True'):
        raise KeylimeError(message)
    raise unittest.SkipTest(message)


def _edit_config(path, changes):
    """Set ``{section: {option: value}}`` in an INI file (comments go)."""
    parser = configparser.RawConfigParser()
    parser.optionxform = str
    with open(path) as f:
        parser.read_file(f)
    for section, options in changes.items():
        if not parser.has_section(section):
            parser.add_section(section)
        for option, value in options.items():
            parser.set(section, option, str(value))
    with open(path, 'w') as f:
        parser.write(f)


def free_port_pair(attempts=50):
    """A free port P whose successor P + 1 is free too.

    The swtpm TCTI of tpm2-tools reaches the control channel at the
    server port + 1, whatever swtpm was told.
    """
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first:
            first.bind((LOOPBACK, 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as second:
                try:
                    second.bind((LOOPBACK, port + 1))
                except OSError:
                    continue
                return port
    raise KeylimeError('no two consecutive free ports found')


class EventletSSLFixture(fixtures.Fixture):
    """Let requests do TLS in a process eventlet monkey-patched late.

    Nova's functional test package monkey-patches at import time, after
    urllib3 was imported: urllib3 then builds stdlib ``SSLContext``
    objects while ``ssl.SSLContext`` is eventlet's subclass, and setting
    ``minimum_version`` recurses until "RecursionError: maximum recursion
    depth exceeded while calling a Python object". Pointing urllib3 at the
    patched class, for the fixture's lifetime, avoids it.
    """

    def _setUp(self):
        import ssl

        from urllib3.util import ssl_ as urllib3_ssl
        patched = ssl.SSLContext
        if (urllib3_ssl.SSLContext is not patched
                and patched.__module__.startswith('eventlet')):
            self.useFixture(fixtures.MonkeyPatch(
                'urllib3.util.ssl_.SSLContext', patched))


def _wait_for_port(port, timeout, proc=None, what='service', log=None):
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise KeylimeError('%s exited with %s:\n%s' % (
                what, proc.returncode, services._tail(log) if log else ''))
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise KeylimeError('%s did not listen on port %d in %ss' % (
                    what, port, timeout))
            time.sleep(0.05)


class KeylimeStack(services._Service):
    """A private Keylime verifier and registrar on 127.0.0.1.

    ``verifier_url`` and ``registrar_url`` (its TLS port) are HTTPS with
    the verifier-generated CA (``ca_file``) and client certificate
    (``client_cert``, ``client_key``); agents register at
    ``registrar_port`` (plain HTTP). :meth:`registrar_client` and
    :meth:`verifier_client` build nova-vtpm clients for them.
    """

    name = 'keylime'

    def __init__(self, install=None, quote_interval=2, start_timeout=90,
                 stop_timeout=20, base_dir=None):
        super().__init__(start_timeout, stop_timeout, base_dir)
        self.install = install or KeylimeInstall()
        self.quote_interval = quote_interval
        self._procs = {}

    def _setUp(self):
        problems = self.install.missing()
        if problems:
            raise KeylimeError('Keylime is not installed (%s): run '
                               'tools/install-keylime.sh'
                               % '; '.join(problems))
        self.useFixture(EventletSSLFixture())
        base = self._make_base()
        self.keylime_dir = os.path.join(base, 'keylime')
        self.etc_dir = os.path.join(base, 'etc')
        self.log_dir = os.path.join(base, 'log')
        self.tpm_cert_store = os.path.join(base, 'tpm_cert_store')
        for d in (self.keylime_dir, self.log_dir, self.tpm_cert_store):
            os.makedirs(d, mode=0o700)
        shutil.copytree(self.install.etc, self.etc_dir,
                        ignore=shutil.ignore_patterns('.*'))
        self.verifier_port = services.free_port()
        self.registrar_port = services.free_port()
        self.registrar_tls_port = services.free_port()
        self._write_configs()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith('KEYLIME')}
        env.update({
            'KEYLIME_DIR': self.keylime_dir,
            'KEYLIME_VERIFIER_CONFIG': self._conf('verifier'),
            'KEYLIME_REGISTRAR_CONFIG': self._conf('registrar'),
            'KEYLIME_TENANT_CONFIG': self._conf('tenant'),
            'KEYLIME_CA_CONFIG': self._conf('ca'),
            'KEYLIME_LOGGING_CONFIG': self._conf('logging'),
        })
        self.env = env
        self.tls_dir = os.path.join(self.keylime_dir, 'cv_ca')
        self.ca_file = os.path.join(self.tls_dir, 'cacert.crt')
        self.client_cert = os.path.join(self.tls_dir, 'client-cert.crt')
        self.client_key = os.path.join(self.tls_dir, 'client-private.pem')
        self.verifier_url = 'https://%s:%d' % (LOOPBACK, self.verifier_port)
        self.registrar_url = 'https://%s:%d' % (LOOPBACK,
                                                self.registrar_tls_port)
        self.addCleanup(self._cleanup)
        self.start()

    def _conf(self, name):
        return os.path.join(self.etc_dir, '%s.conf' % name)

    def _write_configs(self):
        _edit_config(self._conf('verifier'), {
            'verifier': {
                'ip': LOOPBACK, 'port': self.verifier_port,
                'registrar_ip': LOOPBACK,
                'registrar_port': self.registrar_tls_port,
                'tls_dir': 'generate',
                # One poller and one web worker: enough for a test.
                'num_workers': 1,
                'max_workers': 1,
                'quote_interval': self.quote_interval,
                'shutdown_drain_timeout': 2,
                'database_url': 'sqlite',
            },
            # No ZeroMQ broker, no agent notifications: nothing to listen.
            'revocations': {
                'enabled_revocation_notifications': '[]',
                'zmq_ip': LOOPBACK,
                'zmq_port': services.free_port(),
            },
        })
        _edit_config(self._conf('registrar'), {
            'registrar': {
                'ip': LOOPBACK, 'port': self.registrar_port,
                'tls_port': self.registrar_tls_port,
                'tls_dir': 'default',       # the verifier's cv_ca
                'database_url': 'sqlite',
                'max_workers': 1,
            },
        })
        _edit_config(self._conf('tenant'), {
            'tenant': {
                'verifier_ip': LOOPBACK, 'verifier_port': self.verifier_port,
                'registrar_ip': LOOPBACK,
                'registrar_port': self.registrar_tls_port,
                'tpm_cert_store': self.tpm_cert_store,
            },
        })

    @property
    def running(self):
        return any(p.poll() is None for p in self._procs.values())

    def start(self):
        """Start the verifier, then the registrar (it uses cv_ca)."""
        if self.running:
            return
        t0 = time.monotonic()
        self._start_service('verifier', self.verifier_port)
        self.verifier_start_time = time.monotonic() - t0
        t1 = time.monotonic()
        self._start_service('registrar', self.registrar_tls_port)
        self.registrar_start_time = time.monotonic() - t1
        self.start_times.append(time.monotonic() - t0)

    def _start_service(self, name, tls_port):
        log_path = os.path.join(self.log_dir, '%s.log' % name)
        log = open(log_path, 'ab')
        with log:
            proc = subprocess.Popen(
                [self.install.server_command('keylime_%s' % name)],
                env=self.env, cwd=self.keylime_dir, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._procs[name] = proc
        self._remember(proc.pid)
        deadline = time.monotonic() + self.start_timeout
        last = None
        while True:
            if proc.poll() is not None:
                raise KeylimeError('keylime_%s exited with %s during '
                                   'start-up:\n%s' % (name, proc.returncode,
                                                      services._tail(
                                                          log_path)))
            self._remember(*services._descendants(proc.pid))
            if os.path.exists(self.client_key):
                try:
                    r = requests.get(
                        'https://%s:%d/version' % (LOOPBACK, tls_port),
                        cert=(self.client_cert, self.client_key),
                        verify=self.ca_file, timeout=2)
                    if r.status_code == 200:
                        return
                    last = 'HTTP %s' % r.status_code
                except requests.RequestException as e:
                    last = e
            if time.monotonic() >= deadline:
                self.stop()
                raise KeylimeError('keylime_%s did not answer GET /version '
                                   'in %ss (last: %s):\n%s' % (
                                       name, self.start_timeout, last,
                                       services._tail(log_path)))
            time.sleep(0.2)

    def stop(self):
        """Stop the registrar, then the verifier; SIGKILL what lingers."""
        for name in ('registrar', 'verifier'):
            proc = self._procs.pop(name, None)
            if proc is None:
                continue
            # The parent ignores SIGTERM: its worker children must get it.
            kids = services._children(proc.pid)
            self._remember(*kids)
            self._remember(*services._descendants(proc.pid))
            try:
                self.killed += services._stop_process(
                    proc, signal.SIGTERM, self.stop_timeout, extra_pids=kids)
            finally:
                self._remove_shared_data_sockets(proc.pid)

    @staticmethod
    def _remove_shared_data_sockets(pid):
        dirs = list(SHARED_DATA_DIRS)
        for base in (os.environ.get('XDG_RUNTIME_DIR'),
                     tempfile.gettempdir(), '/tmp'):
            if base:
                dirs.append(os.path.join(base, 'keylime'))
        for d in dirs:
            try:
                os.unlink(os.path.join(d, 'shared_data.%d.sock' % pid))
            except OSError:
                pass

    def _cleanup(self):
        self.stop()
        alive = self.alive_pids()
        if alive:
            raise KeylimeError('Keylime processes left: %s' % alive)

    def log(self, name):
        return services._tail(os.path.join(self.log_dir, '%s.log' % name),
                              lines=80)

    def _client_kwargs(self, kwargs):
        options = dict(cert_file=self.client_cert, key_file=self.client_key,
                       ca_file=self.ca_file, timeout=10, retries=2,
                       retry_backoff=0.2)
        options.update(kwargs)
        return options

    def registrar_client(self, **kwargs):
        return kl_client.RegistrarClient(self.registrar_url,
                                         **self._client_kwargs(kwargs))

    def verifier_client(self, **kwargs):
        return kl_client.VerifierClient(self.verifier_url,
                                        **self._client_kwargs(kwargs))


def make_swtpm_ca(ca_dir):
    """Write the configuration of a private swtpm-localca in ``ca_dir``.

    ``swtpm_setup`` with ``XDG_CONFIG_HOME=<ca_dir>`` then uses it; the
    CA's keys and certificates appear in ``<ca_dir>/var/lib/swtpm-localca``
    at the first EK certificate.
    """
    os.makedirs(ca_dir, mode=0o700, exist_ok=True)
    env = dict(os.environ, XDG_CONFIG_HOME=ca_dir)
    subprocess.run(['swtpm_setup', '--create-config-files',
                    'skip-if-exist,root'], env=env, check=True,
                   capture_output=True, timeout=30)
    return ca_dir


def swtpm_ca_certs(ca_dir):
    """(root CA certificate, intermediate certificate) paths of a CA."""
    state = os.path.join(ca_dir, 'var', 'lib', 'swtpm-localca')
    return (os.path.join(state, 'swtpm-localca-rootca-cert.pem'),
            os.path.join(state, 'issuercert.pem'))


def install_ca_certs(ca_dir, trust_dir, prefix):
    """Copy a swtpm-localca's root and intermediate into ``trust_dir``."""
    os.makedirs(trust_dir, exist_ok=True)
    root, issuer = swtpm_ca_certs(ca_dir)
    copies = []
    for path, suffix in ((root, 'rootca.pem'), (issuer, 'issuercert.pem')):
        target = os.path.join(trust_dir, '%s-%s' % (prefix, suffix))
        shutil.copyfile(path, target)
        copies.append(target)
    return copies


class SwtpmGuest(services._Service):
    """A guest's TPM 2.0: swtpm on TCP, manufactured like libvirt's.

    :ivar tcti: the ``TPM2TOOLS_TCTI`` value for this TPM.
    :ivar ek_cert_path: the RSA EK certificate (DER), as stored in the TPM.
    :ivar ca_root_cert: the issuing CA's root certificate (PEM).
    :ivar ca_issuer_cert: its intermediate, ``issuercert.pem`` (PEM).
    """

    name = 'swtpm'

    def __init__(self, name='guest', instance_uuid=None, ca_dir=None,
                 start=True, start_timeout=30, stop_timeout=10,
                 base_dir=None):
        super().__init__(start_timeout, stop_timeout, base_dir)
        self.domain_name = name
        self.instance_uuid = str(instance_uuid or uuidlib.uuid4())
        self.vmid = '%s:%s' % (name, self.instance_uuid)
        self._ca_dir = ca_dir
        self._start = start
        self._proc = None

    def _setUp(self):
        base = self._make_base()
        self.state_dir = os.path.join(base, 'state')
        self.certs_dir = os.path.join(base, 'certs')
        self.log_file = os.path.join(base, 'swtpm.log')
        for d in (self.state_dir, self.certs_dir):
            os.makedirs(d, mode=0o700)
        self.ca_dir = os.path.abspath(self._ca_dir or os.path.join(base,
                                                                   'ca'))
        make_swtpm_ca(self.ca_dir)
        t0 = time.monotonic()
        env = dict(os.environ, XDG_CONFIG_HOME=self.ca_dir)
        setup = subprocess.run(
            ['swtpm_setup', '--tpm2', '--tpmstate', self.state_dir,
             '--create-ek-cert', '--create-platform-cert',
             '--vmid', self.vmid,
             '--config', os.path.join(self.ca_dir, 'swtpm_setup.conf'),
             '--write-ek-cert-files', self.certs_dir,
             '--pcr-banks', 'sha1,sha256',
             '--logfile', os.path.join(base, 'swtpm_setup.log')],
            env=env, capture_output=True, text=True, timeout=120)
        if setup.returncode:
            raise KeylimeError('swtpm_setup failed (%s): %s%s\n%s' % (
                setup.returncode, setup.stdout, setup.stderr,
                services._tail(os.path.join(base, 'swtpm_setup.log'))))
        self.setup_time = time.monotonic() - t0
        self.ek_cert_path = os.path.join(self.certs_dir, 'ek-rsa2048.crt')
        if not os.path.exists(self.ek_cert_path):
            raise KeylimeError('swtpm_setup wrote no %s' % self.ek_cert_path)
        self.ca_root_cert, self.ca_issuer_cert = swtpm_ca_certs(self.ca_dir)
        self.addCleanup(self._cleanup)
        if self._start:
            self.start()

    @property
    def ek_cert_der(self):
        with open(self.ek_cert_path, 'rb') as f:
            return f.read()

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    def _env(self):
        return dict(os.environ, TPM2TOOLS_TCTI=self.tcti)

    def start(self):
        """Start swtpm, send TPM_Init and TPM2_Startup(CLEAR)."""
        if self.running:
            return
        t0 = time.monotonic()
        # The TCTI expects the control channel at port + 1.
        self.port = free_port_pair()
        self.ctrl_port = self.port + 1
        self.tcti = 'swtpm:host=%s,port=%d' % (LOOPBACK, self.port)
        log = open(self.log_file, 'ab')
        with log:
            # Not --daemon: it would chdir to / and we would lose its pid.
            self._proc = subprocess.Popen(
                ['swtpm', 'socket', '--tpm2',
                 '--tpmstate', 'dir=%s' % self.state_dir,
                 '--server', 'type=tcp,port=%d,bindaddr=%s' % (
                     self.port, LOOPBACK),
                 '--ctrl', 'type=tcp,port=%d,bindaddr=%s' % (
                     self.ctrl_port, LOOPBACK),
                 '--log', 'file=%s,level=1' % self.log_file],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self._remember(self._proc.pid)
        _wait_for_port(self.ctrl_port, self.start_timeout, self._proc,
                       'swtpm', self.log_file)
        _wait_for_port(self.port, self.start_timeout, self._proc,
                       'swtpm', self.log_file)
        # The swtpm TCTI of tpm2-tools sends no TPM_Init: do it, then
        # TPM2_Startup (the 6.4.3 agent only does it with ek_handle=generate).
        self.ioctl('-i')
        self.tpm2('tpm2_startup', '-c')
        self.start_times.append(time.monotonic() - t0)

    def ioctl(self, *args):
        return subprocess.run(
            ['swtpm_ioctl', '--tcp', '%s:%d' % (LOOPBACK, self.ctrl_port)]
            + list(args), capture_output=True, text=True, timeout=30,
            check=True)

    def tpm2(self, tool, *args, check=True, timeout=60):
        """Run a tpm2-tools command against this TPM."""
        result = subprocess.run([tool] + list(args), env=self._env(),
                                capture_output=True, timeout=timeout)
        if check and result.returncode:
            raise KeylimeError('%s %s failed (%s): %s' % (
                tool, ' '.join(args), result.returncode,
                result.stderr.decode(errors='replace')))
        return result

    def pcr_extend(self, pcr, sha256_hex):
        self.tpm2('tpm2_pcrextend', '%d:sha256=%s' % (pcr, sha256_hex))

    def pcr_reset(self, pcr):
        self.tpm2('tpm2_pcrreset', str(pcr))

    def clear_lockout(self):
        """Leave dictionary-attack lockout (after an unclean stop)."""
        self.tpm2('tpm2_dictionarylockout', '-c')

    def ek_public_tpm2b(self, handle=EK_HANDLE_RSA):
        """The EK's TPM2B_PUBLIC, as the agent reports it (``ek_tpm``)."""
        out = os.path.join(self.base, 'ek-%s.pub' % handle)
        self.tpm2('tpm2_readpublic', '-c', handle, '-o', out)
        with open(out, 'rb') as f:
            return f.read()

    def stop(self):
        """Shut the TPM down cleanly, then stop swtpm."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        if proc.poll() is None:
            try:
                # TPM2_Shutdown(CLEAR) marks an orderly shutdown: no DA
                # counter increment, a safe clock at the next start.
                self.tpm2('tpm2_shutdown', '-c', check=False, timeout=20)
                self.ioctl('-s')
            except (subprocess.SubprocessError, OSError):
                pass
        self.killed += services._stop_process(proc, signal.SIGTERM,
                                              self.stop_timeout)

    def _cleanup(self):
        self.stop()
        alive = self.alive_pids()
        if alive:
            raise KeylimeError('swtpm processes left: %s' % alive)


class KeylimeAgent(services._Service):
    """keylime 6.4.3's agent for one guest TPM, registered at ``stack``.

    :ivar agent_uuid: the UUID it registers under (default: the guest's
        instance UUID).
    :ivar port: its HTTPS (mTLS) port on 127.0.0.1.
    :ivar registration_times: seconds from each start to an activated
        registration.
    """

    name = 'keylime-agent'

    def __init__(self, stack, guest, agent_uuid=None, start=True,
                 start_timeout=90, stop_timeout=15, base_dir=None):
        super().__init__(start_timeout, stop_timeout, base_dir)
        self.stack = stack
        self.guest = guest
        self.agent_uuid = str(agent_uuid or guest.instance_uuid)
        self._start = start
        self._proc = None
        self.starts = 0
        self.registration_times = []

    def _setUp(self):
        base = self._make_base()
        self.home = os.path.join(base, 'home')
        os.makedirs(self.home, mode=0o700)
        self.port = services.free_port()
        self.addCleanup(self._cleanup)
        if self._start:
            self.start()

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self, path):
        shutil.copyfile(self.stack.install.agent_config_template, path)
        _edit_config(path, {
            'general': {
                'receive_revocation_ip': LOOPBACK,
                'receive_revocation_port': services.free_port(),
            },
            'cloud_agent': {
                'cloudagent_ip': LOOPBACK,
                'cloudagent_port': self.port,
                'agent_contact_ip': LOOPBACK,
                'agent_contact_port': self.port,
                'registrar_ip': LOOPBACK,
                'registrar_port': self.stack.registrar_port,
                'agent_uuid': self.agent_uuid,
                'ek_handle': EK_HANDLE_RSA,
                'tpm_ownerpassword': '',
                'tpm_hash_alg': 'sha256',
                'tpm_encryption_alg': 'rsa',
                'tpm_signing_alg': 'rsassa',
                'keylime_ca': self.stack.ca_file,
                'listen_notifications': 'False',
                'payload_script': '',
                'run_as': '',
            },
        })

    def start(self, forget=True):
        """Start the agent and wait until its registration is activated.

        :param forget: on a restart, delete the agent from the verifier
            and the registrar first (the new AK would be refused).
        """
        if self.running:
            return
        if self.starts and forget:
            self.forget()
        self.starts += 1
        work = os.path.join(self.base, 'work-%d' % self.starts)
        os.makedirs(work, mode=0o700)
        conf = os.path.join(self.base, 'agent-%d.conf' % self.starts)
        self._write_config(conf)
        self.log_file = os.path.join(self.base, 'agent-%d.log' % self.starts)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(('KEYLIME', 'TPM2TOOLS', 'TSS2'))}
        env.update({
            'KEYLIME_TEST': 'True',      # no tmpfs mount, no EK check
            'KEYLIME_DIR': work,
            'KEYLIME_CONFIG': conf,
            'TPM2TOOLS_TCTI': self.guest.tcti,
            'HOME': self.home,           # no ~/.config/keylime.conf
            'PYTHONUNBUFFERED': '1',
        })
        t0 = time.monotonic()
        log = open(self.log_file, 'ab')
        with log:
            self._proc = subprocess.Popen(
                [self.stack.install.agent_python, LAUNCHER], env=env,
                cwd=work, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        self._remember(self._proc.pid)
        deadline = t0 + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                proc, self._proc = self._proc, None
                raise KeylimeError('the keylime agent exited with %s before '
                                   'it registered:\n%s' % (
                                       proc.returncode,
                                       services._tail(self.log_file, 60)))
            with open(self.log_file, errors='replace') as f:
                if 'Starting Cloud Agent on' in f.read():
                    break
            if time.monotonic() >= deadline:
                self.stop()
                raise KeylimeError('the keylime agent did not register in '
                                   '%ss:\n%s' % (self.start_timeout,
                                                 services._tail(
                                                     self.log_file, 60)))
            time.sleep(0.1)
        self._remember(*services._descendants(self._proc.pid))
        self.registration_times.append(time.monotonic() - t0)
        self.start_times.append(self.registration_times[-1])

    def forget(self, timeout=30):
        """Delete the agent from the verifier and the registrar."""
        verifier = self.stack.verifier_client()
        verifier.delete_agent(self.agent_uuid, missing_ok=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                verifier.get_agent(self.agent_uuid)
            except kl_client.AgentNotFound:
                break
            if time.monotonic() >= deadline:
                raise KeylimeError('the verifier did not delete agent %s '
                                   'in %ss' % (self.agent_uuid, timeout))
            time.sleep(0.2)
        self.stack.registrar_client().delete_agent(self.agent_uuid,
                                                   missing_ok=True)

    def stop(self):
        """SIGTERM: the agent flushes its keys from the TPM and exits."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        self._remember(*services._descendants(proc.pid))
        self.killed += services._stop_process(proc, signal.SIGTERM,
                                              self.stop_timeout)

    def log(self):
        return services._tail(self.log_file, 80)

    def _cleanup(self):
        self.stop()
        alive = self.alive_pids()
        if alive:
            raise KeylimeError('keylime agent processes left: %s' % alive)


def main():
    """Run a private Keylime until SIGTERM or SIGINT (for a lab).

    ``python -m nova_vtpm.tests.functional.keylime_fixture`` prints the
    URLs and TLS files as shell variables.
    """
    def announce(stack):
        for name in ('verifier_url', 'registrar_url', 'registrar_port',
                     'ca_file', 'client_cert', 'client_key', 'keylime_dir'):
            print('KEYLIME_%s=%s' % (name.upper(), getattr(stack, name)))

    return services.run_until_signalled(KeylimeStack(), announce)


if __name__ == '__main__':
    sys.exit(main())
