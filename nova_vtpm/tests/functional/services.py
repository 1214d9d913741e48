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

"""Real RabbitMQ and PostgreSQL servers, private to one test, on loopback.

Each fixture starts its server from the distribution's binaries in a
temporary directory of its own: its own data, logs, ports, Erlang cookie
(a private ``HOME``) and, for RabbitMQ, its own ``epmd``.  Nothing global
is read or written (``/etc/rabbitmq``, ``/var/lib/rabbitmq``, the shared
``epmd`` on 4369, the system PostgreSQL cluster) and nothing is started as
a system service.  Every process started is stopped by its pid at cleanup
and the cleanup checks that it is gone.

Usable outside tests too, e.g. for a lab::

    python -m nova_vtpm.tests.functional.services rabbitmq
    python -m nova_vtpm.tests.functional.services postgresql

prints the URL on stdout and runs until SIGTERM or SIGINT.
"""

import atexit
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import fixtures

LOOPBACK = '127.0.0.1'


class ServiceError(Exception):
    """A private service failed to start or to stop."""


def free_port(host=LOOPBACK):
    """A TCP port that is free on ``host`` right now (the kernel's choice).

    There is a window between this call and the service binding the port;
    the ports come from the ephemeral range, so a clash is unlikely.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def pid_exists(pid):
    """Whether process ``pid`` exists and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open('/proc/%d/stat' % pid) as f:
            # "pid (comm) state ..."; comm may hold spaces and parentheses.
            state = f.read().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ('Z', 'X')


def _pgid_members(pgid):
    """Pids of the live processes in process group ``pgid``."""
    members = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except (OSError, IndexError):
            continue
        # Fields after comm: state ppid pgrp ...
        if fields[0] not in ('Z', 'X') and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _ppids():
    """{pid: ppid} for every live process."""
    table = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ('Z', 'X'):
            table[int(entry)] = int(fields[1])
    return table


def _children(pid):
    return [p for p, ppid in _ppids().items() if ppid == pid]


def _descendants(*pids):
    """All live descendants of ``pids``.

    Erlang port programs such as erl_child_setup and inet_gethost, and
    PostgreSQL's children, run in sessions of their own: the process group
    alone does not find them.
    """
    table = _ppids()
    found, todo = [], list(pids)
    while todo:
        parent = todo.pop()
        for pid, ppid in table.items():
            if ppid == parent and pid not in found:
                found.append(pid)
                todo.append(pid)
    return found


