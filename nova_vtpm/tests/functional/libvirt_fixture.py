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

"""A real, private libvirtd (QEMU driver, TCG) with swtpm vTPMs, as root.

Why a mount namespace: a privileged libvirtd reads ``qemu.conf`` from its
compiled-in configuration directory (``/etc/libvirt``; ``libvirtd -f`` only
replaces ``libvirtd.conf``, and no environment variable moves it) and keeps
vTPM state in the compiled-in ``/var/lib/libvirt/swtpm/<uuid>`` (no
``qemu.conf`` key for it), swtpm logs in ``/var/log/swtpm/libvirt/qemu``,
domain and secret definitions in ``/etc/libvirt/{qemu,secrets}``, runtime
state, pid files and the virtlogd socket in ``/run/libvirt``, and swtpm's
local CA (EK certificate signing) in ``/var/lib/swtpm-localca``.  So the
fixture runs ``virtlogd`` and ``libvirtd`` in a mount namespace of their own
where private directories are bind-mounted over exactly those paths
(:data:`PRIVATE_PATHS`).  Inside, libvirt runs unmodified with its standard
paths, and thus its standard swtpm behaviour; outside, nothing global is
read or written and two fixtures (or a system libvirtd) never meet.  The
namespace dies with the last process in it.

``qemu.conf`` (private) sets ``swtpm_user``/``swtpm_group`` (``tss`` as
Debian's default) and ``cgroup_controllers = [ ]`` (so no cgroup is created
in the host's shared cgroup tree).  ``libvirtd.conf`` (private, ``-f``) has
no TCP/TLS listener and puts its unix sockets in the private ``/run``; the
client URI is ``qemu:///system?socket=<host path of that socket>``.

Paths libvirt reports (``/var/lib/libvirt/swtpm/...``) are namespace paths;
:meth:`Libvirt.host_path` maps them to where the test process sees them.

Cleanup destroys and undefines (with the TPM state) the domains defined
through the fixture and undefines its secrets, stops libvirtd and virtlogd
by pid, then SIGKILLs, by pid, whatever is left of the QEMU and swtpm
processes recorded from libvirt's pid files and of the processes in the
fixture's mount namespace.

Usable outside tests too, e.g. for a lab::

    python -m nova_vtpm.tests.functional.libvirt_fixture

prints the URI on stdout and runs until SIGTERM or SIGINT.
"""

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from xml.sax import saxutils

from nova_vtpm.tests.functional import services

# Bind-mounted, inside the namespace, from <root>/<same path>.  Each must
# exist on the host as a mount point (/run/libvirt and /var/log/swtpm need
# not: their parents are covered).
PRIVATE_PATHS = (
    '/etc/libvirt',
    '/var/lib/libvirt',
    '/var/lib/swtpm-localca',
    '/var/cache/libvirt',
    '/var/log',
    '/run',
)

SWTPM_STORAGE_DIR = '/var/lib/libvirt/swtpm'     # libvirt's, compiled in
SWTPM_LOG_DIR = '/var/log/swtpm/libvirt/qemu'    # libvirt's, compiled in
SOCKET_DIR = '/run/libvirt'

# A sun_path holds 107 bytes and a NUL.
_MAX_SOCKET_PATH = 107

REQUIRED_BINARIES = ('libvirtd', 'virtlogd', 'virsh', 'unshare', 'nsenter',
                     'mount', 'swtpm', 'swtpm_setup', 'qemu-system-x86_64')

_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'


# libvirt probes every QEMU binary at start-up (~8 s here for
# qemu-system-x86_64 and -i386) unless its capabilities cache holds valid
# entries; it re-validates them (binary and libvirtd ctimes, kernel,
# microcode...) and re-probes stale ones, so a copy is safe to reuse.
CAPS_CACHE_ENV = 'NOVA_VTPM_LIBVIRT_CAPS_CACHE'
_CAPS_DIR = '/var/cache/libvirt/qemu/capabilities'


class LibvirtError(services.ServiceError):
    """libvirt (or virsh) failed."""


