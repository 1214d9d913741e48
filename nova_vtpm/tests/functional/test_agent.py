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

"""The nova-vtpm agent as a process of its own, on a real RabbitMQ.

Each test starts ``nova-vtpm-agent`` (see :mod:`agent_fixture`) with a
listener pool of its own, publishes Nova-shaped versioned notifications
with a real ``oslo_messaging.Notifier`` (``messagingv2``, topic
``versioned_notifications``, exchange ``nova``) and reads the outcome from
the journal and with the ``nova-vtpm`` CLI.

One RabbitMQ node (and, for the scale-out tests, one PostgreSQL server) is
shared by the tests of a worker process: started by the first test that
needs it, stopped by ``tearDownModule``. Tests stay apart by their pool
queue (deleted at cleanup), journal, and instance uuids.

Both sides run with ``[oslo_messaging_rabbit] amqp_durable_queues = True``:
oslo.messaging's default (False) declares the ``nova`` exchange and the
pool queue transient, and a broker restart loses what was queued.
"""

import collections
import datetime
import json
import os
import re
import subprocess
import time
import uuid as uuidlib

import kombu
from oslotest import base
import sqlalchemy as sa
from testtools import content

from nova_vtpm.journal import models
from nova_vtpm.tests.functional import agent_fixture
from nova_vtpm.tests.functional import services
from nova_vtpm.tests.unit import fakes

CREATE = 'instance.create.end'
REBOOT = 'instance.reboot.end'
DELETE = 'instance.delete.end'

_shared = services.shared


def tearDownModule():
    services.stop_shared()


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def utc_timestamp(offset=0.0):
    """A timestamp as oslo.messaging's notifier writes it."""
    return str(datetime.datetime.now(datetime.timezone.utc).replace(
        tzinfo=None) + datetime.timedelta(seconds=offset))


class AgentTestBase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.rabbit = _shared('rabbitmq', services.RabbitMQ)
        # A failed broker restart test must not leave the broker down.
        if not self.rabbit.running:
            self.rabbit.start()
        self.nova = self.useFixture(
            agent_fixture.NovaPublisher(self.rabbit.url))

    # -- helpers ---------------------------------------------------------

    def make_agent(self, **kwargs):
        kwargs.setdefault('start', True)
        start = kwargs.pop('start')
        agent = agent_fixture.AgentProcess(self.rabbit.url, start=False,
                                           **kwargs)
        self.useFixture(agent)
        self.addCleanup(self.delete_queue, agent.pool)
        name = 'agent-log-%s' % agent.host

        def attach(exc_info):
            self.addDetail(name, content.text_content(
                agent.log_text()[-30000:]))
        self.addOnException(attach)
        if start:
            agent.start()
        return agent

    def delete_queue(self, name):
        with kombu.Connection(self.rabbit.kombu_url,
                              connect_timeout=5) as conn:
            conn.default_channel.queue_delete(name)

    def delete_exchange(self, name):
        with kombu.Connection(self.rabbit.kombu_url,
                              connect_timeout=5) as conn:
            conn.default_channel.exchange_delete(name)

    def queue_info(self, name):
        """{column: value} of one queue, from rabbitmqctl, or None."""
        columns = ('name', 'durable', 'auto_delete', 'messages',
                   'messages_unacknowledged', 'consumers')
        result = self.rabbit.rabbitmqctl('list_queues', '-q',
                                         '--no-table-headers', *columns)
        self.assertEqual(0, result.returncode, result.stderr)
        for line in result.stdout.splitlines():
            fields = line.split('\t')
            if len(fields) == len(columns) and fields[0] == name:
                return dict(zip(columns, fields))
        return None

    def queue_drained(self, name):
        info = self.queue_info(name)
        return (info is not None and info['messages'] == '0' and
                info['messages_unacknowledged'] == '0')

    def publish_lifecycles(self, n, types=(CREATE, REBOOT, DELETE),
                           host='compute1', vtpm=True):
        """n instances, each through ``types``; returns [(uuid, type)]."""
        sent = []
        for _ in range(n):
            uuid = str(uuidlib.uuid4())
            extra_specs = None if vtpm else {}
            for event_type in types:
                payload = fakes.instance_payload(
                    uuid, host=host, extra_specs=extra_specs,
                    state='deleted' if event_type == DELETE else 'active')
                self.nova.notify(event_type, payload,
                                 publisher_id='nova-compute:%s' % host)
                sent.append((uuid, event_type))
        return sent

    def wait_all_done(self, agent, sent, timeout=120):
        """Wait until every sent (uuid, type) is recorded and done."""
        uuids = {u for u, _ in sent}

        def done():
            rows = [e for e in agent.events()
                    if e['instance_uuid'] in uuids]
            if (len(rows) >= len(sent) and
                    all(e['state'] == 'done' for e in rows)):
                return rows
            return None
        return agent.wait_for(done, timeout=timeout, interval=0.3,
                              message='%d events done' % len(sent))

    def assert_exactly_once(self, rows, sent):
        """One row per message id, and one per sent (uuid, type)."""
        ids = [r['message_id'] for r in rows]
        self.assertEqual(len(ids), len(set(ids)), 'duplicate message ids')
        self.assertEqual(len(sent), len(rows))
        self.assertEqual(sorted(sent), sorted(
            (r['instance_uuid'], r['event_type']) for r in rows))

    def work_rows(self, agent):
        with agent.journal.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                models.work.select().order_by(models.work.c.id))]

    def claimed_rows(self, agent, owner_prefix=''):
        return [w for w in self.work_rows(agent)
                if w['claimed_by'] and
                w['claimed_by'].startswith(owner_prefix)]