def _wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if pid_exists(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _stop_process(proc, sig, timeout, extra_pids=()):
    """Stop ``proc`` (a Popen leading its own session) and ``extra_pids``.

    Sends ``sig`` to the given pids, waits up to ``timeout`` seconds, then
    SIGKILLs what is left of them, of their descendants (as found before
    the signal) and of the process group of ``proc``.  Returns the pids
    that needed SIGKILL; raises ServiceError if something survives that.
    """
    pids = [p for p in list(extra_pids) + [proc.pid] if p]
    tree = _descendants(*pids)
    for pid in pids:
        if pid_exists(pid):
            _signal(pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    everything = pids + [p for p in tree if p not in pids]
    alive = _wait_gone(everything, 1 if proc.poll() is None else timeout)
    stragglers = set(alive) | set(_pgid_members(proc.pid))
    for pid in stragglers:
        _signal(pid, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    alive = _wait_gone(everything + list(stragglers), 10)
    if alive:
        raise ServiceError('processes %s survived SIGKILL' % alive)
    return sorted(stragglers)


def _traversable_by_others(path):
    """Whether every directory from / down to ``path`` has o+x."""
    path = os.path.realpath(path)
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _tail(path, lines=40):
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-lines:])
    except OSError as e:
        return '(%s)' % e


class _Service(fixtures.Fixture):
    """What the two servers share: a temp dir, timings, pid book-keeping."""

    name = 'service'

    def __init__(self, start_timeout=60, stop_timeout=30, base_dir=None):
        super().__init__()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._base_dir = base_dir
        # Every pid this fixture ever started, for "all gone" checks.
        self.all_pids = []
        # Seconds each start took, until the service accepted clients.
        self.start_times = []
        # Pids that had to be SIGKILLed at some stop.
        self.killed = []

    def _make_base(self, other_user=False):
        rootdir = self._base_dir
        if rootdir is None and other_user:
            # oslotest points TMPDIR at a private 0700 dir of root's, which
            # another user cannot cross ("could not change directory to
            # ...: Permission denied" from initdb): pick a temp root that
            # every user can traverse.
            for candidate in (tempfile.gettempdir(), '/tmp', '/var/tmp'):
                if _traversable_by_others(candidate):
                    rootdir = candidate
                    break
        self.base = self.useFixture(fixtures.TempDir(rootdir=rootdir)).path
        os.chmod(self.base, 0o700)
        return self.base

    def _remember(self, *pids):
        for pid in pids:
            if pid and pid not in self.all_pids:
                self.all_pids.append(pid)

    def alive_pids(self):
        """The pids this fixture started that still exist."""
        return [p for p in self.all_pids if pid_exists(p)]


class RabbitMQ(_Service):
    """A private RabbitMQ node, AMQP on 127.0.0.1, with its own epmd.

    ``url`` is ``rabbit://guest:guest@127.0.0.1:<port>/``: guest may log in
    only from loopback, which is where clients are.  ``stop()`` and
    ``start()`` restart the node on the same ports, node name and data
    (durable queues and persistent messages survive).  ``rabbitmqctl()``
    runs the CLI against this node.
    """

    name = 'rabbitmq'

    def __init__(self, start_timeout=60, stop_timeout=30, base_dir=None,
                 rabbitmq_bin_dir=None):
        super().__init__(start_timeout, stop_timeout, base_dir)
        self.bin_dir = rabbitmq_bin_dir or self.find_bin_dir()
        self._proc = None
        self._epmd = None
        self.erlang_pid = None

    @staticmethod
    def find_bin_dir():
        # /usr/sbin/rabbitmq-server on Debian is a wrapper that, as root,
        # "su rabbitmq"s into /var/lib/rabbitmq (global HOME, cookie and
        # data): use the real scripts it wraps.
        for candidate in sorted(glob.glob('/usr/lib/rabbitmq/bin')) + sorted(
                glob.glob('/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin'),
                reverse=True):
            if os.path.exists(os.path.join(candidate, 'rabbitmq-server')):
                return candidate
        raise ServiceError('rabbitmq-server not found under /usr/lib/rabbitmq')

    def _setUp(self):
        base = self._make_base()
        self.port = free_port()
        self.dist_port = free_port()
        self.ctl_dist_port = free_port()
        self.epmd_port = free_port()
        self.nodename = 'nvtpm%s@localhost' % uuid.uuid4().hex[:10]
        self.home = os.path.join(base, 'home')
        self.log_dir = os.path.join(base, 'log')
        for d in (self.home, self.log_dir, os.path.join(base, 'mnesia')):
            os.makedirs(d, mode=0o700)
        # An empty list: no plugin, in particular no management plugin.
        plugins = os.path.join(base, 'enabled_plugins')
        with open(plugins, 'w') as f:
            f.write('[].\n')
        conf_env = os.path.join(base, 'rabbitmq-env.conf')
        open(conf_env, 'w').close()   # not /etc/rabbitmq/rabbitmq-env.conf
        config = os.path.join(base, 'rabbitmq.conf')
        with open(config, 'w') as f:
            f.write('listeners.tcp.default = %s:%d\n'
                    'loopback_users.guest = true\n'
                    'disk_free_limit.absolute = 1MB\n'
                    'log.console = false\n'
                    'log.file.level = info\n' % (LOOPBACK, self.port))
        self.pid_file = os.path.join(base, 'rabbitmq.pid')
        self.log_file = os.path.join(self.log_dir, 'startup.log')

        env = {k: v for k, v in os.environ.items()
               if not k.startswith(('RABBITMQ_', 'ERL_'))}
        # Erlang keeps its cookie in $HOME/.erlang.cookie: a private HOME
        # shared by the node and the CLI, created by the first of them.
        # -start_epmd false: never let erl spawn a global "epmd -daemon";
        # ours is started below and stopped by pid.
        dist_args = ('-start_epmd false '
                     '-kernel inet_dist_use_interface {127,0,0,1}')
        env.update({
            'HOME': self.home,
            'LANG': 'C.UTF-8', 'LC_ALL': 'C.UTF-8',
            'ERL_EPMD_PORT': str(self.epmd_port),
            'ERL_EPMD_ADDRESS': LOOPBACK,
            'RABBITMQ_CONF_ENV_FILE': conf_env,
            'RABBITMQ_NODENAME': self.nodename,
            'RABBITMQ_USE_LONGNAME': 'false',
            'RABBITMQ_NODE_IP_ADDRESS': LOOPBACK,
            'RABBITMQ_NODE_PORT': str(self.port),
            'RABBITMQ_DIST_PORT': str(self.dist_port),
            'RABBITMQ_MNESIA_BASE': os.path.join(base, 'mnesia'),
            'RABBITMQ_LOG_BASE': self.log_dir,
            'RABBITMQ_ENABLED_PLUGINS_FILE': plugins,
            'RABBITMQ_PLUGINS_EXPAND_DIR': os.path.join(base, 'plugins'),
            'RABBITMQ_CONFIG_FILE': config,
            'RABBITMQ_ADVANCED_CONFIG_FILE': os.path.join(
                base, 'advanced.config'),
            'RABBITMQ_PID_FILE': self.pid_file,
            'RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS': dist_args,
            'RABBITMQ_CTL_ERL_ARGS': dist_args,
            'RABBITMQ_CTL_DIST_PORT_MIN': str(self.ctl_dist_port),
            'RABBITMQ_CTL_DIST_PORT_MAX': str(self.ctl_dist_port),
        })
        self.env = env
        # oslo.messaging's transport_url; kombu itself does not know the
        # "rabbit" scheme ("No such transport: rabbit"): kombu_url is for it.
        self.url = 'rabbit://guest:guest@%s:%d/' % (LOOPBACK, self.port)
        self.kombu_url = 'amqp://guest:guest@%s:%d//' % (LOOPBACK, self.port)
        self.addCleanup(self._cleanup)
        self._start_epmd()
        self.start()

    def _start_epmd(self):
        epmd = shutil.which('epmd', path=self.env.get('PATH')) or 'epmd'
        log = open(os.path.join(self.log_dir, 'epmd.log'), 'ab')
        with log:
            # Not -daemon: it stays our child, so we know its pid.
            self._epmd = subprocess.Popen(
                [epmd, '-port', str(self.epmd_port), '-address', LOOPBACK],
                env=self.env, cwd=self.base, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._remember(self._epmd.pid)
        deadline = time.monotonic() + 10
        while True:
            if self._epmd.poll() is not None:
                raise ServiceError('epmd exited with %s: %s' % (
                    self._epmd.returncode,
                    _tail(os.path.join(self.log_dir, 'epmd.log'))))
            try:
                socket.create_connection(
                    (LOOPBACK, self.epmd_port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() >= deadline:
                    raise ServiceError('epmd did not listen on %d'
                                       % self.epmd_port)
                time.sleep(0.05)

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    def start(self):
        """Start the node (again) and wait until AMQP logins work."""
        if self.running:
            return
        import kombu   # only RabbitMQ users need it

        t0 = time.monotonic()
        try:
            os.unlink(self.pid_file)
        except FileNotFoundError:
            pass
        log = open(self.log_file, 'ab')
        with log:
            self._proc = subprocess.Popen(
                [os.path.join(self.bin_dir, 'rabbitmq-server')],
                env=self.env, cwd=self.base, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._remember(self._proc.pid)
        self.erlang_pid = None
        deadline = t0 + self.start_timeout
        last = None
        while True:
            if self._proc.poll() is not None:
                raise ServiceError(
                    'rabbitmq-server exited with %s during start-up:\n%s\n%s'
                    % (self._proc.returncode, _tail(self.log_file),
                       self._node_log_tail()))
            if self.erlang_pid is None:
                self.erlang_pid = self._find_erlang_pid()
                self._remember(self.erlang_pid)
            conn = kombu.Connection(self.kombu_url, connect_timeout=2)
            try:
                conn.connect()
                break
            except Exception as e:
                last = e
            finally:
                conn.release()
            if time.monotonic() >= deadline:
                self.stop()
                raise ServiceError(
                    'RabbitMQ did not accept AMQP logins in %ss (last: %r):'
                    '\n%s\n%s' % (self.start_timeout, last,
                                  _tail(self.log_file),
                                  self._node_log_tail()))
            time.sleep(0.25)
        if self.erlang_pid is None:
            self.erlang_pid = self._find_erlang_pid()
            self._remember(self.erlang_pid)
        self.start_times.append(time.monotonic() - t0)

    def _find_erlang_pid(self, proc=None):
        """The Erlang VM's pid: the pid file, else the wrapper's child."""
        proc = proc or self._proc
        try:
            with open(self.pid_file) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            pass
        # rabbitmq-server (sh) runs "erl" in the background; erl execs
        # erlexec which execs beam.smp, all under the same pid.
        for kid in _children(proc.pid):
            try:
                with open('/proc/%d/comm' % kid) as f:
                    if f.read().strip().startswith('beam'):
                        return kid
            except OSError:
                pass
        return None

    def _node_log_tail(self):
        return _tail(os.path.join(self.log_dir, self.nodename + '.log'))

    def stop(self):
        """Stop the node gracefully (SIGTERM to the Erlang VM)."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        if proc.poll() is None and self.erlang_pid is None:
            self.erlang_pid = self._find_erlang_pid(proc)
            self._remember(self.erlang_pid)
        self._remember(*_descendants(proc.pid))
        # SIGTERM to beam: rabbit stops its apps and halts.  The sh
        # wrapper's "wait" then returns and it exits by itself.
        self.killed += _stop_process(proc, signal.SIGTERM, self.stop_timeout,
                                     extra_pids=[self.erlang_pid])

    def rabbitmqctl(self, *args, timeout=60):
        """Run rabbitmqctl against this node; returns CompletedProcess."""
        return subprocess.run(
            [os.path.join(self.bin_dir, 'rabbitmqctl'),
             '-n', self.nodename] + list(args),
            env=self.env, cwd=self.base, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout)

    def _cleanup(self):
        try:
            self.stop()
        finally:
            if self._epmd is not None:
                epmd, self._epmd = self._epmd, None
                self.killed += _stop_process(epmd, signal.SIGTERM, 10)
        alive = self.alive_pids()
        if alive:
            raise ServiceError('RabbitMQ processes left: %s' % alive)


def find_postgres_bin_dir():
    """The newest /usr/lib/postgresql/<version>/bin, else from PATH."""
    def version(path):
        v = path.split('/')[-2]
        return tuple(int(x) if x.isdigit() else 0 for x in v.split('.'))
    dirs = [d for d in glob.glob('/usr/lib/postgresql/*/bin')
            if os.path.exists(os.path.join(d, 'postgres'))]
    if dirs:
        return max(dirs, key=version)
    postgres = shutil.which('postgres')
    if postgres:
        return os.path.dirname(postgres)
    raise ServiceError('no PostgreSQL server binaries found')


class PostgreSQL(_Service):
    """A private PostgreSQL cluster on 127.0.0.1, trust auth on loopback.

    As root the server runs as the ``postgres`` system user (PostgreSQL
    refuses to run as root) in a temp dir chowned to it.  ``url`` is a
    SQLAlchemy URL to the database ``dbname``.
    """

    name = 'postgresql'

    def __init__(self, dbname='nova_vtpm', start_timeout=60,
                 stop_timeout=30, base_dir=None, bin_dir=None,
                 run_as='postgres'):
        super().__init__(start_timeout, stop_timeout, base_dir)
        self.dbname = dbname
        self.bin_dir = bin_dir or find_postgres_bin_dir()
        self.run_as = run_as if os.geteuid() == 0 else None
        self.user = 'postgres'    # the cluster's superuser role
        self._proc = None

    def _popen_kwargs(self):
        kw = {'env': self.env, 'cwd': self.base,
              'stdin': subprocess.DEVNULL}
        if self.run_as:
            # Not "runuser -u": that forks, so its pid is not postgres'.
            kw.update(user=self.uid, group=self.gid, extra_groups=[],
                      umask=0o077)
        return kw

    def _setUp(self):
        base = self._make_base(other_user=bool(self.run_as))
        self.uid, self.gid = os.getuid(), os.getgid()
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
            os.chown(base, self.uid, self.gid)
        self.data_dir = os.path.join(base, 'data')
        self.socket_dir = os.path.join(base, 'sock')
        os.mkdir(self.socket_dir, 0o700)
        os.chown(self.socket_dir, self.uid, self.gid)
        self.log_file = os.path.join(base, 'postgres.log')
        env = {k: v for k, v in os.environ.items()
               if not k.startswith('PG')}
        env.update({'HOME': base, 'LC_ALL': 'C', 'LANG': 'C'})
        self.env = env
        self.addCleanup(self._cleanup)

        t0 = time.monotonic()
        initdb = subprocess.run(
            [os.path.join(self.bin_dir, 'initdb'), '-D', self.data_dir,
             '-U', self.user, '--auth=trust', '-E', 'UTF8', '--locale=C',
             '--no-sync'],
            capture_output=True, text=True, timeout=120,
            **self._popen_kwargs())
        if initdb.returncode:
            raise ServiceError('initdb failed (%s):\n%s%s' % (
                initdb.returncode, initdb.stdout, initdb.stderr))
        self.initdb_time = time.monotonic() - t0
        with open(os.path.join(self.data_dir, 'pg_hba.conf'), 'w') as f:
            f.write('local all all trust\n'
                    'host all all 127.0.0.1/32 trust\n')
        self.port = free_port()
        self.start()
        self._create_database()
        self.url = 'postgresql+psycopg2://%s@%s:%d/%s' % (
            self.user, LOOPBACK, self.port, self.dbname)

    def _connect(self, dbname='postgres', timeout=2):
        import psycopg2
        return psycopg2.connect(host=LOOPBACK, port=self.port, user=self.user,
                                dbname=dbname, connect_timeout=timeout)

    def _create_database(self):
        conn = self._connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute('CREATE DATABASE "%s"' % self.dbname)
        finally:
            conn.close()

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    def start(self):
        """Start the server (again) and wait until it takes connections."""
        if self.running:
            return
        t0 = time.monotonic()
        log = open(self.log_file, 'ab')
        with log:
            self._proc = subprocess.Popen(
                [os.path.join(self.bin_dir, 'postgres'), '-D', self.data_dir,
                 '-h', LOOPBACK, '-p', str(self.port),
                 '-k', self.socket_dir,
                 '-c', 'fsync=off', '-c', 'synchronous_commit=off',
                 '-c', 'full_page_writes=off', '-c', 'max_connections=200',
                 '-c', 'logging_collector=off'],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                **self._popen_kwargs())
        self._remember(self._proc.pid)
        deadline = t0 + self.start_timeout
        last = None
        while True:
            if self._proc.poll() is not None:
                raise ServiceError(
                    'postgres exited with %s during start-up:\n%s'
                    % (self._proc.returncode, _tail(self.log_file)))
            try:
                self._connect(timeout=2).close()
                break
            except Exception as e:
                last = e
            if time.monotonic() >= deadline:
                self.stop()
                raise ServiceError(
                    'PostgreSQL did not accept connections in %ss (last: %r)'
                    ':\n%s' % (self.start_timeout, last,
                               _tail(self.log_file)))
            time.sleep(0.1)
        self.start_times.append(time.monotonic() - t0)

    def stop(self):
        """Fast shutdown (SIGINT), SIGKILL after ``stop_timeout``."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        self._remember(*_descendants(proc.pid))
        self.killed += _stop_process(proc, signal.SIGINT, self.stop_timeout)

    def _cleanup(self):
        self.stop()
        alive = self.alive_pids()
        if alive:
            raise ServiceError('PostgreSQL processes left: %s' % alive)


SERVICES = {'rabbitmq': RabbitMQ, 'postgresql': PostgreSQL}


# Services shared by the tests of one worker process (see shared()).
_SHARED = {}
# The real temporary directory, read at import: oslotest points tempfile at
# a directory of the running test (fixtures.NestedTempfile) and removes it
# after that test, which would pull a shared service's data from under it.
SHARED_ROOT = tempfile.gettempdir()


def shared(name, factory):
    """One service per worker process, started on first use.

    :param factory: called with ``base_dir=`` to make the fixture.
    """
    if name not in _SHARED:
        fixture = factory(base_dir=SHARED_ROOT)
        fixture.setUp()
        _SHARED[name] = fixture
    return _SHARED[name]


def stop_shared():
    """Stop every shared service (a module's tearDownModule, and atexit).

    A later shared() starts the service again.
    """
    errors = []
    while _SHARED:
        _, fixture = _SHARED.popitem()
        try:
            fixture.cleanUp()
        except Exception as e:
            errors.append(e)
    if errors:
        raise errors[0]


# In case the runner does not call tearDownModule: nothing may outlive us.
atexit.register(stop_shared)


def run_until_signalled(fixture, announce):
    """Set ``fixture`` up, ``announce(fixture)``, wait for SIGTERM/SIGINT.

    For running a private service by hand (a lab, a debugging session).
    Not sigwait with blocked signals: the mask would be inherited by the
    servers the fixture starts, which then could not be stopped by signal.

    :returns: 0 (for ``sys.exit``).
    """
    stop = []

    def handler(signum, frame):
        stop.append(signum)

    old = {s: signal.signal(s, handler)
           for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        fixture.setUp()
        try:
            announce(fixture)
            sys.stdout.flush()
            sys.stderr.write('ready; SIGTERM or SIGINT stops it\n')
            while not stop:
                time.sleep(0.2)
        finally:
            fixture.cleanUp()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in SERVICES:
        sys.stderr.write('usage: python -m %s {%s}\n'
                         % (__spec__.name if __spec__ else 'services',
                            '|'.join(sorted(SERVICES))))
        return 2

    def announce(fixture):
        print(fixture.url)
        sys.stderr.write('%s started in %.1fs (dir %s)\n' % (
            argv[0], fixture.start_times[-1], fixture.base))

    return run_until_signalled(SERVICES[argv[0]](), announce)


if __name__ == '__main__':
    sys.exit(main())
