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
from oslo_messaging.notify import dispatcher as notify_dispatcher
from oslo_messaging.notify import listener as notify_listener
from sqlalchemy import exc as sa_exc

from nova_vtpm.agent import events as events_mod
from nova_vtpm.agent import facts as facts_mod
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

# When a claim brought less than a full batch of work, the worker lets new
# events gather this long before it claims again: under a stream of events
# it claims them by the dozen rather than one by one (each claim costs
# queries, and the GIL the listener's threads need); a lone event's work
# starts this much later.
WORK_BATCH_WINDOW = 0.05
WORK_BATCH_SIZE = 50


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


class NotificationDispatcher(notify_dispatcher.NotificationDispatcher):
    """oslo.messaging's dispatcher, safe from messages without a priority.

    oslo.messaging acknowledges a message whose priority is missing or
    unknown without telling the endpoint, and raises on one whose priority
    is not a string (``null``, a number): its server then requeues the
    message, which with ``allow_requeue`` comes back at once, forever (a
    hot loop, a traceback each time). Such a message is not a notification:
    the agent records it as rejected.
    """

    def __init__(self, endpoints, agent):
        super().__init__(endpoints, None)
        self.agent = agent

    def dispatch(self, incoming):
        message = incoming.message
        priority = message.get('priority')
        if not isinstance(priority, str) or (
                priority.lower() not in notify_dispatcher.PRIORITIES):
            return self.agent.handle_malformed_message(
                message, 'not a notification: priority %r is not one of %s'
                % (priority, ', '.join(notify_dispatcher.PRIORITIES)))
        return super().dispatch(incoming)


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
        self.facts_publisher = None
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
            try:
                created = self._record(publisher_id, event_type, payload,
                                       metadata)
            except Exception as e:
                if _journal_unavailable(e):
                    raise
                # The journal refuses this message (a value too long for
                # its column, a NUL character PostgreSQL does not store):
                # requeueing it would bring it back forever.
                LOG.exception('Cannot record %s as it is; recording it as '
                              'rejected', _clean(event_type, 255))
                created = self._reject_unrecordable(
                    publisher_id, event_type, payload, metadata, e)
        except Exception:
            # The journal is unreachable: do not lose the event, let the
            # broker deliver it again.
            LOG.exception('Cannot record %s in the journal; requeueing it',
                          _clean(event_type, 255))
            self._count('requeued')
            time.sleep(0.5)
            return oslo_messaging.NotificationResult.REQUEUE
        if created:
            self._wake.set()
        return oslo_messaging.NotificationResult.HANDLED

    def handle_malformed_message(self, message, reason):
        """Record a message oslo.messaging cannot dispatch as rejected."""
        self._count('received')

        event_type = _clean(message.get('event_type'), 255) or '<none>'
        message_id = self._message_id(event_type, message, {
            'message_id': message.get('message_id')})
        common = dict(message_id=_clean(message_id, 64),
                      publisher_id=_clean(message.get('publisher_id'), 255),
                      payload=json.dumps(message, default=str,
                                         sort_keys=True))
        try:
            self._reject(common, event_type, reason)
        except Exception:
            LOG.exception('Cannot record a malformed message in the '
                          'journal; requeueing it')
            self._count('requeued')
            time.sleep(0.5)
            return oslo_messaging.NotificationResult.REQUEUE
        return oslo_messaging.NotificationResult.HANDLED

    def _reject_unrecordable(self, publisher_id, event_type, payload,
                             metadata, error):
        """Record as rejected what the journal refused, made storable."""
        message_id = self._message_id(event_type, payload, metadata)
        common = dict(message_id=_clean(message_id, 64),
                      publisher_id=_clean(publisher_id, 255),
                      payload=json.dumps(payload, default=str,
                                         sort_keys=True))
        reason = 'the journal cannot store it as it is: %s: %s' % (
            type(error).__name__, (str(error).splitlines() or [''])[0])
        return self._reject(common, _clean(event_type, 255) or '<none>',
                            _clean(reason, 1000))

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
        if event_type == facts_mod.FACTS_EVENT:
            return self._record_host_facts(event_type, common)
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

    def _record_host_facts(self, event_type, common):
        """Another (or this) compute agent's host facts: keep the latest."""
        try:
            host, stored = facts_mod.record(self.journal, common['payload'],
                                            common['publisher_id'])
        except facts_mod.MalformedFacts as e:
            return self._reject(common, event_type, str(e))
        if (self.facts_publisher is not None and host != self.host and
                common['payload'].get('trigger') ==
                facts_mod.FactsPublisher.START):
            # A compute agent started and knows nobody yet: tell it.
            self.facts_publisher.nudge()
        _, created = self.journal.record_event(
            event_type=event_type, host=host, state=journal_mod.DONE,
            reason='host facts of %s %s' % (
                host, 'recorded' if stored else 'older than those recorded'),
            **common)
        return created

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
        request, complete = self.resolver.resolve_event(event)
        known = None
        if request.vtpm is None:
            known = self.journal.get_instance(event.instance_uuid)
        # Incomplete (Glance down, no request spec): it may be a vTPM
        # server; let the hooks' work wait for the image properties.
        if complete and request.vtpm is None and (
                known is None or known['vtpm_version'] is None):
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
        event.request, event.request_complete = self.resolver.resolve_event(
            event)
        return event

    def run_due_work(self, limit=WORK_BATCH_SIZE):
        """Run the work that is due now; returns how many items ran."""
        lease = self.group.claim_lease
        items = self.journal.claim_work(self.owner, lease, limit=limit)
        ran = 0
        for n, item in enumerate(items):
            if self._stopping.is_set():
                break
            # The claims run out together: work started after that could
            # be another agent's by then, and run twice at once. After the
            # first item, stop when half the lease is gone and give the
            # rest back.
            if time.time() > item['claimed_until'] - (lease / 2 if n else 0):
                self.journal.release_claims(self.owner)
                break
            try:
                event = self._event_from_work(item)
            except events_mod.MalformedNotification as e:
                self.journal.finish_work(item['id'], self.owner, 'failed',
                                         str(e))
                continue
            if event.request_complete:
                outcome = self.manager.run(item['hook'], event,
                                           item['attempts'])
            else:
                outcome = self.manager.retry(
                    item['hook'], event, item['attempts'],
                    'the properties of image %s are unavailable (is Glance '
                    'reachable?)' % event.image_uuid)
            if not self.journal.finish_work(item['id'], self.owner,
                                            outcome.state, outcome.reason,
                                            outcome.next_attempt_at):
                LOG.warning('Lost the claim on work %(id)s (hook %(hook)s '
                            'on %(event)s) before it ended: its lease ran '
                            'out; outcome %(outcome)s dropped',
                            {'id': item['id'], 'hook': item['hook'],
                             'event': event, 'outcome': outcome})
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
                if ran < WORK_BATCH_SIZE:
                    self._stopping.wait(WORK_BATCH_WINDOW)
                continue
            timeout = self.group.poll_interval
            try:
                due = self.journal.next_due()
            except Exception:
                due = None
            if due is not None:
                timeout = max(0.01, min(timeout, due - time.time()))
            woken = self._wake.wait(timeout)
            self._wake.clear()
            if woken:
                # New events: more may be on their way.
                self._stopping.wait(WORK_BATCH_WINDOW)

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
        # What get_notification_listener does, with the dispatcher above.
        self._listener = notify_listener.NotificationServer(
            self.transport, targets,
            NotificationDispatcher([NotificationEndpoint(self)], self),
            executor='threading', allow_requeue=True,
            pool=pool_name(self.conf))
        worker = threading.Thread(target=self._work_loop,
                                  name='nova-vtpm-worker', daemon=True)
        self._threads.append(worker)
        if self.reconciler is not None and self.group.reconcile_interval:
            self._threads.append(threading.Thread(
                target=self._reconcile_loop, name='nova-vtpm-reconciler',
                daemon=True))
        for thread in self._threads:
            thread.start()
        self._listener.start(override_pool_size=self.group.executor_threads)
        if self.role == hooks_base.ROLE_COMPUTE and \
                self.conf.nova_vtpm_facts.publish:
            self.facts_publisher = facts_mod.FactsPublisher(
                self.conf, self.transport, host=self.host)
            self.facts_publisher.start()
        LOG.info('nova-vtpm agent started: role %(role)s, host %(host)s, '
                 'pool %(pool)s, hooks %(hooks)s',
                 {'role': self.role, 'host': self.host,
                  'pool': pool_name(self.conf),
                  'hooks': ', '.join(self.manager.names) or 'none'})

    def stop(self, timeout=60):
        """Stop consuming, finish the hook call under way, release claims."""
        LOG.info('nova-vtpm agent stopping')
        if self.facts_publisher is not None:
            self.facts_publisher.stop()
        if self._listener is not None:
            self._listener.stop()
            self._listener.wait()
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        released = self.journal.release_claims(self.owner)
        LOG.info('nova-vtpm agent stopped (%d claims released)', released)


def _journal_unavailable(error):
    """Whether a journal error is about the database, not the data."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError,
                              sa_exc.DisconnectionError, sa_exc.TimeoutError))


def _clean(value, length):
    """A string any journal database stores: no NUL, at most ``length``."""
    if not isinstance(value, str):
        return None
    return value.replace('\x00', '\\x00')[:length]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
