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

"""The keylime hook against a real Keylime 7.14 registrar and verifier.

Guests are real swtpm TPMs manufactured as libvirt does (``swtpm_setup
--vmid <domain name>:<instance uuid>``, EK certificates from a private
swtpm-localca per "compute host"), each with keylime 6.4.3's agent
registered under the instance UUID.

:class:`KeylimeHookTest` drives the hook the way the agent's worker does
(:func:`drive`: a ``RetryLater`` is tried again after its delay), with Nova
mocked for the failure actions: enrolment, policies, refusals, a verifier
that is down, late and missing registrations, a PCR change caught by the
reconciliation, a live migration blackout the verifier gave up on.

:class:`KeylimeNovaTest` is the whole path: real in-process Nova (two
fake-libvirt computes) -> RabbitMQ -> a nova-vtpm agent process running the
keylime hook -> Keylime; the failure actions reach Nova's API through
:class:`NovaAPIBridge`. :class:`AttestationScenario` is shared with the lab.
"""

import dataclasses
import json
import os
import signal
import socketserver
import subprocess
import tempfile
import threading
import time
from unittest import mock
import uuid as uuidlib

import fixtures
from oslo_config import cfg
from oslotest import base as oslo_base
from testtools import content

from nova_vtpm.agent import events
from nova_vtpm.cmd import ca as ca_cmd
from nova_vtpm import conf as nova_vtpm_conf
from nova_vtpm.hooks import base as hooks_base
from nova_vtpm.hooks import keylime as keylime_hook
from nova_vtpm.hooks import manager as manager_mod
from nova_vtpm import journal as journal_mod
from nova_vtpm.keylime import client as kl_client
from nova_vtpm.tests.functional import keylime_fixture
from nova_vtpm.tests.functional import services
from nova_vtpm import tpm

PCR = 23
ZERO_SHA256 = '0' * 64
POLICIES = {'pcr23': {str(PCR): [ZERO_SHA256]}}
REQUIRED = {'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb',
            'hw:tpm_secret_security': 'host',
            'keylime:attestation': 'required'}
OPTIONAL = dict(REQUIRED, **{'keylime:attestation': 'optional'})


class FastFailKeylimeStack(keylime_fixture.KeylimeStack):
    """A Keylime whose verifier gives up on a silent agent sooner.

    Defaults: 60 s per request, 5 retries with exponential backoff. Here:
    one retry after 1 s. (An agent that accepts the connection but does
    not answer still costs tornado's 20 s connect timeout per try.)
    """

    def _write_configs(self):
        super()._write_configs()
        keylime_fixture._edit_config(self._conf('verifier'), {'verifier': {
            'request_timeout': 2, 'retry_interval': 1, 'max_retries': 1,
            'exponential_backoff': False}})

    def stop_verifier(self):
        """Stop the verifier alone (the registrar keeps running)."""
        proc = self._procs.pop('verifier')
        kids = services._children(proc.pid)
        self._remember(*kids)
        self._remember(*services._descendants(proc.pid))
        try:
            self.killed += services._stop_process(
                proc, signal.SIGTERM, self.stop_timeout, extra_pids=kids)
        finally:
            self._remove_shared_data_sockets(proc.pid)

    def start_verifier(self):
        t0 = time.monotonic()
        self._start_service('verifier', self.verifier_port)
        return time.monotonic() - t0


def make_host_ca(ca_dir, trust_dir, host):
    """A compute host's swtpm-localca, exported to ``trust_dir``.

    The CA is created now (``nova-vtpm ca export --create``'s code) and
    exported as ``<host>-root.pem`` / ``<host>-issuer.pem``, as each compute
    host does for the controller.
    """
    keylime_fixture.make_swtpm_ca(ca_dir)
    ca = ca_cmd.LocalCA(os.path.join(ca_dir, 'swtpm-localca.conf'))
    ca.create()
    if trust_dir:
        os.makedirs(trust_dir, exist_ok=True)
        for name, _, pem in ca.certificates(host):
            ca_cmd.write_atomic(os.path.join(trust_dir, name), pem)
    return ca_dir


def make_event(uuid, lifecycle='boot', specs=REQUIRED, host='compute1',
               project='p1', timestamp=None, policies=POLICIES,
               flavor_name='vtpm.attested'):
    event = events.InstanceEvent(
        event_type=hooks_base.LIFECYCLE_EVENTS[lifecycle],
        lifecycle=lifecycle, instance_uuid=uuid, host=host,
        project_id=project, flavor_name=flavor_name, flavor_specs=specs,
        publisher_id='nova-compute:%s' % host,
        timestamp=time.time() if timestamp is None else timestamp)
    event.request = tpm.resolve(specs, {}, flavor_name=flavor_name,
                                tpm_policies=policies)
    return event


def server_view(uuid, specs=REQUIRED, host='compute1', vm_state='active',
                policies=POLICIES):
    server = events.ServerView(
        uuid=uuid, host=host, vm_state=vm_state, task_state=None,
        project_id='p1', flavor_name='vtpm.attested', flavor_specs=specs,
        image_uuid=None)
    server.request = tpm.resolve(specs, {}, tpm_policies=policies)
    return server