def default_caps_cache_dir():
    """``$NOVA_VTPM_LIBVIRT_CAPS_CACHE``, else <repo>/.cache/libvirt-caps.

    None (no caching) when neither is usable, e.g. an installed package.
    """
    if os.environ.get(CAPS_CACHE_ENV):
        return os.environ[CAPS_CACHE_ENV]
    repo = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))))
    if os.path.exists(os.path.join(repo, 'setup.cfg')) and os.access(
            repo, os.W_OK):
        return os.path.join(repo, '.cache', 'libvirt-caps')
    return None


def missing_binaries(names=REQUIRED_BINARIES):
    """The names in ``names`` that are not on the daemons' PATH."""
    return [n for n in names if not shutil.which(n, path=_PATH)]


def _mnt_ns(pid):
    try:
        return os.readlink('/proc/%d/ns/mnt' % pid)
    except OSError:
        return None


def _start_time(pid):
    """Process ``pid``'s start time (clock ticks after boot), or None.

    With the pid it identifies a process: a pid that libvirt wrote into a
    pid file may be reused by an unrelated process later.
    """
    try:
        with open('/proc/%d/stat' % pid) as f:
            return int(f.read().rsplit(')', 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class Libvirt(services._Service):
    """Private virtlogd + libvirtd in a mount namespace of their own.

    Attributes once set up: ``uri``, ``socket_path``, ``root`` (the host
    directory under which the private paths live), ``virtlogd_pid``,
    ``libvirtd_pid``, ``swtpm_uid``/``swtpm_gid``, ``start_times`` (daemon
    start-up seconds), ``domain_start_times`` ({name: [seconds]}).
    """

    name = 'libvirt'

    def __init__(self, start_timeout=90, stop_timeout=30, base_dir=None,
                 swtpm_user='tss', swtpm_group='tss',
                 log_filters=None, virsh_timeout=120,
                 caps_cache_dir=False):
        """Set up nothing yet.

        ``caps_cache_dir``: where to keep libvirt's QEMU capabilities
        between runs (False: :func:`default_caps_cache_dir`; None: no
        cache, probe every time).
        """
        super().__init__(start_timeout, stop_timeout, base_dir)
        self.caps_cache_dir = (default_caps_cache_dir()
                               if caps_cache_dir is False else caps_cache_dir)
        self.swtpm_user = swtpm_user
        self.swtpm_group = swtpm_group
        self.log_filters = log_filters
        self.virsh_timeout = virsh_timeout
        self._virtlogd = None
        self._libvirtd = None
        self.virtlogd_pid = None
        self.libvirtd_pid = None
        self.mnt_ns = None
        # name -> uuid, and secret uuids, in definition order.
        self.domains = {}
        self.secrets = []
        self.domain_start_times = {}
        self._identity = {}

    def _remember(self, *pids):
        for pid in pids:
            if pid and pid not in self._identity:
                self._identity[pid] = _start_time(pid)
        super()._remember(*pids)

    def _same_process(self, pid):
        start = _start_time(pid)
        return (start is not None and start == self._identity.get(pid)
                and services.pid_exists(pid))

    def alive_pids(self):
        """The processes this fixture started (or libvirt did) still alive.

        A pid counts only while it names the same process (same start
        time) as when it was recorded.
        """
        return [p for p in self.all_pids if self._same_process(p)]

    # -- paths -------------------------------------------------------------

    def host_path(self, path):
        """Where the test process sees namespace path ``path``."""
        path = os.path.normpath(path)
        for private in PRIVATE_PATHS:
            if path == private or path.startswith(private + '/'):
                return self.root + path
        return path

    def swtpm_state_dir(self, domain_uuid):
        """Host path of libvirt's per-domain dir (``.../swtpm/<uuid>``)."""
        return self.host_path(os.path.join(SWTPM_STORAGE_DIR,
                                           str(domain_uuid)))

    def swtpm_tpm2_dir(self, domain_uuid):
        """Host path of the TPM 2 state dir (holds ``tpm2-00.permall``)."""
        return os.path.join(self.swtpm_state_dir(domain_uuid), 'tpm2')

    def swtpm_log_path(self, name):
        """Host path of the swtpm log of domain ``name``."""
        return self.host_path(os.path.join(SWTPM_LOG_DIR,
                                           '%s-swtpm.log' % name))

    def qemu_log_path(self, name):
        return self.host_path('/var/log/libvirt/qemu/%s.log' % name)

    @property
    def libvirtd_log(self):
        return self.host_path('/var/log/libvirt/libvirtd.log')

    # -- set-up ------------------------------------------------------------

    def _setUp(self):
        if os.geteuid() != 0:
            raise LibvirtError('the Libvirt fixture runs libvirtd as root')
        missing = missing_binaries()
        if missing:
            raise LibvirtError('missing binaries: %s' % ', '.join(missing))
        base = self._make_base()
        self.root = os.path.join(base, 'root')
        self.work = os.path.join(base, 'work')   # XML, secret files, saves
        os.makedirs(self.work, mode=0o700)
        self.swtpm_uid = pwd.getpwnam(self.swtpm_user).pw_uid
        self.swtpm_gid = self._gid(self.swtpm_group)
        self._make_root()
        self.socket_path = self.host_path(
            os.path.join(SOCKET_DIR, 'libvirt-sock'))
        if len(self.socket_path.encode()) > _MAX_SOCKET_PATH:
            raise LibvirtError(
                'socket path too long for AF_UNIX (%d bytes): %s; pass a '
                'shorter base_dir' % (len(self.socket_path),
                                      self.socket_path))
        self.uri = 'qemu:///system?socket=%s' % self.socket_path
        self.env = {'PATH': _PATH, 'LC_ALL': 'C', 'LANG': 'C',
                    'HOME': os.path.join(base, 'home')}
        os.mkdir(self.env['HOME'], 0o700)
        self.addCleanup(self._cleanup)
        self._load_caps_cache()
        self._start()
        self._save_caps_cache()

    @staticmethod
    def _gid(group):
        import grp
        return grp.getgrnam(group).gr_gid

    def _make_root(self):
        r = self.root
        modes = {'/etc/libvirt': 0o755, '/var/lib/libvirt': 0o755,
                 '/var/cache/libvirt': 0o711, '/var/log': 0o755,
                 '/run': 0o755}
        for path in PRIVATE_PATHS:
            if not os.path.isdir(path):
                raise LibvirtError('%s is missing on the host: it is needed '
                                   'as a mount point' % path)
            os.makedirs(r + path)
            os.chmod(r + path, modes.get(path, 0o755))
        # swtpm_localca runs as the swtpm user and keeps its CA there.
        os.chown(r + '/var/lib/swtpm-localca', self.swtpm_uid, 0)
        os.chmod(r + '/var/lib/swtpm-localca', 0o750)
        os.makedirs(r + '/var/log/libvirt/qemu')
        os.makedirs(r + SOCKET_DIR)
        os.mkdir(r + '/run/lock')
        os.chmod(r + '/run/lock', 0o1777)
        os.symlink('/dev/shm', r + '/run/shm')

        etc = r + '/etc/libvirt'
        log_filters = ('log_filters = "%s"\n' % self.log_filters
                       if self.log_filters else '')
        with open(os.path.join(etc, 'libvirtd.conf'), 'w') as f:
            f.write(
                '# nova-vtpm test fixture: no network listener, sockets in\n'
                '# the private /run, root only.\n'
                'listen_tls = 0\n'
                'listen_tcp = 0\n'
                'unix_sock_dir = "%s"\n'
                'unix_sock_group = "root"\n'
                'unix_sock_rw_perms = "0700"\n'
                'unix_sock_ro_perms = "0700"\n'
                'unix_sock_admin_perms = "0700"\n'
                'auth_unix_rw = "none"\n'
                'auth_unix_ro = "none"\n'
                'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'
                '%s' % (SOCKET_DIR, log_filters))
        with open(os.path.join(etc, 'virtlogd.conf'), 'w') as f:
            f.write('log_outputs = "3:file:/var/log/libvirt/virtlogd.log"\n')
        with open(os.path.join(etc, 'qemu.conf'), 'w') as f:
            f.write(
                '# nova-vtpm test fixture.\n'
                'swtpm_user = "%s"\n'
                'swtpm_group = "%s"\n'
                '# No cgroup in the host\'s (shared) cgroup tree.\n'
                'cgroup_controllers = [ ]\n'
                % (self.swtpm_user, self.swtpm_group))

    def _load_caps_cache(self):
        if not self.caps_cache_dir or not os.path.isdir(self.caps_cache_dir):
            return
        caps = self.root + _CAPS_DIR
        os.makedirs(caps, exist_ok=True)
        for name in os.listdir(self.caps_cache_dir):
            if name.endswith('.xml'):
                shutil.copy(os.path.join(self.caps_cache_dir, name), caps)

    def _save_caps_cache(self):
        """Copy new or re-probed entries back (each by an atomic rename)."""
        caps = self.root + _CAPS_DIR
        if not self.caps_cache_dir or not os.path.isdir(caps):
            return
        try:
            os.makedirs(self.caps_cache_dir, mode=0o700, exist_ok=True)
            for name in os.listdir(caps):
                src = os.path.join(caps, name)
                dst = os.path.join(self.caps_cache_dir, name)
                with open(src, 'rb') as f:
                    data = f.read()
                try:
                    with open(dst, 'rb') as f:
                        if f.read() == data:
                            continue
                except OSError:
                    pass
                fd, tmp = tempfile.mkstemp(dir=self.caps_cache_dir)
                with os.fdopen(fd, 'wb') as f:
                    f.write(data)
                os.rename(tmp, dst)
        except OSError:
            pass    # a cache: never fail a test for it

    def _start(self):
        t0 = time.monotonic()
        mounts = ''.join('mount --bind %s %s\n' % (self.root + p, p)
                         for p in PRIVATE_PATHS)
        script = ('set -e\n%sexec virtlogd -f /etc/libvirt/virtlogd.conf '
                  '-p /run/virtlogd.pid\n' % mounts)
        out = os.path.join(self.base, 'virtlogd.out')
        with open(out, 'ab') as log:
            # unshare and sh exec: the pid is virtlogd's.
            self._virtlogd = subprocess.Popen(
                ['unshare', '--mount', '--propagation', 'private', '--',
                 'sh', '-c', script],
                env=self.env, cwd=self.base, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.virtlogd_pid = self._virtlogd.pid
        self._remember(self.virtlogd_pid)
        deadline = t0 + self.start_timeout
        virtlogd_sock = self.host_path(SOCKET_DIR + '/virtlogd-sock')
        while not os.path.exists(virtlogd_sock):
            if self._virtlogd.poll() is not None:
                raise LibvirtError('virtlogd exited with %s:\n%s' % (
                    self._virtlogd.returncode, services._tail(out)))
            if time.monotonic() >= deadline:
                raise LibvirtError('virtlogd did not create %s in %ss:\n%s'
                                   % (virtlogd_sock, self.start_timeout,
                                      services._tail(out)))
            time.sleep(0.05)
        # The mounts are in place (the socket is in the private /run).
        self.mnt_ns = _mnt_ns(self.virtlogd_pid)
        if self.mnt_ns is None or self.mnt_ns == _mnt_ns(os.getpid()):
            raise LibvirtError('virtlogd is not in a mount namespace of its '
                               'own (%s)' % self.mnt_ns)

        out = os.path.join(self.base, 'libvirtd.out')
        with open(out, 'ab') as log:
            # nsenter without --fork execs: the pid is libvirtd's.
            self._libvirtd = subprocess.Popen(
                ['nsenter', '--mount=/proc/%d/ns/mnt' % self.virtlogd_pid,
                 '--', 'libvirtd', '-f', '/etc/libvirt/libvirtd.conf',
                 '-p', '/run/libvirtd.pid'],
                env=self.env, cwd='/', stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.libvirtd_pid = self._libvirtd.pid
        self._remember(self.libvirtd_pid)
        last = None
        while True:
            if self._libvirtd.poll() is not None:
                raise LibvirtError('libvirtd exited with %s:\n%s\n%s' % (
                    self._libvirtd.returncode, services._tail(out),
                    services._tail(self.libvirtd_log)))
            if os.path.exists(self.socket_path):
                last = self.virsh('version', check=False, timeout=30)
                if last.returncode == 0:
                    break
            if time.monotonic() >= deadline:
                raise LibvirtError(
                    'libvirtd did not answer in %ss (last: %s):\n%s' % (
                        self.start_timeout,
                        last and last.stderr.strip(),
                        services._tail(self.libvirtd_log)))
            time.sleep(0.1)
        self.start_times.append(time.monotonic() - t0)

    # -- virsh -------------------------------------------------------------

    def virsh(self, *args, check=True, timeout=None):
        """Run ``virsh -c <uri> args``; CompletedProcess (text).

        Raises LibvirtError on a non-zero exit unless ``check`` is False.
        """
        cmd = ['virsh', '-q', '-c', self.uri] + [str(a) for a in args]
        proc = subprocess.run(
            cmd, env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=timeout or self.virsh_timeout)
        if check and proc.returncode:
            raise LibvirtError('virsh %s failed (%s): %s' % (
                ' '.join(cmd[4:]), proc.returncode,
                (proc.stderr or proc.stdout).strip()))
        return proc

    def _write(self, name, data, mode=0o600):
        path = os.path.join(self.work, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, 'wb' if isinstance(data, bytes) else 'w') as f:
            f.write(data)
        return path

    # -- secrets -----------------------------------------------------------

    def define_vtpm_secret(self, secret_uuid, value, usage_name=None,
                           ephemeral=False, private=True):
        """Define a secret of usage type ``vtpm`` and set its value.

        ``value`` (bytes or str) goes to libvirt through a 0600 file that
        is removed at once: never on a command line or in a log.
        ``usage_name`` defaults to the secret uuid (Nova uses the
        instance uuid).
        """
        secret_uuid = str(secret_uuid)
        if isinstance(value, str):
            value = value.encode()
        xml = ("<secret ephemeral='%s' private='%s'>\n"
               "  <uuid>%s</uuid>\n"
               "  <description>nova-vtpm test vTPM secret</description>\n"
               "  <usage type='vtpm'><name>%s</name></usage>\n"
               "</secret>\n" % (
                   'yes' if ephemeral else 'no', 'yes' if private else 'no',
                   saxutils.escape(secret_uuid),
                   saxutils.escape(usage_name or secret_uuid)))
        path = self._write('secret-%s.xml' % secret_uuid, xml)
        self.virsh('secret-define', path)
        self.secrets.append(secret_uuid)
        value_file = self._write('secret-%s.value' % secret_uuid, value)
        try:
            self.virsh('secret-set-value', '--secret', secret_uuid,
                       '--file', value_file, '--plain')
        finally:
            os.unlink(value_file)
        return secret_uuid

    def undefine_secret(self, secret_uuid):
        self.virsh('secret-undefine', str(secret_uuid))
        if str(secret_uuid) in self.secrets:
            self.secrets.remove(str(secret_uuid))

    # -- domains -----------------------------------------------------------

    @staticmethod
    def vtpm_domain_xml(name, domain_uuid, secret_uuid, model='tpm-crb',
                        version='2.0', memory_mib=128):
        """A q35 TCG domain with no disk and an encrypted emulated TPM."""
        encryption = ("<encryption secret='%s'/>" % secret_uuid
                      if secret_uuid else '')
        return (
            "<domain type='qemu'>\n"
            "  <name>%(name)s</name>\n"
            "  <uuid>%(uuid)s</uuid>\n"
            "  <memory unit='MiB'>%(mem)d</memory>\n"
            "  <vcpu>1</vcpu>\n"
            "  <os><type arch='x86_64' machine='q35'>hvm</type></os>\n"
            "  <features><acpi/></features>\n"
            "  <on_poweroff>destroy</on_poweroff>\n"
            "  <on_reboot>restart</on_reboot>\n"
            "  <on_crash>destroy</on_crash>\n"
            "  <devices>\n"
            "    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n"
            "    <controller type='usb' model='none'/>\n"
            "    <memballoon model='none'/>\n"
            "    <tpm model='%(model)s'>\n"
            "      <backend type='emulator' version='%(version)s'>%(enc)s"
            "</backend>\n"
            "    </tpm>\n"
            "  </devices>\n"
            "</domain>\n" % {
                'name': saxutils.escape(name), 'uuid': domain_uuid,
                'mem': memory_mib, 'model': saxutils.escape(model),
                'version': saxutils.escape(version), 'enc': encryption})

    def define_vtpm_domain(self, name, domain_uuid, secret_uuid,
                           model='tpm-crb', **kwargs):
        """Define (persistently) a vTPM domain; returns its name."""
        xml = self.vtpm_domain_xml(name, domain_uuid, secret_uuid,
                                   model=model, **kwargs)
        path = self._write('domain-%s.xml' % name, xml)
        self.virsh('define', path)
        self.domains[name] = str(domain_uuid)
        return name

    def _record_domain_pids(self, name):
        """Remember the QEMU and swtpm pids libvirt wrote for ``name``."""
        qemu_run = self.host_path('/run/libvirt/qemu')
        candidates = [os.path.join(qemu_run, '%s.pid' % name)]
        swtpm_run = os.path.join(qemu_run, 'swtpm')
        if os.path.isdir(swtpm_run):
            candidates += [os.path.join(swtpm_run, f)
                           for f in os.listdir(swtpm_run)
                           if f.endswith('-%s-swtpm.pid' % name)]
        for path in candidates:
            try:
                with open(path) as f:
                    self._remember(int(f.read().strip()))
            except (OSError, ValueError):
                pass

    def start(self, name):
        """``virsh start``; returns the seconds it took."""
        t0 = time.monotonic()
        self.virsh('start', name)
        took = time.monotonic() - t0
        self.domain_start_times.setdefault(name, []).append(took)
        self._record_domain_pids(name)
        return took

    def destroy(self, name, check=True):
        return self.virsh('destroy', name, check=check)

    def save(self, name, path=None):
        """``virsh save`` to ``path`` (a file in the fixture's dir)."""
        path = path or os.path.join(self.work, '%s.save' % name)
        self.virsh('save', name, path)
        return path

    def restore(self, path):
        self.virsh('restore', path)
        for name in self.domains:
            self._record_domain_pids(name)

    def undefine(self, name, keep_tpm=False):
        """``virsh undefine --tpm`` (default) or ``--keep-tpm``."""
        self.virsh('undefine', name, '--keep-tpm' if keep_tpm else '--tpm')
        self.domains.pop(name, None)

    def domain_state(self, name):
        return self.virsh('domstate', name).stdout.strip()

    # -- tear-down ---------------------------------------------------------

    def _ns_members(self):
        """Pids of the live processes in the fixture's mount namespace."""
        if not self.mnt_ns:
            return []
        found = []
        for entry in os.listdir('/proc'):
            if entry.isdigit() and _mnt_ns(int(entry)) == self.mnt_ns:
                found.append(int(entry))
        return found

    def _cleanup(self):
        errors = []
        if self._libvirtd is not None and self._libvirtd.poll() is None:
            for name in list(self.domains):
                self._record_domain_pids(name)
                self.virsh('destroy', name, check=False, timeout=60)
                proc = self.virsh('undefine', name, '--tpm', '--nvram',
                                  '--managed-save', check=False, timeout=60)
                if proc.returncode:
                    errors.append('undefine %s: %s' % (
                        name, proc.stderr.strip()))
                self.domains.pop(name, None)
            for secret in list(self.secrets):
                proc = self.virsh('secret-undefine', secret, check=False,
                                  timeout=60)
                if proc.returncode:
                    errors.append('secret-undefine %s: %s' % (
                        secret, proc.stderr.strip()))
                self.secrets.remove(secret)
        leftovers = self._ns_members()
        self._remember(*leftovers)
        for attr in ('_libvirtd', '_virtlogd'):
            proc = getattr(self, attr)
            if proc is not None:
                setattr(self, attr, None)
                self._remember(*services._descendants(proc.pid))
                self.killed += services._stop_process(
                    proc, signal.SIGTERM, self.stop_timeout)
        # QEMU and swtpm are daemonised by libvirt (children of init):
        # only their recorded pids and the namespace find them.
        self._remember(*self._ns_members())
        stragglers = self.alive_pids()
        for pid in stragglers:
            services._signal(pid, signal.SIGKILL)
            self.killed.append(pid)
        deadline = time.monotonic() + 10
        while self.alive_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.alive_pids():
            errors.append('processes left: %s' % self.alive_pids())
        if errors:
            raise LibvirtError('; '.join(errors))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        sys.stderr.write('usage: python -m %s\n'
                         % (__spec__.name if __spec__ else 'libvirt_fixture'))
        return 2

    def announce(fixture):
        print(fixture.uri)
        sys.stderr.write('libvirt started in %.1fs (root %s, libvirtd pid '
                         '%d)\n' % (fixture.start_times[-1], fixture.root,
                                    fixture.libvirtd_pid))

    return services.run_until_signalled(Libvirt(), announce)


if __name__ == '__main__':
    sys.exit(main())
