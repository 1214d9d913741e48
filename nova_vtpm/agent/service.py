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

"""The nova-vtpm agent: notification intake -> journal -> hooks.

* A notification listener (oslo.messaging, ``threading`` executor) records
  every notification it uses in the journal and only then acknowledges it;
  when the journal cannot be written, the message is requeued.
* A worker thread claims due work from the journal and runs the hooks;
  outcomes (done, retry at a time, failed) go back to the journal.
* A reconciler thread periodically compares Nova with the journal.

Stopping (SIGTERM): the listener stops consuming, the worker finishes the
hook call under way, unstarted claims are released, the agent exits.
"""

import hashlib
import json
import os
import threading
import time

from oslo_log import log as logging
import oslo_messaging

from nova_vtpm.agent import events as events_mod
from nova_vtpm.agent import request as request_mod
from nova_vtpm.hooks import base as hooks_base
from nova_vtpm import journal as journal_mod

LOG = logging.getLogger(__name__)

# Event types the agent records in the journal.
USED_EVENT_TYPES = frozenset(
    list(hooks_base.LIFECYCLE_EVENTS.values()) +
    [events_mod.REQUEST_SPEC_EVENT])
# Prefixes of Nova's versioned notifications: events of these families the
# agent does not use are acknowledged without a journal entry. Anything else
# is not a Nova notification and is recorded as rejected.
NOVA_EVENT_PREFIXES = (
    'aggregate.', 'compute.', 'compute_task.', 'flavor.', 'instance.',
    'keypair.', 'libvirt.', 'metrics.', 'scheduler.', 'server_group.',
    'service.', 'volume.')


def pool_name(conf):
    group = conf.nova_vtpm_agent
    if group.pool:
        return group.pool
    if group.role == 'compute':
        return 'nova-vtpm-compute-%s' % group.host
    return 'nova-vtpm-controller'


class NotificationEndpoint:
    """oslo.messaging endpoint: every priority goes to the agent."""

    def __init__(self, agent):
        self.agent = agent

    def _handle(self, ctxt, publisher_id, event_type, payload, metadata):
        return self.agent.handle_notification(publisher_id, event_type,
                                              payload, metadata)

    audit = debug = info = warn = error = critical = sample = _handle


