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

"""In-process Nova's versioned notifications reach another process.

A listener in a separate process (no eventlet, no Nova: only
oslo.messaging, as an agent would be) listens on the real RabbitMQ with
``Target(topic='versioned_notifications', exchange='nova')`` and writes one
JSON line per notification. The tests drive a vTPM server through boot,
live migration (successful or rolled back) and delete, and check what that
process received, in order, with which publisher_id and payload host.
"""

import collections
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import fixtures
from testtools import content

from nova_vtpm.tests.functional import nova_base
from nova_vtpm.tests.functional import services

# The listener process. argv: url out_path ready_path pool exchange topic.
LISTENER_SCRIPT = r'''
import json
import signal
import sys
import threading

from oslo_config import cfg
import oslo_messaging

url, out_path, ready_path, pool, exchange, topic = sys.argv[1:7]
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *args: stop.set())
signal.signal(signal.SIGINT, lambda *args: stop.set())
lock = threading.Lock()
out = open(out_path, 'a', buffering=1)
seq = [0]


def recorder(priority):
    def record(ctxt, publisher_id, event_type, payload, metadata):
        data = {}
        if isinstance(payload, dict):
            data = payload.get('nova_object.data') or {}
        line = {
            'event_type': event_type,
            'publisher_id': publisher_id,
            'priority': priority,
            'host': data.get('host'),
            'instance_uuid': data.get('uuid') or data.get('instance_uuid'),
            'message_id': metadata.get('message_id'),
            'timestamp': metadata.get('timestamp'),
            'payload': payload,
        }
        with lock:
            seq[0] += 1
            line['seq'] = seq[0]
            out.write(json.dumps(line, sort_keys=True, default=str) + '\n')
            out.flush()
    return record


class Endpoint(object):
    pass


endpoint = Endpoint()
for name in ('audit', 'debug', 'info', 'warn', 'error', 'critical',
             'sample'):
    setattr(endpoint, name, recorder(name.upper()))

# cfg.CONF: oslo.messaging registers [oslo_messaging_tracing] there only.
transport = oslo_messaging.get_notification_transport(cfg.CONF, url=url)
listener = oslo_messaging.get_notification_listener(
    transport, [oslo_messaging.Target(topic=topic, exchange=exchange)],
    [endpoint], executor='threading', pool=pool)
# One worker: the lines are in the order the broker delivered.
listener.start(override_pool_size=1)
with open(ready_path, 'w') as f:
    f.write('ready\n')
while not stop.wait(0.2):
    pass
listener.stop()
listener.wait()
transport.cleanup()
out.close()
'''


