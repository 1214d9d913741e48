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

"""The nova-vtpm agent as a separate process, and a Nova-like publisher.

:class:`AgentProcess` writes an agent configuration file in a temporary
directory of its own, starts ``nova-vtpm-agent --config-file <it>`` (the
console script next to ``sys.executable``, else ``python -m
nova_vtpm.cmd.agent``), waits until the agent logs that it started (from
then on its listener pool queue exists and is bound, so nothing published
after :meth:`AgentProcess.start` returns is lost), and stops it by pid:
SIGTERM (:meth:`~AgentProcess.stop`), SIGKILL (:meth:`~AgentProcess.kill`)
and, at cleanup, SIGTERM then SIGKILL for anything still running.  It
exposes the agent's journal (:attr:`~AgentProcess.journal`) and runs the
``nova-vtpm`` CLI on the same configuration (:meth:`~AgentProcess.cli`).
:meth:`~AgentProcess.kill_holding_claims` freezes the agent (SIGSTOP) until
it is caught holding live claims on work, then SIGKILLs it: the claims it
returns are exactly those the dead agent left behind.

:class:`NovaPublisher` sends versioned notifications the way Nova does:
a real ``oslo_messaging.Notifier`` (``driver='messagingv2'``, topic
``versioned_notifications``) on a notification transport whose
``control_exchange`` is ``nova``.

Usable from a lab too::

    rabbit = services.RabbitMQ(); rabbit.setUp()
    agent = AgentProcess(rabbit.url); agent.setUp()
    nova = NovaPublisher(rabbit.url); nova.setUp()
    nova.notify('instance.create.end', payload)
    agent.wait_for(lambda: agent.journal.count_events().get('done'))
    agent.cleanUp(); nova.cleanUp(); rabbit.cleanUp()

Durability: with oslo.messaging's defaults (``[oslo_messaging_rabbit]
amqp_durable_queues = False``) the ``nova`` exchange and the agent's pool
queue are transient; they outlive the agent (the queue is not auto-delete)
but not a broker restart. Both fixtures set ``amqp_durable_queues = True``
unless told otherwise (``durable=False``). Nova and the agent must agree on
it, as they do when both read nova.conf: the first to declare the exchange
fixes its durability. An agent asking for durability on Nova's transient
exchange gets "PRECONDITION_FAILED - inequivalent arg 'durable'" and
oslo.messaging falls back to a transient pool queue; a durable notifier
meeting the transient default queue (``<topic>.info``, one per vhost, not
per exchange) of a transient one cannot publish, and drops notifications
(logged, not raised).
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid as uuidlib

import fixtures

from nova_vtpm import journal as journal_mod

STARTED_LINE = 'nova-vtpm agent started'
STOPPED_LINE = 'nova-vtpm agent stopped'

# Quiet libraries, chatty nova_vtpm (when debug is on).
QUIET_LOG_LEVELS = ','.join([
    'amqp=WARN', 'amqplib=WARN', 'kombu=WARN', 'oslo.messaging=INFO',
    'oslo_messaging=INFO', 'sqlalchemy=WARN', 'alembic=WARN',
    'stevedore=WARN', 'keystoneauth=WARN', 'urllib3=WARN', 'iso8601=WARN',
    'oslo_policy=WARN', 'nova_vtpm=DEBUG'])


class AgentError(Exception):
    """The agent did not start, did not stop, or a wait timed out."""


def _tail(path, lines=60):
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-lines:])
    except OSError as e:
        return '(%s)' % e


def wait_for(predicate, timeout=60, interval=0.2, message='condition'):
    """Poll ``predicate`` until it returns a true value; return that value.

    :raises: AgentError after ``timeout`` seconds, with the last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AgentError('timed out after %ss waiting for %s (last: %r)'
                             % (timeout, message, value))
        time.sleep(interval)


def _pid_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except (OSError, IndexError):
        return True