class AgentTest(AgentTestBase):
    """One agent with a sqlite journal."""

    def test_lifecycle_flows_through(self):
        agent = self.make_agent()
        vtpm_uuid = str(uuidlib.uuid4())
        plain_uuid = str(uuidlib.uuid4())
        payload = fakes.instance_payload(vtpm_uuid)
        self.nova.notify(CREATE, payload)
        self.nova.notify(REBOOT, payload)
        self.nova.notify(CREATE, fakes.instance_payload(plain_uuid,
                                                        extra_specs={}))
        agent.wait_for(lambda: len(agent.events()) == 3 and all(
            e['state'] in ('done', 'skipped') for e in agent.events()),
            timeout=30, message='3 events handled')

        # The vTPM server is in the inventory, the other one is not.
        instances = agent.cli('instances', 'list', '--format', 'json')
        self.assertEqual([vtpm_uuid], [i['uuid'] for i in instances])
        (row,) = instances
        self.assertEqual(('2.0', 'host', 'compute1', None),
                         (row['vtpm_version'], row['secret_security'],
                          row['host'], row['deleted_at']))
        self.assertIn(row['lifecycle'], ('boot', 'reboot'))

        self.nova.notify(DELETE, fakes.instance_payload(vtpm_uuid,
                                                        state='deleted'))
        agent.wait_for(lambda: agent.journal.get_instance(
            vtpm_uuid)['deleted_at'], timeout=30, message='deleted')

        events = agent.cli('events', 'list', '--limit', '0', '--format',
                           'json')
        by_type = {e['event_type']: e for e in events
                   if e['instance_uuid'] == vtpm_uuid}
        self.assertEqual({CREATE: 'done', REBOOT: 'done', DELETE: 'done'},
                         {t: e['state'] for t, e in by_type.items()})
        self.assertEqual(
            {'boot', 'reboot', 'delete'},
            {e['lifecycle'] for e in by_type.values()})
        (skipped,) = [e for e in events if e['instance_uuid'] == plain_uuid]
        self.assertEqual(('skipped', 'no vTPM'),
                         (skipped['state'], skipped['reason']))

        shown = agent.cli('events', 'show', str(by_type[DELETE]['id']),
                          '--format', 'json')
        self.assertEqual([('inventory', 'done', 1)],
                         [(w['hook'], w['state'], w['attempts'])
                          for w in shown['work']])
        self.assertEqual('nova-compute:compute1', shown['publisher_id'])

        self.assertEqual(
            [], agent.cli('instances', 'list', '--format', 'json'))
        (gone,) = agent.cli('instances', 'list', '--deleted', '--format',
                            'json')
        self.assertEqual((vtpm_uuid, 'delete'),
                         (gone['uuid'], gone['lifecycle']))
        self.assertIsNotNone(gone['deleted_at'])

    def test_sigterm_and_events_sent_while_down(self):
        agent = self.make_agent()
        first = self.publish_lifecycles(20)
        agent.wait_for(lambda: agent.count_events(), timeout=30,
                       message='the first event recorded')
        # Stop it while it is busy with the burst.
        rc, seconds = agent.stop()
        self.assertEqual(0, rc)
        self.assertLess(seconds, 30)
        self.addDetail('sigterm-seconds',
                       content.text_content('%.2f' % seconds))
        self.assertIn(agent_fixture.STOPPED_LINE, agent.log_text())
        # A clean stop leaves no claim behind.
        self.assertEqual([], self.claimed_rows(agent))

        # Published while no agent runs: the pool queue keeps them, and it
        # is durable (amqp_durable_queues), so a broker restart keeps them
        # too (the notifier's messages are persistent).
        second = self.publish_lifecycles(10)
        info = self.queue_info(agent.pool)
        self.assertEqual(('true', 'false', '0'),
                         (info['durable'], info['auto_delete'],
                          info['consumers']))
        queued = int(info['messages'])
        self.assertGreaterEqual(queued, len(second))
        self.rabbit.stop()
        self.rabbit.start()
        info = self.queue_info(agent.pool)
        self.assertEqual(queued, int(info['messages']))

        agent.start()
        sent = first + second
        rows = self.wait_all_done(agent, sent)
        self.assert_exactly_once(rows, sent)
        self.assertEqual(
            [], [i for i in agent.journal.list_instances()
                 if i['uuid'] in {u for u, _ in sent}])

    def test_sigkill_during_a_burst(self):
        agent = self.make_agent()
        sent = self.publish_lifecycles(100)
        self.assertEqual(300, len(sent))

        agent.wait_for(lambda: sum(agent.count_events().values()) >= 90,
                       timeout=60, interval=0.02, message='90 recorded')
        # Killed while it runs hooks (with claims), if it can be caught so.
        try:
            held = agent.kill_holding_claims(timeout=10)
        except agent_fixture.AgentError:
            held = []
            agent.kill()
        at_kill = agent.count_events()
        self.addDetail('at-kill', content.text_content(
            '%s; %d claims held' % (at_kill, len(held))))
        self.assertLess(at_kill.get('done', 0), len(sent),
                        'the agent was done before it was killed')

        agent.start()
        rows = self.wait_all_done(agent, sent)
        self.assert_exactly_once(rows, sent)
        work = self.work_rows(agent)
        self.assertEqual(len(sent), len(work))
        self.assertEqual({('done', 1, None)},
                         {(w['state'], w['attempts'], w['claimed_by'])
                          for w in work})
        if held:
            self.assertIn('Released %d claims of the dead agent' % len(held),
                          agent.log_text())
        uuids = {u for u, _ in sent}
        listed = agent.cli('instances', 'list', '--format', 'json')
        self.assertEqual([], [i for i in listed if i['uuid'] in uuids])
        deleted = agent.cli('instances', 'list', '--deleted', '--format',
                            'json')
        self.assertEqual(uuids, {i['uuid'] for i in deleted
                                 if i['deleted_at'] is not None})
        self.assertEqual({'delete'}, {i['lifecycle'] for i in deleted})

    def test_broker_restart_under_the_agent(self):
        agent = self.make_agent()
        before = self.publish_lifecycles(1, types=(CREATE,))
        self.wait_all_done(agent, before, timeout=30)

        old_vm = self.rabbit.erlang_pid
        self.rabbit.stop()
        self.assertFalse(services.pid_exists(old_vm))
        time.sleep(1)
        self.rabbit.start()
        self.assertTrue(agent.running)

        after = self.publish_lifecycles(5)
        rows = self.wait_all_done(agent, after, timeout=90)
        self.assert_exactly_once(rows, after)
        self.assertTrue(agent.running)
        log = agent.log_text()
        self.addDetail('reconnect-log', content.text_content('\n'.join(
            line for line in log.splitlines()
            if 'AMQP' in line or 'onnect' in line)[-5000:]))

    def test_malformed_notifications_are_rejected(self):
        agent = self.make_agent()
        good_uuid = str(uuidlib.uuid4())
        no_uuid = fakes.instance_payload()
        del no_uuid['nova_object.data']['uuid']
        wrong_types = fakes.instance_payload()
        wrong_types['nova_object.data']['host'] = 42
        bad_uuid = fakes.instance_payload('not-a-uuid')
        bad_specs = fakes.instance_payload(extra_specs={'hw:tpm_version': 2})
        malformed = [
            (CREATE, 'garbage', 'payload is str, not a Nova object'),
            (CREATE, no_uuid, 'payload.uuid is missing'),
            (REBOOT, wrong_types, 'payload.host must be a string, not int'),
            (DELETE, bad_uuid, "payload.uuid is not a UUID: 'not-a-uuid'"),
            (CREATE, bad_specs,
             'payload.flavor.extra_specs must be an object of strings'),
            ('frobnicate.now', {'x': 1},
             "unknown event type 'frobnicate.now'"),
        ]
        for event_type, payload, _ in malformed:
            self.nova.notify(event_type, payload)
        good = [(good_uuid, CREATE)]
        self.nova.notify(CREATE, fakes.instance_payload(good_uuid))

        self.wait_all_done(agent, good, timeout=30)
        agent.wait_for(
            lambda: len(agent.events(state='rejected')) == len(malformed),
            timeout=30, message='%d rejected' % len(malformed))
        rejected = agent.cli('events', 'list', '--state', 'rejected',
                             '--limit', '0', '--format', 'json')
        reasons = sorted(e['reason'] for e in rejected)
        for event_type, _, reason in malformed:
            self.assertTrue(
                [r for r in reasons if reason in r],
                '%r not among the reasons %s' % (reason, reasons))
        self.assertEqual({'rejected'}, {e['state'] for e in rejected})
        self.assertIn('frobnicate.now', {e['event_type'] for e in rejected})
        self.assertTrue(agent.running)
        self.assertTrue(self.queue_drained(agent.pool))

    def test_raw_messages_on_the_pool_queue(self):
        """What oslo.messaging does with what is not a notification.

        Undecodable bodies never reach the agent: oslo.messaging's rabbit
        driver logs "Failed to process message ... skipping it." and
        rejects them without requeue, so they are gone, unless the queue
        has a dead-letter exchange (a RabbitMQ policy), which is how an
        operator keeps them: this test sets one. Decodable messages that
        are not notifications reach the agent and are recorded as rejected.
        """
        agent = self.make_agent()
        # The pool queue: named after the pool, bound to the exchange for
        # every priority of the topic.
        listed = self.rabbit.rabbitmqctl(
            'list_bindings', '-q', '--no-table-headers', 'source_name',
            'destination_name', 'routing_key')
        self.assertEqual(0, listed.returncode, listed.stderr)
        self.assertEqual(
            {'versioned_notifications.%s' % p for p in (
                'audit', 'critical', 'debug', 'error', 'info', 'sample',
                'warn')},
            {line.split('\t')[2] for line in listed.stdout.splitlines()
             if line.split('\t')[:2] == ['nova', agent.pool]})
        dlx = 'nova-vtpm-test-dlx-%s' % uuidlib.uuid4().hex[:8]
        policy = self.rabbit.rabbitmqctl(
            'set_policy', '--apply-to', 'queues', dlx,
            '^%s$' % re.escape(agent.pool),
            json.dumps({'dead-letter-exchange': dlx}))
        self.assertEqual(0, policy.returncode, policy.stderr)
        self.addCleanup(self.rabbit.rabbitmqctl, 'clear_policy', dlx)
        self.addCleanup(self.delete_queue, dlx)
        undecodable = [
            (b'this is {not json', 'application/json', 'utf-8'),
            (b'plain text', 'text/plain', 'utf-8'),
            (b'\x00\x01\xff', 'application/octet-stream', 'binary'),
            (b'[1, 2]', 'application/json', 'utf-8'),
            (json.dumps({'oslo.version': '2.0',
                         'oslo.message': '{broken'}).encode(),
             'application/json', 'utf-8'),
        ]
        # Decodable, but not notifications.
        no_priority = {'hello': 'world'}
        null_priority = {'oslo.version': '2.0', 'oslo.message': json.dumps({
            'priority': None, 'event_type': CREATE, 'payload': {},
            'message_id': 'raw-null-priority',
            'publisher_id': 'nova-compute:compute1'})}
        v1_garbage = {'priority': 'info', 'event_type': CREATE,
                      'payload': 'garbage', 'message_id': 'raw-v1-garbage',
                      'publisher_id': 'nova-compute:compute1',
                      'timestamp': utc_timestamp()}
        with kombu.Connection(self.rabbit.kombu_url) as conn:
            dlq = kombu.Queue(dlx, kombu.Exchange(dlx, 'fanout'),
                              channel=conn.default_channel)
            dlq.declare()
            producer = conn.Producer()
            for body, content_type, encoding in undecodable:
                producer.publish(body, exchange='', routing_key=agent.pool,
                                 content_type=content_type,
                                 content_encoding=encoding)
            for message in (no_priority, null_priority, v1_garbage):
                producer.publish(json.dumps(message), exchange='',
                                 routing_key=agent.pool,
                                 content_type='application/json',
                                 content_encoding='utf-8')

        good = self.publish_lifecycles(1, types=(CREATE,))
        self.wait_all_done(agent, good, timeout=30)
        agent.wait_for(lambda: self.queue_drained(agent.pool), timeout=30,
                       message='the pool queue drained')
        self.assertTrue(agent.running)

        # The undecodable ones: dropped by oslo.messaging with an error,
        # dead-lettered by the broker thanks to the policy.
        log = agent.log_text()
        self.assertEqual(len(undecodable), log.count(
            'Failed to process message ... skipping it.'))
        bodies = []
        with kombu.Connection(self.rabbit.kombu_url) as conn:
            dlq = kombu.Queue(dlx, channel=conn.default_channel)
            while True:
                message = dlq.get(no_ack=True)
                if message is None:
                    break
                body = message.body
                bodies.append(body if isinstance(body, bytes) else
                              body.encode('utf-8'))
                self.assertEqual('rejected',
                                 message.headers['x-death'][0]['reason'])
        self.assertEqual(sorted(b for b, _, _ in undecodable),
                         sorted(bodies))

        # The decodable ones reach the agent: rejected, with reasons.
        rejected = {e['message_id']: e for e in agent.events(
            state='rejected')}
        self.assertEqual(3, len(rejected), rejected)
        self.assertIn('payload is str',
                      rejected['raw-v1-garbage']['reason'])
        self.assertIn('priority', rejected['raw-null-priority']['reason'])
        (hello,) = [e for m, e in rejected.items()
                    if m.startswith('sha256:')]
        self.assertIn('priority', hello['reason'])
        # ... once each: no requeue loop.
        self.assertNotIn('Exception during message handling', log)

    def test_pool_queue_durability_follows_novas_exchange(self):
        """Durable pool queues need amqp_durable_queues in Nova too.

        Nova declares its exchange with its own amqp_durable_queues, False
        by default: a transient exchange. Declaring a durable queue and
        exchange on it fails (PRECONDITION_FAILED) and oslo.messaging falls
        back to a transient pool queue, whatever the agent asked for: a
        broker restart then loses what it holds. (Without a restart, what
        is sent while the agent is down is kept either way: the queue is
        not auto-delete.)
        """
        # An exchange and a topic of its own: the notifier declares a
        # queue named after the topic (queue names are not per exchange),
        # transient here, which other tests' durable notifiers could then
        # not declare (PRECONDITION_FAILED: they would drop everything).
        exchange = 'nova-vtpm-test-%s' % uuidlib.uuid4().hex[:8]
        topic = exchange + '-notifications'
        nova = self.useFixture(agent_fixture.NovaPublisher(
            self.rabbit.url, exchange=exchange, durable=False, topic=topic))
        self.addCleanup(self.delete_exchange, exchange)
        self.addCleanup(self.delete_queue, topic + '.info')
        # Nova first, as in a deployment.
        nova.notify('instance.update', fakes.instance_payload())
        agent = self.make_agent(exchange=exchange, extra={
            'nova_vtpm_agent': {'topic': topic}})   # durable=True
        info = self.queue_info(agent.pool)
        self.assertEqual(('false', 'false'),
                         (info['durable'], info['auto_delete']))
        self.assertIn('Retrying to declare the exchange (%s) as non durable'
                      % exchange, agent.log_text())
        uuid = str(uuidlib.uuid4())
        nova.notify(CREATE, fakes.instance_payload(uuid))
        self.wait_all_done(agent, [(uuid, CREATE)], timeout=30)

    def test_duplicated_and_reordered(self):
        agent = self.make_agent()
        uuid = str(uuidlib.uuid4())
        created = fakes.instance_payload(uuid)
        deleted = fakes.instance_payload(uuid, state='deleted')
        create_id = 'dup-create-%s' % uuid
        delete_id = 'dup-delete-%s' % uuid
        reboot_id = 'dup-reboot-%s' % uuid
        t_create = utc_timestamp(-60)
        t_reboot = utc_timestamp(-30)
        t_delete = utc_timestamp()

        # The delete arrives first...
        self.nova.send_raw_v2(DELETE, deleted, delete_id,
                              timestamp=t_delete)
        agent.wait_for(lambda: agent.events(instance_uuid=uuid),
                       timeout=30, message='the delete recorded')
        # ... then the create and a reboot, and everything again, twice
        # (what a redelivery looks like: the same message id).
        for _ in range(3):
            self.nova.send_raw_v2(CREATE, created, create_id,
                                  timestamp=t_create)
            self.nova.send_raw_v2(REBOOT, created, reboot_id,
                                  timestamp=t_reboot)
        self.nova.send_raw_v2(DELETE, deleted, delete_id,
                              timestamp=t_delete)
        sent = [(uuid, DELETE), (uuid, CREATE), (uuid, REBOOT)]
        rows = self.wait_all_done(agent, sent, timeout=30)
        agent.wait_for(lambda: self.queue_drained(agent.pool), timeout=30,
                       message='the pool queue drained')

        rows = agent.events(instance_uuid=uuid)
        self.assert_exactly_once(rows, sent)
        self.assertEqual([delete_id, create_id, reboot_id],
                         [r['message_id'] for r in rows])
        self.assertEqual(3, len(self.work_rows(agent)))
        instance = agent.journal.get_instance(uuid)
        self.assertIsNotNone(instance['deleted_at'])
        self.assertEqual('delete', instance['lifecycle'])
        self.assertEqual(
            [], agent.cli('instances', 'list', '--format', 'json'))

    def test_waits_for_a_live_claim_then_takes_it_over(self):
        """Work another agent holds is left alone until its lease ends.

        Meanwhile the worker neither runs it nor polls the journal in a
        tight loop (it used to, every 10 ms, as long as the claim lived:
        for up to claim_lease after an agent died); then it takes it over.
        """
        agent = self.make_agent()
        uuid = str(uuidlib.uuid4())
        journal = agent.journal
        now = time.time()
        event_id, _ = journal.record_event(
            'held-%s' % uuid, CREATE, fakes.instance_payload(uuid),
            state='pending', lifecycle='boot', instance_uuid=uuid,
            publisher_id='nova-compute:compute1', host='compute1',
            timestamp=now)
        until = now + 6
        with journal.engine.begin() as conn:
            conn.execute(models.work.insert().values(
                event_id=event_id, hook='inventory', state='pending',
                attempts=0, next_attempt_at=now, claimed_by='elsewhere:1',
                claimed_until=until, updated_at=now))
        cpu = cpu_seconds(agent.pid)
        time.sleep(4)
        cpu = cpu_seconds(agent.pid) - cpu
        self.addDetail('cpu-seconds-in-4s', content.text_content(
            '%.2f' % cpu))
        self.assertIsNone(journal.get_instance(uuid))
        self.assertEqual('elsewhere:1',
                         self.work_rows(agent)[0]['claimed_by'])
        self.assertLess(cpu, 0.25)

        self.wait_all_done(agent, [(uuid, CREATE)], timeout=30)
        (work,) = self.work_rows(agent)
        self.assertEqual(('done', 1, None),
                         (work['state'], work['attempts'],
                          work['claimed_by']))
        self.assertGreaterEqual(work['updated_at'], until)
        self.assertEqual('boot', journal.get_instance(uuid)['lifecycle'])