class Agent:
    """The agent's moving parts, started and stopped together.

    :param conf: the oslo.config ConfigOpts.
    :param journal: a :class:`~nova_vtpm.journal.Journal`.
    :param manager: a :class:`~nova_vtpm.hooks.manager.HookManager`.
    :param transport: an oslo.messaging notification transport, or None to
        build one from ``conf``.
    :param reconciler: a :class:`~nova_vtpm.agent.reconciler.Reconciler`,
        or None for no periodic reconciliation.
    :param resolver: a :class:`~nova_vtpm.agent.request.RequestResolver`.
    """

    def __init__(self, conf, journal, manager, transport=None,
                 reconciler=None, resolver=None):
        self.conf = conf
        self.group = conf.nova_vtpm_agent
        self.journal = journal
        self.manager = manager
        self.transport = transport
        self.reconciler = reconciler
        self.resolver = resolver or request_mod.RequestResolver(conf,
                                                                journal)
        self.host = self.group.host
        self.role = self.group.role
        self.owner = '%s:%d' % (self.host, os.getpid())
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads = []
        self._listener = None
        self.stats = {'received': 0, 'recorded': 0, 'duplicates': 0,
                      'rejected': 0, 'requeued': 0}
        self._stats_lock = threading.Lock()

    # -- intake ----------------------------------------------------------

    def _count(self, key):
        with self._stats_lock:
            self.stats[key] += 1

    def handle_notification(self, publisher_id, event_type, payload,
                            metadata):
        """Record one notification; the return value acks or requeues it."""
        self._count('received')
        try:
            created = self._record(publisher_id, event_type, payload,
                                   metadata)
        except Exception:
            # The journal is unreachable: do not lose the event, let the
            # broker deliver it again.
            LOG.exception('Cannot record %s in the journal; requeueing it',
                          event_type)
            self._count('requeued')
            time.sleep(0.5)
            return oslo_messaging.NotificationResult.REQUEUE
        if created:
            self._wake.set()
        return oslo_messaging.NotificationResult.HANDLED

    def _message_id(self, event_type, payload, metadata):
        message_id = (metadata or {}).get('message_id') if isinstance(
            metadata, dict) else None
        if isinstance(message_id, str) and message_id:
            return message_id[:64]
        # No id: derive one from the content, so redeliveries still dedup.
        blob = json.dumps([event_type, payload, metadata], default=str,
                          sort_keys=True)
        return 'sha256:' + hashlib.sha256(blob.encode()).hexdigest()[:56]

    def _record(self, publisher_id, event_type, payload, metadata):
        message_id = self._message_id(event_type, payload, metadata)
        common = dict(message_id=message_id, publisher_id=(
            publisher_id if isinstance(publisher_id, str) else None),
            payload=payload)
        if not isinstance(event_type, str) or not event_type:
            return self._reject(common, '<none>', 'event_type is missing')
        if event_type not in USED_EVENT_TYPES:
            if event_type.startswith(NOVA_EVENT_PREFIXES):
                return False
            return self._reject(
                common, event_type, 'unknown event type %r: not a Nova '
                'versioned notification' % event_type[:255])
        try:
            parsed = events_mod.parse(event_type, payload, publisher_id,
                                      metadata)
        except events_mod.MalformedNotification as e:
            return self._reject(common, event_type, str(e))
        if isinstance(parsed, events_mod.RequestSpecEvent):
            self.journal.save_request_spec(
                parsed.instance_uuid, parsed.flavor_name,
                parsed.flavor_specs, parsed.image_uuid, parsed.image_name,
                parsed.image_props)
            _, created = self.journal.record_event(
                event_type=event_type, instance_uuid=parsed.instance_uuid,
                state=journal_mod.DONE, reason='request spec remembered',
                **common)
            return created
        return self._record_instance_event(parsed, common)

    def _reject(self, common, event_type, reason):
        LOG.warning('Rejected notification %s (%s): %s',
                    common['message_id'], event_type, reason)
        self._count('rejected')
        _, created = self.journal.record_event(
            event_type=event_type[:255], state=journal_mod.REJECTED,
            reason=reason, **common)
        return created

    def _record_instance_event(self, event, common):
        fields = dict(event_type=event.event_type, lifecycle=event.lifecycle,
                      instance_uuid=event.instance_uuid, host=event.host,
                      timestamp=event.timestamp, **common)
        if self.role == 'compute' and self.host not in (
                event.host, event.acting_host):
            _, created = self.journal.record_event(
                state=journal_mod.SKIPPED, reason='instance of host %s, not '
                'of this compute agent' % event.host, **fields)
            return created
        request = self.resolver.resolve(event)
        known = None
        if request.vtpm is None:
            known = self.journal.get_instance(event.instance_uuid)
        if request.vtpm is None and (known is None or
                                     known['vtpm_version'] is None):
            _, created = self.journal.record_event(
                state=journal_mod.SKIPPED, reason='no vTPM', **fields)
            return created
        hooks = self.manager.hooks_for(event.lifecycle)
        _, created = self.journal.record_event(hooks=hooks, **fields)
        if created:
            self._count('recorded')
        return created

    # -- work ------------------------------------------------------------

    def _event_from_work(self, item):
        payload = json.loads(item['payload']) if item['payload'] else {}
        event = events_mod.parse(
            item['event_type'], payload, item['publisher_id'],
            {'message_id': item['message_id']})
        event.timestamp = item['timestamp']
        event.request = self.resolver.resolve(event)
        return event

    def run_due_work(self, limit=50):
        """Run the work that is due now; returns how many items ran."""
        items = self.journal.claim_work(self.owner, self.group.claim_lease,
                                        limit=limit)
        ran = 0
        for item in items:
            if self._stopping.is_set():
                break
            try:
                event = self._event_from_work(item)
            except events_mod.MalformedNotification as e:
                self.journal.finish_work(item['id'], self.owner, 'failed',
                                         str(e))
                continue
            outcome = self.manager.run(item['hook'], event,
                                       item['attempts'])
            self.journal.finish_work(item['id'], self.owner, outcome.state,
                                     outcome.reason, outcome.next_attempt_at)
            ran += 1
        return ran

    def _work_loop(self):
        last_purge = 0.0
        while not self._stopping.is_set():
            try:
                ran = self.run_due_work()
                if time.time() - last_purge > 3600:
                    last_purge = time.time()
                    self._purge()
            except Exception:
                LOG.exception('The worker hit an error; going on')
                ran = 0
            if ran:
                continue
            timeout = self.group.poll_interval
            try:
                due = self.journal.next_due()
            except Exception:
                due = None
            if due is not None:
                timeout = max(0.01, min(timeout, due - time.time()))
            self._wake.wait(timeout)
            self._wake.clear()

    def _purge(self):
        days = self.conf.nova_vtpm_journal.retention_days
        if days:
            n = self.journal.purge(time.time() - days * 86400)
            if n:
                LOG.info('Purged %d finished events older than %d days',
                         n, days)

    def _reconcile_loop(self):
        interval = self.group.reconcile_interval
        while not self._stopping.wait(interval):
            try:
                self.reconciler.run()
            except Exception:
                LOG.exception('Reconciliation failed; next try in %d s',
                              interval)

    # -- lifecycle -------------------------------------------------------

    def _release_dead_claims(self):
        """Claims of this host's agents that are gone are free at once."""
        owners = self.journal.claim_owners(self.host + ':')
        for owner in owners:
            try:
                pid = int(owner.rsplit(':', 1)[1])
            except ValueError:
                continue
            if pid != os.getpid() and not _pid_alive(pid):
                n = self.journal.release_claims(owner)
                LOG.info('Released %d claims of the dead agent %s', n, owner)

    def start(self):
        self.journal.upgrade()
        self._release_dead_claims()
        if self.transport is None:
            self.transport = oslo_messaging.get_notification_transport(
                self.conf)
        targets = [oslo_messaging.Target(topic=self.group.topic,
                                         exchange=self.group.exchange)]
        self._listener = oslo_messaging.get_notification_listener(
            self.transport, targets, [NotificationEndpoint(self)],
            executor='threading', pool=pool_name(self.conf),
            allow_requeue=True)
        worker = threading.Thread(target=self._work_loop,
                                  name='nova-vtpm-worker', daemon=True)
        self._threads.append(worker)
        if self.reconciler is not None and self.group.reconcile_interval:
            self._threads.append(threading.Thread(
                target=self._reconcile_loop, name='nova-vtpm-reconciler',
                daemon=True))
        for thread in self._threads:
            thread.start()
        self._listener.start()
        LOG.info('nova-vtpm agent started: role %(role)s, host %(host)s, '
                 'pool %(pool)s, hooks %(hooks)s',
                 {'role': self.role, 'host': self.host,
                  'pool': pool_name(self.conf),
                  'hooks': ', '.join(self.manager.names) or 'none'})

    def stop(self, timeout=60):
        """Stop consuming, finish the hook call under way, release claims."""
        LOG.info('nova-vtpm agent stopping')
        if self._listener is not None:
            self._listener.stop()
            self._listener.wait()
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        released = self.journal.release_claims(self.owner)
        LOG.info('nova-vtpm agent stopped (%d claims released)', released)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