class AgentProcess(fixtures.Fixture):
    """One nova-vtpm agent (``nova-vtpm-agent``) in a process of its own.

    :param transport_url: the oslo.messaging URL (``services.RabbitMQ.url``).
    :param journal_url: the journal's SQLAlchemy URL; default a sqlite file
        in the fixture's directory.
    :param role, host, pool, exchange, claim_lease, poll_interval,
        retry_base_delay, retry_max_delay, executor_threads,
        reconcile_interval: ``[nova_vtpm_agent]`` options.
    :param durable: ``[oslo_messaging_rabbit] amqp_durable_queues``.
    :param debug: ``[DEFAULT] debug`` (with quiet library loggers).
    :param extra: {section: {option: value}} added to the file.
    :param start: start the agent at setUp.
    :param start_timeout: seconds to wait for "agent started".
    """

    def __init__(self, transport_url, journal_url=None, role='controller',
                 host='agent1', pool=None, exchange='nova', claim_lease=5,
                 poll_interval=0.2, retry_base_delay=0.05,
                 retry_max_delay=1.0, executor_threads=4,
                 reconcile_interval=0, durable=True, debug=False,
                 extra=None, start=True, start_timeout=60, base_dir=None):
        super().__init__()
        self.transport_url = transport_url
        self.journal_url = journal_url
        self.role = role
        self.host = host
        self.pool = pool or 'nova-vtpm-test-%s' % uuidlib.uuid4().hex[:8]
        self.exchange = exchange
        self.agent_opts = {
            'role': role, 'host': host, 'pool': self.pool,
            'exchange': exchange, 'claim_lease': claim_lease,
            'poll_interval': poll_interval,
            'retry_base_delay': retry_base_delay,
            'retry_max_delay': retry_max_delay,
            'executor_threads': executor_threads,
            'reconcile_interval': reconcile_interval}
        self.durable = durable
        self.debug = debug
        self.extra = extra or {}
        self.start_at_setup = start
        self.start_timeout = start_timeout
        self._base_dir = base_dir
        self.proc = None
        # Every Popen this fixture started, for cleanup.
        self.procs = []
        self._journal = None

    # -- set up ----------------------------------------------------------

    def _setUp(self):
        self.base = self.useFixture(
            fixtures.TempDir(rootdir=self._base_dir)).path
        if self.journal_url is None:
            self.journal_url = 'sqlite:///' + os.path.join(
                self.base, 'journal.sqlite')
        self.log_file = os.path.join(self.base, 'agent.log')
        self.output_file = os.path.join(self.base, 'agent.out')
        self.conf_file = os.path.join(self.base, 'nova-vtpm.conf')
        self.write_conf()
        self.addCleanup(self._cleanup)
        if self.start_at_setup:
            self.start()

    def write_conf(self):
        sections = {
            'DEFAULT': {'transport_url': self.transport_url,
                        'log_file': self.log_file,
                        'debug': str(self.debug).lower()},
            'oslo_messaging_rabbit': {
                'amqp_durable_queues': str(self.durable).lower()},
            'nova_vtpm_journal': {'connection': self.journal_url,
                                  'retention_days': '0'},
            'nova_vtpm_agent': {k: str(v) for k, v in
                                self.agent_opts.items()},
        }
        if self.debug:
            sections['DEFAULT']['default_log_levels'] = QUIET_LOG_LEVELS
        for section, values in self.extra.items():
            sections.setdefault(section, {}).update(
                {k: str(v) for k, v in values.items()})
        with open(self.conf_file, 'w') as f:
            for section, values in sections.items():
                f.write('[%s]\n' % section)
                for key, value in values.items():
                    f.write('%s = %s\n' % (key, value))
                f.write('\n')

    @staticmethod
    def command():
        script = os.path.join(os.path.dirname(sys.executable),
                              'nova-vtpm-agent')
        if os.access(script, os.X_OK):
            return [script]
        return [sys.executable, '-m', 'nova_vtpm.cmd.agent']

    # -- process control -------------------------------------------------

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            with open(self.log_file, errors='replace') as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def _log_size(self):
        try:
            return os.path.getsize(self.log_file)
        except OSError:
            return 0

    def _log_since(self, offset):
        try:
            with open(self.log_file, 'rb') as f:
                f.seek(offset)
                return f.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def start(self, wait=True):
        """Start the agent; with ``wait``, until it logs "agent started"."""
        if self.running:
            raise AgentError('the agent (pid %d) is already running'
                             % self.pid)
        offset = self._log_size()
        self.started_at = time.monotonic()
        with open(self.output_file, 'ab') as out:
            self.proc = subprocess.Popen(
                self.command() + ['--config-file', self.conf_file],
                stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=self.base,
                start_new_session=True)
        self.procs.append(self.proc)
        if wait:
            self.wait_started(offset)
        return self.proc

    def wait_started(self, offset=0):
        proc = self.proc
        marker = '%s: role' % STARTED_LINE
        deadline = time.monotonic() + self.start_timeout
        while marker not in self._log_since(offset):
            if proc.poll() is not None:
                raise AgentError(
                    'the agent exited with %s while starting:\n%s\n%s' % (
                        proc.returncode, _tail(self.output_file),
                        _tail(self.log_file)))
            if time.monotonic() >= deadline:
                raise AgentError(
                    'the agent did not start in %ss:\n%s\n%s' % (
                        self.start_timeout, _tail(self.output_file),
                        _tail(self.log_file)))
            time.sleep(0.1)
        self.start_seconds = time.monotonic() - self.started_at

    def stop(self, timeout=30):
        """SIGTERM; returns (exit code, seconds it took).

        SIGKILLs the agent (and raises AgentError) when it is still there
        after ``timeout`` seconds.
        """
        proc = self.proc
        if proc is None:
            return None, 0.0
        t0 = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            raise AgentError('the agent (pid %d) ignored SIGTERM for %ss:\n%s'
                             % (proc.pid, timeout, _tail(self.log_file)))
        finally:
            self.proc = None
        return rc, time.monotonic() - t0

    def pause(self):
        """SIGSTOP: freeze the agent (to look at its claims, then kill)."""
        self.proc.send_signal(signal.SIGSTOP)
        # Stopped once /proc says so ("T").
        wait_for(lambda: self._state() in ('T', 't', None), timeout=10,
                 interval=0.01, message='agent stopped by SIGSTOP')

    def resume(self):
        """SIGCONT."""
        self.proc.send_signal(signal.SIGCONT)

    def _state(self):
        try:
            with open('/proc/%d/stat' % self.proc.pid) as f:
                return f.read().rsplit(')', 1)[1].split()[0]
        except OSError:
            return None

    def kill(self):
        """SIGKILL; returns the exit code (-9)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        return self._kill(proc)

    @staticmethod
    def _kill(proc):
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
        return proc.wait(timeout=30)

    def kill_holding_claims(self, predicate=lambda held: held, timeout=60):
        """SIGKILL the agent at a moment it holds live claims.

        Freezes it (SIGSTOP), reads its live claims, and kills it when
        ``predicate(claims)`` is true, else lets it run a little and tries
        again. Returns the claims it held when it died: work rows (dicts)
        claimed by this agent whose lease had not run out.
        """
        from nova_vtpm.journal import models

        prefix = '%s:%d' % (self.host, self.pid)
        deadline = time.monotonic() + timeout
        while True:
            self.pause()
            now = time.time()
            with self.journal.engine.connect() as conn:
                held = [dict(r._mapping) for r in conn.execute(
                    models.work.select().where(
                        models.work.c.claimed_by == prefix,
                        models.work.c.state.in_(('pending', 'retry')),
                        models.work.c.claimed_until > now))]
            if predicate(held):
                self.kill()
                return held
            self.resume()
            if time.monotonic() >= deadline:
                raise AgentError('the agent held no claims (as wanted) in '
                                 '%ss' % timeout)
            time.sleep(0.02)

    def _cleanup(self):
        survivors = []
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                # In case a test left it frozen (pause()).
                proc.send_signal(signal.SIGCONT)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self._kill(proc)
            if _pid_exists(proc.pid):
                survivors.append(proc.pid)
        self.proc = None
        if self._journal is not None:
            self._journal.engine.dispose()
            self._journal = None
        if survivors:
            raise AgentError('agent processes left: %s' % survivors)

    # -- results ---------------------------------------------------------

    @property
    def journal(self):
        """A :class:`~nova_vtpm.journal.Journal` on the agent's database."""
        if self._journal is None:
            self._journal = journal_mod.Journal(self.journal_url)
        return self._journal

    def cli_command(self, *args):
        """The ``nova-vtpm --config-file <conf> ARGS`` command line."""
        script = os.path.join(os.path.dirname(sys.executable), 'nova-vtpm')
        cmd = ([script] if os.access(script, os.X_OK) else
               [sys.executable, '-m', 'nova_vtpm.cmd.cli'])
        return cmd + ['--config-file', self.conf_file] + list(args)

    def cli(self, *args, check=True, timeout=60):
        """Run ``nova-vtpm --config-file <conf> ARGS``.

        :returns: the parsed JSON output when ``--format json`` is in
            ``args``, else the CompletedProcess.
        """
        result = subprocess.run(
            self.cli_command(*args),
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout, cwd=self.base)
        if check and result.returncode:
            raise AgentError('nova-vtpm %s exited with %d:\n%s%s' % (
                ' '.join(args), result.returncode, result.stdout,
                result.stderr))
        if '--format' in args and 'json' in args and not result.returncode:
            return json.loads(result.stdout)
        return result

    def wait_for(self, predicate, timeout=60, interval=0.2,
                 message='condition'):
        """:func:`wait_for`, failing at once if the agent died."""
        def check():
            if self.proc is not None and self.proc.poll() is not None:
                raise AgentError('the agent exited with %s:\n%s' % (
                    self.proc.returncode, _tail(self.log_file)))
            return predicate()
        try:
            return wait_for(check, timeout, interval, message)
        except AgentError as e:
            raise AgentError('%s\nagent log:\n%s' % (e, _tail(self.log_file)))

    def events(self, **kwargs):
        """Every event of the journal, oldest first (no payloads)."""
        kwargs.setdefault('limit', 0)
        return self.journal.list_events(newest_first=False, **kwargs)

    def count_events(self):
        try:
            return self.journal.count_events()
        except Exception:
            return {}   # the agent has not created the schema yet