@dataclasses.dataclass
class Outcome:
    state: str
    reason: str = None
    attempts: int = 0
    seconds: float = 0.0


def drive(method, event, timeout=60, max_delay=1.0):
    """Call a hook method until it is done or failed, as the worker does.

    A ``RetryLater`` is tried again after its delay (at most
    ``max_delay``, to keep tests short); ``timeout`` bounds the whole.
    """
    t0 = time.monotonic()
    attempts = 0
    reason = None
    while True:
        attempts += 1
        try:
            method(event)
        except hooks_base.PermanentFailure as e:
            return Outcome('failed', str(e), attempts,
                           time.monotonic() - t0)
        except hooks_base.RetryLater as e:
            reason = str(e)
            if time.monotonic() - t0 > timeout:
                return Outcome('retry', reason, attempts,
                               time.monotonic() - t0)
            time.sleep(min(e.delay or 0.5, max_delay))
            continue
        return Outcome('done', reason, attempts, time.monotonic() - t0)


def wait_for(what, predicate, timeout=60, interval=0.25, log=None):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError('%s: not within %ss (last: %r)%s' % (
                what, timeout, last, '\n' + log() if log else ''))
        time.sleep(interval)


def verifier_status(verifier, uuid):
    try:
        return verifier.get_agent(uuid)
    except kl_client.AgentNotFound:
        return None


def in_registrar(registrar, uuid):
    try:
        registrar.get_agent(uuid)
        return True
    except kl_client.AgentNotRegistered:
        return False


def pause(agent):
    """SIGSTOP a guest's Keylime agent (a migration's blackout)."""
    pids = [agent._proc.pid] + services._descendants(agent._proc.pid)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