class NotificationListenerProcess(fixtures.Fixture):
    """A notification listener in a process of its own, stopped by pid.

    :attr:`out_path` gets one JSON object a line: event_type,
    publisher_id, priority, host and instance_uuid (from the payload's
    ``nova_object.data``: ``host``; ``uuid`` or ``instance_uuid``),
    message_id, timestamp, seq (1, 2, ... in delivery order) and payload.

    :param pool: the listener pool (queue) name; default a unique one.
    """

    def __init__(self, url, pool=None, exchange='nova',
                 topic='versioned_notifications', start_timeout=60,
                 stop_timeout=15):
        super().__init__()
        self.url = url
        # A pool is one queue shared by its listeners, which then compete
        # for the messages: one of its own, or two tests running at once on
        # one broker (NOVA_VTPM_RABBIT_URL) each get half. On a broker
        # that outlives the test, the (non-durable) queue stays until the
        # broker restarts.
        self.pool = pool or 'nova-vtpm-test-%s' % uuid.uuid4().hex[:12]
        self.exchange = exchange
        self.topic = topic
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.proc = None

    def _setUp(self):
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.out_path = os.path.join(self.dir, 'notifications.jsonl')
        self.ready_path = os.path.join(self.dir, 'ready')
        self.log_path = os.path.join(self.dir, 'listener.log')
        open(self.out_path, 'w').close()
        self.addCleanup(self._stop)
        with open(self.log_path, 'ab') as log:
            self.proc = subprocess.Popen(
                [sys.executable, '-c', LISTENER_SCRIPT, self.url,
                 self.out_path, self.ready_path, self.pool, self.exchange,
                 self.topic],
                stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        deadline = time.monotonic() + self.start_timeout
        while not os.path.exists(self.ready_path):
            if self.proc.poll() is not None:
                raise services.ServiceError(
                    'listener exited with %s:\n%s'
                    % (self.proc.returncode, self.log_tail()))
            if time.monotonic() >= deadline:
                raise services.ServiceError(
                    'listener not ready in %ss:\n%s'
                    % (self.start_timeout, self.log_tail()))
            time.sleep(0.1)

    def _stop(self):
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        # SIGTERM: the listener stops and exits; SIGKILL after the timeout.
        services._stop_process(proc, signal.SIGTERM, self.stop_timeout)
        if services.pid_exists(proc.pid):
            raise services.ServiceError(
                'listener %d still alive' % proc.pid)
        self.returncode = proc.returncode

    def log_tail(self):
        return services._tail(self.log_path)

    def records(self):
        with open(self.out_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def wait_for(self, predicate, timeout=30.0, what='notifications'):
        """Poll :meth:`records` until ``predicate(records)``; bounded."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.records()
            if predicate(records):
                return records
            if time.monotonic() >= deadline:
                raise AssertionError(
                    'listener did not get %s in %ss; got:\n%s\nlog:\n%s' % (
                        what, timeout,
                        '\n'.join('%(seq)s %(event_type)s %(publisher_id)s '
                                  '%(host)s %(instance_uuid)s' % r
                                  for r in records),
                        self.log_tail()))
            time.sleep(0.2)


def _data(payload):
    return payload['nova_object.data']


class NovaNotificationsToRabbitTest(nova_base.VTPMServersTestBase):

    EXTRA_SPECS = {'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb',
                   'hw:tpm_secret_security': 'host'}
    IMAGE_PROPS = {'hw_tpm_version': '2.0', 'hw_tpm_model': 'tpm-crb'}

    def setUp(self):
        super().setUp()
        self.listener = self.useFixture(
            NotificationListenerProcess(self.rabbit_url))

    def _boot_on_compute1(self):
        flavor_id = self.create_vtpm_flavor('vtpm-host', self.EXTRA_SPECS)
        server = self.boot(flavor_id, host='compute1',
                           image_props=self.IMAGE_PROPS)
        self.assertEqual('compute1', self.server_host(server))
        return server

    def _instance_records(self, uuid, last_event):
        records = self.listener.wait_for(
            lambda rs: any(r['instance_uuid'] == uuid and
                           r['event_type'] == last_event for r in rs),
            what='%s for %s' % (last_event, uuid))
        return [r for r in records if r['instance_uuid'] == uuid]

    def _assert_in_order(self, records, expected):
        """``expected``: (event_type, payload host or None) in order."""
        got = [(r['event_type'], r['host']) for r in records]
        i = 0
        for record in records:
            if i < len(expected):
                event_type, host = expected[i]
                if (record['event_type'] == event_type and
                        (host is None or record['host'] == host)):
                    i += 1
        self.assertEqual(
            len(expected), i,
            'expected, in order, %s; the listener got %s'
            % (expected, got))

    def _assert_same_as_fake(self, uuid, records):
        """The listener got what Nova's in-memory notifier got for uuid."""
        fake = collections.Counter(
            (n['event_type'], n['publisher_id'])
            for n in self.notifier.versioned_notifications
            if isinstance(n['payload'], dict) and uuid in (
                _data(n['payload']).get('uuid'),
                _data(n['payload']).get('instance_uuid')))
        got = collections.Counter(
            (r['event_type'], r['publisher_id']) for r in records)
        self.assertEqual(fake, got)
        self.assertEqual([], self.notification_tee.errors)

    def _sequence(self, records):
        return ['%(seq)s %(event_type)s %(publisher_id)s host=%(host)s' % r
                for r in records]

    def _publishers(self, records):
        table = collections.OrderedDict()
        for r in records:
            table.setdefault(r['event_type'], [])
            entry = '%s (payload host %s)' % (r['publisher_id'], r['host'])
            if entry not in table[r['event_type']]:
                table[r['event_type']].append(entry)
        return table

    def _report(self, name, value):
        text = json.dumps(value, indent=2, sort_keys=False)
        self.addDetail(name, content.text_content(text))
        print('%s:\n%s' % (name, text))

    def test_boot_live_migrate_delete(self):
        server = self._boot_on_compute1()
        uuid = server['id']
        server = self.live_migrate(server, 'compute2')
        self.assertEqual('compute2', self.server_host(server))
        self.delete(server)

        records = self._instance_records(uuid, 'instance.delete.end')
        self._assert_in_order(records, [
            ('scheduler.select_destinations.end', None),
            ('instance.create.end', 'compute1'),
            ('instance.live_migration_pre.end', None),
            ('instance.live_migration_post_dest.end', 'compute2'),
            ('instance.delete.end', None),
        ])
        self._assert_same_as_fake(uuid, records)

        by_type = {}
        for r in records:
            by_type.setdefault(r['event_type'], r)

        # Where the flavor's extra specs and the image's properties are in
        # the RequestSpecPayload of scheduler.select_destinations.*.
        spec = _data(by_type['scheduler.select_destinations.end']['payload'])
        flavor = _data(spec['flavor'])
        image = _data(spec['image'])
        image_props = _data(image['properties'])
        self._report('request-spec-payload-shape', {
            'payload keys': sorted(spec),
            'flavor (nova_object.data) keys': sorted(flavor),
            'flavor extra_specs': flavor['extra_specs'],
            'image (nova_object.data) keys': sorted(image),
            'image properties': image['properties'],
            # One select_destinations per scheduling: the boot's and the
            # live migration's (a requested, not forced, host).
            'requested_destination of each select_destinations.end': [
                _data(r['payload'])['requested_destination']
                for r in records
                if r['event_type'] == 'scheduler.select_destinations.end'],
        })
        for key, value in self.EXTRA_SPECS.items():
            self.assertEqual(value, flavor['extra_specs'].get(key))
        self.assertEqual('2.0', image_props.get('hw_tpm_version'))
        self.assertEqual('tpm-crb', image_props.get('hw_tpm_model'))

        self._report('sequence', self._sequence(records))
        self._report('publishers', self._publishers(records))
        # The compute's notifications name the host that sent them.
        self.assertEqual('nova-compute:compute1',
                         by_type['instance.create.end']['publisher_id'])
        self.assertEqual(
            'nova-compute:compute2',
            by_type['instance.live_migration_pre.end']['publisher_id'])
        self.assertEqual(
            'nova-compute:compute2',
            by_type['instance.live_migration_post_dest.end']['publisher_id'])
        self.assertEqual('compute2',
                         by_type['instance.delete.end']['host'])

    def test_boot_live_migration_rollback_delete(self):
        server = self._boot_on_compute1()
        uuid = server['id']
        server = self.live_migrate_fail(server, 'compute2')
        self.assertEqual('compute1', self.server_host(server))
        self.delete(server)

        records = self._instance_records(uuid, 'instance.delete.end')
        self._assert_in_order(records, [
            ('scheduler.select_destinations.end', None),
            ('instance.create.end', 'compute1'),
            ('instance.live_migration_pre.end', None),
            ('instance.live_migration_rollback_dest.end', None),
            ('instance.delete.end', 'compute1'),
        ])
        self._assert_same_as_fake(uuid, records)
        self._report('sequence', self._sequence(records))
        self._report('publishers', self._publishers(records))

        by_type = {}
        for r in records:
            by_type.setdefault(r['event_type'], r)
        self.assertEqual(
            'nova-compute:compute2',
            by_type['instance.live_migration_pre.end']['publisher_id'])
        self.assertEqual(
            'nova-compute:compute2',
            by_type['instance.live_migration_rollback_dest.end'][
                'publisher_id'])