class ScaleOutTest(AgentTestBase):
    """Controller agents sharing one PostgreSQL journal."""

    def setUp(self):
        super().setUp()
        self.postgres = _shared('postgresql', services.PostgreSQL)

    def new_database(self):
        name = 'nvtpm_%s' % uuidlib.uuid4().hex[:10]
        engine = sa.create_engine(self.postgres.url,
                                  isolation_level='AUTOCOMMIT')
        try:
            with engine.connect() as conn:
                conn.execute(sa.text('CREATE DATABASE %s' % name))
        finally:
            engine.dispose()
        return self.postgres.url.rsplit('/', 1)[0] + '/' + name

    @staticmethod
    def hook_runs(*agents):
        """{(uuid, lifecycle): times the inventory hook ran on it}.

        From the agents' logs (debug): every run logs one of these lines.
        """
        patterns = [
            re.compile(r'Inventory: instance (\S+) (\S+) on '),
            re.compile(r'Instance (\S+) is deleted; ignoring its older or '
                       r'reordered (\S+) event'),
            re.compile(r'Ignoring out-of-date (\S+) event of instance '
                       r'(\S+)'),
        ]
        runs = collections.Counter()
        for agent in agents:
            for line in agent.log_text().splitlines():
                for n, pattern in enumerate(patterns):
                    match = pattern.search(line)
                    if match:
                        a, b = match.groups()
                        runs[(b, a) if n == 2 else (a, b)] += 1
                        break
        return runs

    def test_two_controllers_one_killed(self):
        url = self.new_database()
        pool = 'nova-vtpm-test-ctl-%s' % uuidlib.uuid4().hex[:8]
        agents = [self.make_agent(journal_url=url, host=host, pool=pool,
                                  claim_lease=3, debug=True, start=False)
                  for host in ('ctl-a', 'ctl-b')]
        # Both at once: they race for the schema on a fresh database.
        for agent in agents:
            agent.start(wait=False)
        for agent in agents:
            agent.wait_started()
        victim, survivor = agents

        sent = self.publish_lifecycles(200, types=(CREATE, DELETE))
        self.assertEqual(400, len(sent))

        victim.wait_for(lambda: sum(victim.count_events().values()) >= 120,
                        timeout=60, interval=0.02, message='120 recorded')
        held = {w['id']: w for w in victim.kill_holding_claims()}
        at_kill = victim.count_events()
        self.addDetail('at-kill', content.text_content(
            '%s; %d live claims of ctl-a' % (at_kill, len(held))))
        self.assertTrue(held)
        self.assertLess(at_kill.get('done', 0), len(sent))

        rows = self.wait_all_done(survivor, sent, timeout=120)
        self.assert_exactly_once(rows, sent)
        work = self.work_rows(survivor)
        self.assertEqual(len(sent), len(work))
        # Each work row finished once (an attempt cut short by the kill
        # is not counted: it never finished).
        self.assertEqual({('done', 1, None)},
                         {(w['state'], w['attempts'], w['claimed_by'])
                          for w in work})
        # The victim's claims were taken over after the lease.
        by_id = {w['id']: w for w in work}
        for work_id, claim in held.items():
            self.assertGreaterEqual(by_id[work_id]['updated_at'],
                                    claim['claimed_until'])

        # The hook ran once on every event, except on those the victim
        # held when it died (it may have run it without recording it).
        events = {r['id']: r for r in rows}
        interrupted = {(events[w['event_id']]['instance_uuid'],
                        events[w['event_id']]['lifecycle'])
                       for w in held.values()}
        runs = self.hook_runs(victim, survivor)
        expected = {(u, 'boot' if t == CREATE else 'delete')
                    for u, t in sent}
        self.assertEqual(expected, set(runs))
        twice = {k: n for k, n in runs.items()
                 if n > 1 and k not in interrupted}
        self.assertEqual({}, twice)
        self.assertEqual(set(), {k for k, n in runs.items() if n > 2})

        uuids = {u for u, _ in sent}
        self.assertEqual([], [i for i in survivor.journal.list_instances()
                              if i['uuid'] in uuids])
        self.assertEqual(uuids, {
            i['uuid'] for i in survivor.journal.list_instances(
                include_deleted=True) if i['deleted_at'] is not None})

    def test_short_leases_never_run_work_twice(self):
        """No work starts after its claim may have gone to another agent.

        A worker claims a batch of work under one lease and runs it item
        after item: with a lease shorter than the batch, the last items
        used to run after another agent had claimed (and run) them too.
        """
        url = self.new_database()
        pool = 'nova-vtpm-test-ctl-%s' % uuidlib.uuid4().hex[:8]
        agents = [self.make_agent(journal_url=url, host=host, pool=pool,
                                  claim_lease=1, debug=True)
                  for host in ('ctl-a', 'ctl-b')]
        sent = self.publish_lifecycles(150, types=(CREATE, DELETE))
        rows = self.wait_all_done(agents[0], sent, timeout=180)
        self.assert_exactly_once(rows, sent)
        runs = self.hook_runs(*agents)
        self.assertEqual(len(sent), len(runs))
        self.assertEqual({}, {k: n for k, n in runs.items() if n != 1})
        for agent in agents:
            self.assertNotIn('Lost the claim', agent.log_text())
        self.assertEqual({('done', 1)}, {(w['state'], w['attempts'])
                                         for w in self.work_rows(agents[0])})

    def test_first_start_together_on_a_fresh_database(self):
        """Agents and CLIs started at once all get the schema made.

        They used to race to create it: the losers died with
        DuplicateTable or UniqueViolation.
        """
        agent = self.make_agent(journal_url=self.new_database(),
                                start=False)
        procs = [subprocess.Popen(
            agent.cli_command('events', 'list', '--format', 'json'),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True) for _ in range(4)]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            results.append((proc.returncode, out if proc.returncode else
                            json.loads(out), err[-2000:]))
        self.assertEqual([(0, [])] * 4, [r[:2] for r in results],
                         [r[2] for r in results])
        agent.start()
        self.assertIsNotNone(agent.journal.revision())

    def test_values_postgresql_refuses_are_rejected(self):
        agent = self.make_agent(journal_url=self.new_database())
        too_long = fakes.instance_payload(host='h' * 300)
        nul = fakes.instance_payload(host='compute\x001')
        self.nova.notify(CREATE, too_long)
        self.nova.notify(CREATE, nul)
        self.nova.notify('frobnicate\x00.now', {'x': 1},
                         publisher_id='nova-compute:\x00')
        good = self.publish_lifecycles(1, types=(CREATE,))
        self.wait_all_done(agent, good, timeout=30)
        agent.wait_for(lambda: len(agent.events(state='rejected')) == 3,
                       timeout=30, message='3 rejected')
        agent.wait_for(lambda: self.queue_drained(agent.pool), timeout=30,
                       message='the pool queue drained')
        self.assertTrue(agent.running)
        # Recorded once each, not requeued again and again.
        self.assertNotIn('requeueing it', agent.log_text())
        rejected = agent.cli('events', 'list', '--state', 'rejected',
                             '--format', 'json')
        self.assertEqual(
            sorted([CREATE, CREATE, 'frobnicate\\x00.now']),
            sorted(e['event_type'] for e in rejected))
        reasons = ' '.join(e['reason'] for e in rejected)
        self.assertEqual(1, reasons.count(
            'value too long for type character varying(255)'))
        self.assertEqual(2, reasons.count(
            'A string literal cannot contain NUL (0x00) characters'))