class NovaPublisher(fixtures.Fixture):
    """Nova's notifier: versioned notifications on the ``nova`` exchange.

    The transport runs on a ConfigOpts of its own with ``control_exchange``
    (the notifier's exchange) set to ``exchange`` and
    ``[oslo_messaging_rabbit] amqp_durable_queues`` to ``durable``.

    :meth:`notify` sends through a real ``oslo_messaging.Notifier``
    (message ids and timestamps of its own making); :meth:`send_raw_v2`
    sends a prepared message (a chosen ``message_id``) through the same
    transport and the same code path as the notifier's ``messagingv2``
    driver.
    """

    def __init__(self, url, exchange='nova', durable=True,
                 topic='versioned_notifications'):
        super().__init__()
        self.url = url
        self.exchange = exchange
        self.durable = durable
        self.topic = topic

    def _setUp(self):
        from oslo_config import cfg
        import oslo_messaging

        # A file, not set_override: the options are registered by
        # get_notification_transport, which already reads them.
        base = self.useFixture(fixtures.TempDir()).path
        path = os.path.join(base, 'nova.conf')
        with open(path, 'w') as f:
            f.write('[DEFAULT]\ncontrol_exchange = %s\n\n'
                    '[oslo_messaging_rabbit]\namqp_durable_queues = %s\n'
                    % (self.exchange, str(self.durable).lower()))
        self.conf = cfg.ConfigOpts()
        self.conf([], project='nova-vtpm-test', default_config_files=[path])
        self.transport = oslo_messaging.get_notification_transport(
            self.conf, url=self.url)
        self.addCleanup(self.transport.cleanup)
        self.notifiers = {}

    def notifier(self, publisher_id):
        import oslo_messaging

        if publisher_id not in self.notifiers:
            self.notifiers[publisher_id] = oslo_messaging.Notifier(
                self.transport, publisher_id=publisher_id,
                driver='messagingv2', topics=[self.topic])
        return self.notifiers[publisher_id]

    def notify(self, event_type, payload,
               publisher_id='nova-compute:compute1', priority='info'):
        getattr(self.notifier(publisher_id), priority)({}, event_type,
                                                       payload)

    def send_raw_v2(self, event_type, payload, message_id=None,
                    publisher_id='nova-compute:compute1', priority='info',
                    timestamp=None):
        """Send one message as the notifier's messagingv2 driver does.

        :returns: the message id.
        """
        import datetime

        import oslo_messaging

        message_id = message_id or str(uuidlib.uuid4())
        msg = dict(message_id=message_id, publisher_id=publisher_id,
                   event_type=event_type, priority=priority.upper(),
                   payload=payload,
                   timestamp=timestamp or str(datetime.datetime.now(
                       datetime.timezone.utc).replace(tzinfo=None)))
        target = oslo_messaging.Target(topic='%s.%s' % (self.topic,
                                                        priority.lower()))
        self.transport._send_notification(target, {}, msg, version=2.0)
        return message_id