def resume(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


class KeylimeHookTest(oslo_base.BaseTestCase):
    """The hook driven directly, one real Keylime for the class."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        install = keylime_fixture.require_keylime()
        cls.stack = FastFailKeylimeStack(install, quote_interval=1)
        cls.stack.setUp()

    @classmethod
    def tearDownClass(cls):
        cls.stack.cleanUp()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.trust_dir = os.path.join(self.tmp, 'trust')
        # compute1's CA is trusted, compute2's is not exported.
        self.host1 = make_host_ca(os.path.join(self.tmp, 'ca1'),
                                  self.trust_dir, 'compute1')
        self.host2 = make_host_ca(os.path.join(self.tmp, 'ca2'), None,
                                  'compute2')
        policy_file = os.path.join(self.tmp, 'policies.json')
        with open(policy_file, 'w') as f:
            json.dump(POLICIES, f)
        self.conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(self.conf)
        self.conf([], default_config_files=[])
        self.flags(registrar_url=self.stack.registrar_url,
                   verifier_url=self.stack.verifier_url,
                   cert_file=self.stack.client_cert,
                   key_file=self.stack.client_key,
                   ca_file=self.stack.ca_file, timeout=5, retries=1,
                   retry_backoff=0.1, ek_trust_dir=self.trust_dir,
                   failure_action='lock')
        self.flags(group='nova_vtpm_attestation',
                   tpm_policy_file=policy_file)
        self.journal = journal_mod.Journal(
            'sqlite:///' + os.path.join(self.tmp, 'journal.sqlite'))
        self.journal.upgrade()
        self.clients = mock.Mock(configured=True)
        self.nova = self.clients.nova.return_value
        self.nova.api_version = None
        self.hook = self.make_hook()
        self.flags(group=keylime_hook.GROUP, registration_poll_min=0.2,
                   probe_timeout=0.5)
        self.registrar = self.stack.registrar_client()
        self.verifier = self.stack.verifier_client()
        self.timings = {}
        self.addCleanup(self._report)

    def _report(self):
        self.addDetail('timings', content.text_content(json.dumps(
            {k: round(v, 3) for k, v in self.timings.items()}, indent=1)))

    def flags(self, group='nova_vtpm_keylime', **kwargs):
        for key, value in kwargs.items():
            self.conf.set_override(key, value, group)

    def make_hook(self):
        context = manager_mod.HookContext(self.conf, self.journal,
                                          'controller', 'controller',
                                          self.clients)
        return keylime_hook.KeylimeHook(context)

    def guest(self, name='vm', ca=None, instance_uuid=None, agent_uuid=None,
              start_agent=True):
        guest = self.useFixture(keylime_fixture.SwtpmGuest(
            name, instance_uuid=instance_uuid, ca_dir=ca or self.host1))
        agent = self.useFixture(keylime_fixture.KeylimeAgent(
            self.stack, guest, agent_uuid=agent_uuid, start=start_agent))
        self.addCleanup(self._forget, agent.agent_uuid)
        return guest, agent

    def _forget(self, uuid):
        self.verifier.delete_agent(uuid, missing_ok=True)
        self.registrar.delete_agent(uuid, missing_ok=True)

    def wait_status(self, uuid, condition, what, timeout=60):
        def check():
            status = verifier_status(self.verifier, uuid)
            return status if status is not None and condition(status) \
                else None
        return wait_for(what, check, timeout,
                        log=lambda: self.stack.log('verifier'))

    def assert_never_added(self, uuid):
        self.assertIsNone(verifier_status(self.verifier, uuid))

    def row(self, uuid):
        return self.journal.get_attestation(uuid)

    # -- the tests -----------------------------------------------------

    def test_enrol_pass_tamper_reconcile_delete(self):
        """Happy path with a PCR policy; a PCR extend is caught; delete."""
        guest, agent = self.guest('instance-00000001')
        uuid = guest.instance_uuid
        specs = dict(REQUIRED, **{'keylime:tpm_policy': 'pcr23'})
        event = make_event(uuid, specs=specs)
        t0 = time.monotonic()
        outcome = drive(self.hook.on_boot, event)
        self.timings['boot-to-add'] = outcome.seconds
        self.assertEqual('done', outcome.state, outcome.reason)
        status = self.wait_status(uuid, lambda s: s.passed, 'PASS')
        self.timings['boot-to-pass'] = time.monotonic() - t0
        row = self.row(uuid)
        self.assertEqual(('enrolled', 'required', 'pcr23', 'compute1', 'p1'),
                         (row['state'], row['mode'], row['tpm_policy'],
                          row['host'], row['project_id']))
        self.assertEqual('CN=instance-00000001:%s' % uuid,
                         row['ek_subject'])
        self.assertEqual(('127.0.0.1', agent.port),
                         (row['agent_ip'], row['agent_port']))
        # The verifier got the policy of the file and our metadata.
        raw = status.raw
        if 'tpm_policy' in raw:
            self.assertEqual({'23': [ZERO_SHA256], 'mask': hex(1 << PCR)},
                             json.loads(raw['tpm_policy']))
        if 'meta_data' in raw:
            meta = json.loads(raw['meta_data'])
            self.assertEqual((uuid, 'p1', 'compute1', 'vtpm.attested'),
                             (meta['instance_uuid'], meta['project_id'],
                              meta['host'], meta['flavor']))

        # The same event again (a redelivery): still done, nothing new.
        self.assertEqual('done', drive(self.hook.on_boot, event).state)

        # A reconciliation records the verifier's view; nothing to do.
        counts = self.hook.reconcile([server_view(uuid, specs)])
        self.assertEqual(1, counts['passed'], counts)
        row = self.row(uuid)
        self.assertEqual(('Get Quote', 'PASS'),
                         (row['operational_state_name'],
                          row['attestation_status']))
        self.assertGreater(row['attestation_count'], 0)
        self.assertIsNotNone(row['last_success'])
        self.assertFalse(self.nova.servers.lock.called)

        # The guest's PCR 23 changes: the verifier fails it, the
        # reconciliation applies the action, once.
        t1 = time.monotonic()
        guest.pcr_extend(PCR, 'ab' * 32)
        self.wait_status(uuid, lambda s: s.failed, 'attestation failure')
        counts = self.hook.reconcile([server_view(uuid, specs)])
        self.timings['extend-to-action'] = time.monotonic() - t1
        self.assertEqual(1, counts['failed'], counts)
        self.nova.servers.lock.assert_called_once_with(uuid, reason=mock.ANY)
        reason = self.nova.servers.lock.call_args[1]['reason']
        self.assertTrue(reason.startswith('nova-vtpm: Keylime attestation: '
                                          'The verifier reports a failed '
                                          'attestation'), reason)
        row = self.row(uuid)
        self.assertEqual(('enrolled', 'FAIL', 'lock'),
                         (row['state'], row['attestation_status'],
                          row['action']))
        self.assertIn('Invalid Quote', row['last_failure_reason'])
        self.hook.reconcile([server_view(uuid, specs)])
        self.assertEqual(1, self.nova.servers.lock.call_count)
        failed = self.journal.list_events(
            event_type=keylime_hook.EVENT_FAILED, instance_uuid=uuid)
        self.assertEqual(1, len(failed))

        # Delete: gone from both.
        outcome = drive(self.hook.on_delete, make_event(uuid, 'delete',
                                                        specs=specs))
        self.assertEqual('done', outcome.state, outcome.reason)
        wait_for('verifier delete', lambda: verifier_status(
            self.verifier, uuid) is None, 30)
        self.assertFalse(in_registrar(self.registrar, uuid))
        self.assertEqual('removed', self.row(uuid)['state'])
        # A late boot event enrols nothing; a second delete is fine.
        self.assertEqual('done', drive(self.hook.on_boot, event).state)
        self.assertEqual('done', drive(
            self.hook.on_delete, make_event(uuid, 'delete')).state)
        self.assert_never_added(uuid)

    def test_impostors_are_refused_and_never_added(self):
        # A guest whose vTPM was made for instance A registers as C.
        victim = str(uuidlib.uuid4())
        c_uuid = str(uuidlib.uuid4())
        self.guest('instance-a', instance_uuid=victim, agent_uuid=c_uuid)
        # A guest whose CA (compute2) is not trusted.
        stranger, _ = self.guest('instance-d', ca=self.host2)
        # An honest guest, for crafted registrar answers.
        honest, _ = self.guest('instance-e')

        outcome = drive(self.hook.on_boot, make_event(c_uuid))
        self.assertEqual('failed', outcome.state)
        self.assertIn('belongs to instance %s' % victim, outcome.reason)
        self.assertIn('not to instance %s' % c_uuid, outcome.reason)
        self.assert_never_added(c_uuid)
        self.assertEqual('refused', self.row(c_uuid)['state'])
        self.assertIn('belongs to instance', self.row(c_uuid)[
            'last_failure_reason'])
        self.nova.servers.lock.assert_called_once_with(c_uuid,
                                                       reason=mock.ANY)

        outcome = drive(self.hook.on_boot, make_event(
            stranger.instance_uuid))
        self.assertEqual('failed', outcome.state)
        self.assertIn('does not chain to a trusted root CA', outcome.reason)
        self.assert_never_added(stranger.instance_uuid)
        self.assertEqual('refused', self.row(stranger.instance_uuid)[
            'state'])

        # ek_tpm of another TPM than the certificate's; no EK
        # certificate at all: crafted registrar answers.
        real = self.registrar
        other = real.get_agent(stranger.instance_uuid)

        class Crafted:
            def __init__(self, **changes):
                self.changes = changes

            def get_agent(self, uuid):
                return dataclasses.replace(real.get_agent(uuid),
                                           **self.changes)

            def delete_agent(self, uuid, missing_ok=False):
                return real.delete_agent(uuid, missing_ok=missing_ok)

        self.hook._registrar = Crafted(ek_tpm=other.ek_tpm)
        outcome = drive(self.hook.on_boot, make_event(honest.instance_uuid))
        self.assertEqual('failed', outcome.state)
        self.assertIn('not the EK the TPM proved', outcome.reason)
        self.assert_never_added(honest.instance_uuid)

        self.hook._registrar = Crafted(ekcert=None)
        outcome = drive(self.hook.on_boot, make_event(honest.instance_uuid))
        self.assertEqual('failed', outcome.state)
        self.assertIn('registered no EK certificate', outcome.reason)
        self.assert_never_added(honest.instance_uuid)
        self.assertEqual('refused', self.row(honest.instance_uuid)['state'])

        # The honest answer: enrolled, and its failure action undone.
        self.hook._registrar = real
        outcome = drive(self.hook.on_boot, make_event(honest.instance_uuid))
        self.assertEqual('done', outcome.state, outcome.reason)
        self.assertEqual('enrolled', self.row(honest.instance_uuid)['state'])
        self.nova.servers.unlock.assert_called_once_with(
            honest.instance_uuid)
        self.wait_status(honest.instance_uuid, lambda s: s.passed, 'PASS')
        # Four refusals, one lock each (three servers; the honest one
        # twice, by two different failures).
        self.assertEqual(4, self.nova.servers.lock.call_count)
        # The reconciliation does not enrol the impostors either.
        counts = self.hook.reconcile([
            server_view(c_uuid), server_view(stranger.instance_uuid),
            server_view(honest.instance_uuid)])
        self.assertEqual((2, 1), (counts['refused'], counts['passed']),
                         counts)
        self.assert_never_added(c_uuid)
        self.assert_never_added(stranger.instance_uuid)
        self.assertEqual(4, self.nova.servers.lock.call_count)

    def test_verifier_down_late_and_missing_registrations(self):
        # Two servers boot while the verifier is down.
        guests = [self.guest('instance-1%d' % n)[0] for n in range(2)]
        self.stack.stop_verifier()
        restarted = []
        self.addCleanup(lambda: restarted or self.stack.start_verifier())
        boot = {g.instance_uuid: make_event(g.instance_uuid)
                for g in guests}
        for uuid, event in boot.items():
            outcome = drive(self.hook.on_boot, event, timeout=2)
            self.assertEqual('retry', outcome.state)
            self.assertIn('unavailable', outcome.reason)
            self.assertEqual('waiting', self.row(uuid)['state'])
        self.timings['verifier-restart'] = self.stack.start_verifier()
        restarted.append(True)
        # The retries go through (the first one's event) and the
        # reconciliation enrols the second (its event gave up).
        self.assertEqual('done', drive(self.hook.on_boot,
                                       boot[guests[0].instance_uuid]).state)
        counts = self.hook.reconcile([server_view(u) for u in boot])
        self.assertEqual((1, 1), (counts['enrolled'], counts['pending'] +
                                  counts['passed']), counts)
        for uuid in boot:
            self.wait_status(uuid, lambda s: s.passed, 'PASS')
            self.assertEqual('enrolled', self.row(uuid)['state'])

        # An agent that registers minutes after the boot (3 min ago,
        # within the 10 min deadline): the hook waits, then enrols it.
        late, late_agent = self.guest('instance-late', start_agent=False)
        event = make_event(late.instance_uuid, timestamp=time.time() - 180)
        outcome = drive(self.hook.on_boot, event, timeout=1)
        self.assertEqual('retry', outcome.state)
        self.assertIn('has not registered yet (18', outcome.reason)
        t0 = time.monotonic()
        late_agent.start()
        registered = time.monotonic()
        outcome = drive(self.hook.on_boot, event)
        self.assertEqual('done', outcome.state, outcome.reason)
        self.timings['registered-to-added'] = time.monotonic() - registered
        self.timings['late-agent-start-to-added'] = time.monotonic() - t0
        self.wait_status(late.instance_uuid, lambda s: s.passed, 'PASS')

        # An agent that never registers: past the deadline, the
        # required server gets the action; an optional one a record.
        self.flags(registration_deadline=2)
        never, optional = str(uuidlib.uuid4()), str(uuidlib.uuid4())
        outcome = drive(self.hook.on_boot, make_event(never), timeout=10)
        self.assertEqual('failed', outcome.state)
        self.assertGreaterEqual(outcome.seconds, 1.5)
        self.assertIn('did not register', outcome.reason)
        self.nova.servers.lock.assert_called_once_with(never,
                                                       reason=mock.ANY)
        self.assertEqual(('failed', 'lock'), (self.row(never)['state'],
                                              self.row(never)['action']))
        outcome = drive(self.hook.on_boot, make_event(
            optional, specs=OPTIONAL, timestamp=time.time() - 5))
        self.assertEqual('done', outcome.state)
        self.assertEqual('failed', self.row(optional)['state'])
        self.assertEqual(1, self.nova.servers.lock.call_count)
        self.assert_never_added(never)

        # The optional server's agent registers after all: the
        # reconciliation enrols it.
        guest, _ = self.guest('instance-optional', instance_uuid=optional)
        counts = self.hook.reconcile(
            [server_view(optional, OPTIONAL), server_view(never)] +
            [server_view(u) for u in list(boot) + [late.instance_uuid]])
        self.assertEqual((1, 1, 3), (counts['enrolled'], counts['refused'],
                                     counts['passed']), counts)
        self.assertEqual('enrolled', self.row(optional)['state'])
        self.assertEqual('failed', self.row(never)['state'])
        self.assertEqual(1, self.nova.servers.lock.call_count)

        # Servers gone from Nova: the reconciliation removes their agents.
        counts = self.hook.reconcile([])
        self.assertEqual(5, counts['removed'], counts)
        for uuid in list(boot) + [late.instance_uuid, optional]:
            wait_for('removed %s' % uuid, lambda: verifier_status(
                self.verifier, uuid) is None, 30)
            self.assertFalse(in_registrar(self.registrar, uuid))
            self.assertEqual('removed', self.row(uuid)['state'])

    def test_live_migration_blackout_the_verifier_gave_up_on(self):
        guest, agent = self.guest('instance-migrating')
        uuid = guest.instance_uuid
        self.assertEqual('done', drive(self.hook.on_boot,
                                       make_event(uuid)).state)
        self.wait_status(uuid, lambda s: s.passed, 'PASS')

        # The migration's blackout: the guest's agent is silent longer
        # than the verifier's retries.
        pids = pause(agent)
        self.addCleanup(resume, pids)
        migrated = time.time()
        t0 = time.monotonic()
        status = self.wait_status(uuid, lambda s: s.failed,
                                  'the verifier giving up', timeout=90)
        self.timings['blackout-to-gave-up'] = time.monotonic() - t0
        self.assertIn(status.operational_state, kl_client.FAILED_STATES)
        event = make_event(uuid, 'live_migration_post_dest', host='compute2',
                           timestamp=migrated)
        # Still silent: the hook waits.
        outcome = drive(self.hook.on_live_migration_post_dest, event,
                        timeout=1)
        self.assertEqual('retry', outcome.state)
        # The guest runs again on the destination.
        resume(pids)
        t1 = time.monotonic()
        outcome = drive(self.hook.on_live_migration_post_dest, event,
                        timeout=90)
        self.timings['resumed-to-pass'] = time.monotonic() - t1
        self.assertEqual('done', outcome.state, outcome.reason)
        status = verifier_status(self.verifier, uuid)
        self.assertTrue(status.passed, status)
        row = self.row(uuid)
        self.assertEqual(('enrolled', 'compute2', None),
                         (row['state'], row['host'], row['failure_key']))
        self.assertFalse(self.nova.servers.lock.called)
        # And it stays attested.
        time.sleep(3)
        self.assertTrue(verifier_status(self.verifier, uuid).passed)


class NovaAPIBridge(fixtures.Fixture):
    """Nova's in-process API (wsgi-intercept) on a real loopback port.

    Another process (the agent) reaches it with ``[nova_vtpm_service]
    auth_type = none`` and ``[nova_vtpm_nova] endpoint_override =
    <url>``; every request is made as the admin of ``project_id``, the way
    Nova's test clients authenticate (headers, no Keystone).

    In a process eventlet has patched (Nova's functional tests), the
    server is an eventlet WSGI server in a green thread: a native server
    loop would never yield to the test's green threads.
    """

    def __init__(self, upstream, project_id):
        super().__init__()
        self.upstream = upstream.rstrip('/')
        self.project_id = project_id

    def app(self, environ, start_response):
        import requests

        length = int(environ.get('CONTENT_LENGTH') or 0)
        body = environ['wsgi.input'].read(length) if length else None
        path = environ.get('PATH_INFO', '')
        if environ.get('QUERY_STRING'):
            path += '?' + environ['QUERY_STRING']
        headers = {k[5:].replace('_', '-').title(): v
                   for k, v in environ.items()
                   if k.startswith('HTTP_') and k not in (
                       'HTTP_HOST', 'HTTP_CONNECTION')}
        if environ.get('CONTENT_TYPE'):
            headers['Content-Type'] = environ['CONTENT_TYPE']
        headers.update({'X-Auth-User': 'admin',
                        'X-Auth-Project-Id': self.project_id,
                        'X-Roles': 'reader,member,admin'})
        resp = requests.request(environ['REQUEST_METHOD'],
                                self.upstream + path, data=body,
                                headers=headers, timeout=60)
        data = resp.content
        out = [(k, v) for k, v in resp.headers.items()
               if k.lower() not in ('content-length', 'connection',
                                    'transfer-encoding', 'content-encoding')]
        out.append(('Content-Length', str(len(data))))
        start_response('%d %s' % (resp.status_code, resp.reason or ''), out)
        return [data]

    def _setUp(self):
        from nova import monkey_patch

        if monkey_patch.is_patched():
            import eventlet
            from eventlet import wsgi

            sock = eventlet.listen((services.LOOPBACK, 0))
            port = sock.getsockname()[1]
            thread = eventlet.spawn(wsgi.server, sock, self.app,
                                    log_output=False)
            self.addCleanup(sock.close)
            self.addCleanup(thread.kill)
        else:
            from wsgiref import simple_server

            class Server(socketserver.ThreadingMixIn,
                         simple_server.WSGIServer):
                daemon_threads = True

            class Quiet(simple_server.WSGIRequestHandler):
                def log_message(self, *args):
                    pass

            server = simple_server.make_server(
                services.LOOPBACK, 0, self.app, server_class=Server,
                handler_class=Quiet)
            port = server.server_address[1]
            thread = threading.Thread(target=server.serve_forever,
                                      kwargs={'poll_interval': 0.1},
                                      daemon=True)
            thread.start()
            self.addCleanup(thread.join, 10)
            self.addCleanup(server.server_close)
            self.addCleanup(server.shutdown)
        self.url = 'http://%s:%d/v2.1' % (services.LOOPBACK, port)


class AttestationScenario:
    """Nova boots attested servers; the agent process enrols them.

    :param test: a running ``nova_base.VTPMServersTestBase``.
    :param say: called with each line of the report.
    :param deadline: ``registration_deadline`` of the agent.
    """

    def __init__(self, test, say=None, deadline=15, timeout=90):
        self.test = test
        self.say = say or (lambda line: None)
        self.deadline = deadline
        self.timeout = timeout
        self.times = {}

    def setUp(self):
        from nova_vtpm.tests.functional import agent_fixture
        import urllib3

        t = self.test
        # Nova's OSAPIFixture has wsgi-intercept replace urllib3's HTTPS
        # connections too, with a class that cannot make real ones
        # ("unexpected keyword argument 'cert_reqs'"); Nova's API is plain
        # HTTP: give HTTPS (Keylime) the real class back.
        t.useFixture(fixtures.MonkeyPatch(
            'urllib3.connectionpool.HTTPSConnectionPool.ConnectionCls',
            urllib3.connection.HTTPSConnection))
        self.stack = t.useFixture(FastFailKeylimeStack(quote_interval=1))
        self.verifier = self.stack.verifier_client()
        self.registrar = self.stack.registrar_client()
        tmp = t.useFixture(fixtures.TempDir()).path
        self.trust_dir = os.path.join(tmp, 'trust')
        # compute1's swtpm-localca, exported by the CLI as a compute host
        # (the devstack plugin) does.
        self.ca_dir = os.path.join(tmp, 'ca-compute1')
        keylime_fixture.make_swtpm_ca(self.ca_dir)
        policy_file = os.path.join(tmp, 'policies.json')
        with open(policy_file, 'w') as f:
            json.dump(POLICIES, f)
        self.bridge = t.useFixture(NovaAPIBridge(
            t.admin_api.base_url.split('/v2.1')[0],
            t.admin_api.project_id))
        self.agent = t.useFixture(agent_fixture.AgentProcess(
            t.rabbit_url, role='controller', host='controller',
            retry_base_delay=0.2, retry_max_delay=2.0, extra={
                'nova_vtpm_agent': {'enabled_hooks': 'inventory,keylime'},
                'nova_vtpm_attestation': {'tpm_policy_file': policy_file},
                'nova_vtpm_keylime': {
                    'registrar_url': self.stack.registrar_url,
                    'verifier_url': self.stack.verifier_url,
                    'cert_file': self.stack.client_cert,
                    'key_file': self.stack.client_key,
                    'ca_file': self.stack.ca_file,
                    'timeout': 5, 'retries': 1, 'retry_backoff': 0.2,
                    'ek_trust_dir': self.trust_dir,
                    'registration_deadline': self.deadline,
                    'failure_action': 'lock'},
                'nova_vtpm_hook_keylime': {'registration_poll_min': 0.2,
                                           'registration_poll_max': 1.0},
                'nova_vtpm_service': {'auth_type': 'none'},
                'nova_vtpm_nova': {'endpoint_override': self.bridge.url,
                                   'api_version': '2.86'},
            }, start=False))
        self.export_ca()
        self.agent.start()
        self.say('Keylime verifier %s, registrar %s; agent pid %d with the '
                 'keylime hook; Nova API bridge %s' % (
                     self.stack.verifier_url, self.stack.registrar_url,
                     self.agent.pid, self.bridge.url))

    def export_ca(self):
        # The CA exists from its first use; --create makes it now.
        args = ['ca', 'export', '--localca-conf',
                os.path.join(self.ca_dir, 'swtpm-localca.conf'),
                '--host', 'compute1', '--create',
                '--output-dir', self.trust_dir]
        out = self.cli(*args)
        self.say('$ nova-vtpm ca export %s\n%s' % (' '.join(args[2:]),
                                                   out.rstrip()))

    def step(self, title):
        self.say('')
        self.say('== %s' % title)

    def wait(self, what, predicate, timeout=None):
        t0 = time.monotonic()
        value = wait_for(what, predicate, timeout or self.timeout,
                         log=self.agent_log)
        self.times[what] = time.monotonic() - t0
        return value

    def agent_log(self):
        from nova_vtpm.tests.functional import agent_fixture
        return 'agent log:\n%s\nverifier log:\n%s' % (
            agent_fixture._tail(self.agent.log_file, 40),
            self.stack.log('verifier'))

    def row(self, uuid):
        return self.agent.journal.get_attestation(uuid)

    def cli(self, *args, timeout=120):
        """``nova-vtpm`` on the agent's configuration.

        Polls the child instead of blocking in it (``AgentProcess.cli``):
        in an eventlet-patched process a blocking wait would stall the
        green thread of :class:`NovaAPIBridge` the command may be calling.
        """
        with tempfile.TemporaryFile() as out, \
                tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(self.agent.cli_command(*args),
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err)
            deadline = time.monotonic() + timeout
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise AssertionError('nova-vtpm %s: no end in %ss'
                                         % (' '.join(args), timeout))
                time.sleep(0.05)
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode()
            stderr = err.read().decode()
        if proc.returncode:
            raise AssertionError('nova-vtpm %s exited with %d:\n%s%s' % (
                ' '.join(args), proc.returncode, stdout, stderr))
        if '--format' in args and 'json' in args:
            return json.loads(stdout)
        return stdout

    def attestation(self, *args):
        return self.cli('attestation', *args)

    def start_guest(self, server, ca_dir=None):
        """The guest TPM libvirt would create, and its Keylime agent."""
        t = self.test
        name = t.get_server(server)['OS-EXT-SRV-ATTR:instance_name']
        guest = t.useFixture(keylime_fixture.SwtpmGuest(
            name, instance_uuid=server['id'], ca_dir=ca_dir or self.ca_dir))
        agent = t.useFixture(keylime_fixture.KeylimeAgent(self.stack,
                                                          guest))
        t.addCleanup(self._forget, server['id'])
        self.say('guest TPM: swtpm_setup --tpm2 --vmid %s (EK certificate '
                 'of the compute1 CA); Keylime agent %s registered in '
                 '%.2f s' % (guest.vmid, agent.agent_uuid,
                             agent.registration_times[-1]))
        return guest, agent

    def _forget(self, uuid):
        self.verifier.delete_agent(uuid, missing_ok=True)
        self.registrar.delete_agent(uuid, missing_ok=True)

    def server_lock(self, server):
        from nova import utils
        t = self.test
        with utils.temporary_mutation(t.admin_api, microversion='2.73'):
            s = t.admin_api.get_server(server['id'])
        return s.get('locked'), s.get('locked_reason')

    def unlock(self, server):
        self.test.admin_api.post_server_action(server['id'],
                                               {'unlock': None})

    def run(self):
        t = self.test
        result = {}
        self.step('flavor vtpm.attested: %s, keylime:tpm_policy=pcr23 (PCR '
                  '23 must be zero)' % ', '.join(
                      '%s=%s' % kv for kv in REQUIRED.items()))
        flavor = t.create_vtpm_flavor(
            name='vtpm.attested',
            extra_specs=dict(REQUIRED, **{'keylime:tpm_policy': 'pcr23'}))

        self.step('boot s1 (its guest runs a Keylime agent) and s2 (no '
                  'agent ever registers)')
        t0 = time.monotonic()
        s1 = t.boot(flavor, host='compute1')
        s2 = t.boot(flavor, host='compute1')
        self.say('Nova: s1 %s and s2 %s ACTIVE in %.2f s' % (
            s1['id'], s2['id'], time.monotonic() - t0))
        u1, u2 = s1['id'], s2['id']
        result.update(s1=u1, s2=u2)
        guest, agent = self.start_guest(s1)
        registered = time.monotonic()
        row = self.wait('s1 enrolled', lambda: (
            self.row(u1) or {}).get('state') == 'enrolled' and self.row(u1))
        self.say('agent: s1 enrolled %.2f s after its registration (%s)' % (
            time.monotonic() - registered, row['ek_subject']))
        status = self.wait('s1 PASS', lambda: (
            verifier_status(self.verifier, u1) or None) and (
            verifier_status(self.verifier, u1).passed and
            verifier_status(self.verifier, u1)))
        self.say('verifier: s1 %s, %s (%.2f s from boot)' % (
            status.state_name, status.attestation_status,
            time.monotonic() - t0))
        result['s1_pass'] = status

        self.step('s2: no registration within %d s: the failure action' %
                  self.deadline)
        locked = self.wait('s2 locked', lambda: self.server_lock(s2)[0] and
                           self.server_lock(s2), timeout=self.deadline + 60)
        self.say('Nova: s2 locked=%s, locked_reason=%r' % locked)
        result['s2_lock'] = locked
        self.say('$ nova-vtpm attestation list --live')
        self.say(self.attestation('list', '--live').rstrip())

        self.step('s1: PCR 23 extended in the guest; nova-vtpm reconcile '
                  '--once')
        t1 = time.monotonic()
        guest.pcr_extend(PCR, 'ab' * 32)
        status = self.wait('s1 failure at the verifier', lambda: (
            verifier_status(self.verifier, u1) or None) and (
            verifier_status(self.verifier, u1).failed and
            verifier_status(self.verifier, u1)))
        self.say('verifier: s1 %s, %s (%.2f s after the extend)' % (
            status.state_name, status.attestation_status,
            time.monotonic() - t1))
        report = self.cli('reconcile', '--once', '--format', 'json')
        self.say('reconcile: keylime %s' % json.dumps(
            report['hooks'].get('keylime')))
        locked = self.server_lock(s1)
        self.say('Nova: s1 locked=%s, locked_reason=%r (%.2f s after the '
                 'extend)' % (locked + (time.monotonic() - t1,)))
        result['s1_lock'] = locked
        result['reconcile'] = report
        self.say('$ nova-vtpm attestation show %s' % u1)
        self.say(self.attestation('show', u1).rstrip())

        self.step('delete s1 and s2 (unlocked by the admin first)')
        for server in (s1, s2):
            self.unlock(server)
            t.delete(server)
        self.wait('s1 removed', lambda: (self.row(u1) or {}).get(
            'state') == 'removed')
        gone = self.wait('s1 gone from Keylime', lambda: verifier_status(
            self.verifier, u1) is None and not in_registrar(
            self.registrar, u1))
        self.wait('s2 removed', lambda: (self.row(u2) or {}).get(
            'state') == 'removed')
        self.say('verifier and registrar: s1 %s' % (
            'gone' if gone else 'STILL THERE'))
        result['rows'] = {u: self.row(u) for u in (u1, u2)}
        self.say('$ nova-vtpm attestation list --all')
        self.say(self.attestation('list', '--all').rstrip())
        return result


try:
    from nova_vtpm.tests.functional import nova_base
except ImportError:   # pragma: no cover (Nova's test code not installed)
    nova_base = None


if nova_base is not None:

    class KeylimeNovaTest(nova_base.VTPMServersTestBase):
        """Real Nova -> RabbitMQ -> agent process -> Keylime, end to end."""

        def setUp(self):
            keylime_fixture.require_keylime()
            super().setUp()

        def test_boot_attest_fail_act_delete(self):
            lines = []
            scenario = AttestationScenario(self, say=lines.append)
            self.addCleanup(lambda: self.addDetail(
                'scenario', content.text_content('\n'.join(lines))))
            scenario.setUp()
            result = scenario.run()
            self.assertTrue(result['s1_pass'].passed)
            locked, reason = result['s2_lock']
            self.assertTrue(locked)
            self.assertIn('did not register', reason)
            locked, reason = result['s1_lock']
            self.assertTrue(locked)
            self.assertIn('failed attestation', reason)
            self.assertEqual(1, result['reconcile']['hooks']['keylime'][
                'failed'], result['reconcile'])
            rows = result['rows']
            self.assertEqual('removed', rows[result['s1']]['state'])
            self.assertEqual('removed', rows[result['s2']]['state'])
            self.assertEqual('Invalid Quote',
                             rows[result['s1']]['operational_state_name'])
            # The journal: the agent enrolled s1 at its boot event.
            boot = [e for e in scenario.agent.journal.list_events(
                instance_uuid=result['s1'], limit=0)
                if e['lifecycle'] == 'boot']
            self.assertEqual(['done'], [e['state'] for e in boot])
            boot2 = [e for e in scenario.agent.journal.list_events(
                instance_uuid=result['s2'], limit=0)
                if e['lifecycle'] == 'boot']
            self.assertEqual(['failed'], [e['state'] for e in boot2])
