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

"""The agent's intake and worker, the hook manager and the inventory hook.

A real sqlite journal; hooks built with stevedore's test instances; no
broker (the functional tests have the real one).
"""

import os
from unittest import mock

import fixtures
from oslo_config import cfg
import oslo_messaging
from oslotest import base
from stevedore import extension
from stevedore import named

from nova_vtpm.agent import events
from nova_vtpm.agent import service
from nova_vtpm import conf as nova_vtpm_conf
from nova_vtpm.hooks import base as hooks_base
from nova_vtpm.hooks import inventory
from nova_vtpm.hooks import manager as manager_mod
from nova_vtpm import journal as journal_mod
from nova_vtpm.tests.unit import fakes

UUID = '6a8f1a6e-4b6e-4ad0-9d5a-5b1c0d8c0a01'


class RecordingHook(hooks_base.HookBase):
    NAME = 'recording'
    calls = None
    fail_with = None

    def on_boot(self, event):
        self.calls.append(('boot', event.instance_uuid))
        if self.fail_with is not None:
            raise self.fail_with

    def on_delete(self, event):
        self.calls.append(('delete', event.instance_uuid))

    def reconcile(self, servers):
        self.calls.append(('reconcile', len(servers)))
        return {'seen': len(servers)}


class ComputeOnlyHook(RecordingHook):
    NAME = 'compute_only'
    ROLES = ('compute',)


class AgentTestBase(base.BaseTestCase):

    role = 'controller'

    def setUp(self):
        super().setUp()
        tmp = self.useFixture(fixtures.TempDir()).path
        self.conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(self.conf)
        self.conf([], default_config_files=[])
        self.conf.set_override('role', self.role, 'nova_vtpm_agent')
        self.conf.set_override('host', 'compute1', 'nova_vtpm_agent')
        self.journal = journal_mod.Journal(
            'sqlite:///' + os.path.join(tmp, 'j.sqlite'))
        self.journal.upgrade()
        self.context = manager_mod.HookContext(
            self.conf, self.journal, 'compute1', self.role)
        self.calls = []
        self.hooks = {}
        exts = []
        for cls in (inventory.InventoryHook, RecordingHook, ComputeOnlyHook):
            obj = cls(self.context)
            obj.calls = self.calls
            self.hooks[cls.NAME] = obj
            exts.append(extension.Extension(cls.NAME, None, cls, obj))
        mgr = named.NamedExtensionManager.make_test_instance(exts)
        self.manager = manager_mod.HookManager(
            self.context, None, extension_manager=mgr, max_attempts=3,
            base_delay=0.01, max_delay=0.02)
        self.agent = service.Agent(self.conf, self.journal, self.manager,
                                   transport=mock.sentinel.transport)

    def notify(self, event_type, payload, message_id=None, publisher=None,
               timestamp='2026-12-04 20:00:00.000000'):
        return self.agent.handle_notification(
            publisher or 'nova-compute:compute1', event_type, payload,
            fakes.metadata(message_id, timestamp))

    def drain(self, rounds=10):
        for _ in range(rounds):
            self.agent.run_due_work()
            due = self.journal.next_due()
            if due is None:
                return
            # Make waiting retries due now.
            for event in self.journal.list_events(state='retry'):
                self.journal.retry_event(event['id'])


class IntakeTest(AgentTestBase):

    def test_records_and_dispatches_in_order(self):
        payload = fakes.instance_payload(UUID)
        self.assertEqual(oslo_messaging.NotificationResult.HANDLED,
                         self.notify('instance.create.end', payload, 'm1'))
        self.notify('instance.delete.end', payload, 'm2',
                    timestamp='2026-12-04 20:01:00.000000')
        self.drain()
        self.assertEqual([('boot', UUID), ('delete', UUID)], self.calls)
        events_ = self.journal.list_events(newest_first=False)
        self.assertEqual(['done', 'done'], [e['state'] for e in events_])
        self.assertIsNotNone(self.journal.get_instance(UUID)['deleted_at'])

    def test_duplicate_is_recorded_once(self):
        payload = fakes.instance_payload(UUID)
        for _ in range(3):
            self.notify('instance.create.end', payload, 'm1')
        self.drain()
        self.assertEqual([('boot', UUID)], self.calls)
        self.assertEqual(1, len(self.journal.list_events()))

    def test_malformed_is_rejected_with_reason(self):
        for n, (etype, payload) in enumerate([
                ('instance.create.end', 'garbage'),
                ('instance.create.end', fakes.nova_object('X', {'uuid': 3})),
                ('frobnicate.now', {'x': 1}),
                (None, {})]):
            self.assertEqual(oslo_messaging.NotificationResult.HANDLED,
                             self.notify(etype, payload, 'bad%d' % n))
        rejected = self.journal.list_events(state='rejected',
                                            newest_first=False)
        self.assertEqual(4, len(rejected))
        self.assertIn('payload is str', rejected[0]['reason'])
        self.assertIn('payload.uuid must be a string', rejected[1]['reason'])
        self.assertIn("unknown event type 'frobnicate.now'",
                      rejected[2]['reason'])
        self.assertIn('event_type is missing', rejected[3]['reason'])
        # ... and the agent goes on.
        self.notify('instance.create.end', fakes.instance_payload(UUID))
        self.drain()
        self.assertEqual([('boot', UUID)], self.calls)

    def test_unused_nova_events_cost_nothing(self):
        self.notify('instance.update', fakes.instance_payload(UUID))
        self.notify('instance.create.start', fakes.instance_payload(UUID))
        self.assertEqual([], self.journal.list_events())

    def test_non_vtpm_server_is_skipped(self):
        self.notify('instance.create.end',
                    fakes.instance_payload(UUID, extra_specs={}))
        self.drain()
        self.assertEqual([], self.calls)
        (event,) = self.journal.list_events()
        self.assertEqual(('skipped', 'no vTPM'),
                         (event['state'], event['reason']))

    def test_image_only_vtpm_from_the_request_spec(self):
        self.notify('scheduler.select_destinations.end',
                    fakes.request_spec_payload(
                        UUID, {'hw_tpm_version': '2.0'}, extra_specs={}))
        self.notify('instance.create.end',
                    fakes.instance_payload(UUID, extra_specs={}))
        self.drain()
        self.assertEqual([('boot', UUID)], self.calls)
        self.assertEqual('2.0',
                         self.journal.get_instance(UUID)['vtpm_version'])

    def test_resize_away_from_vtpm_still_reaches_hooks(self):
        self.notify('instance.create.end', fakes.instance_payload(UUID))
        self.drain()
        self.notify('instance.resize_finish.end',
                    fakes.instance_payload(UUID, extra_specs={}),
                    timestamp='2026-12-04 20:05:00.000000')
        self.drain()
        row = self.journal.get_instance(UUID)
        self.assertEqual('resize_finish', row['lifecycle'])
        self.assertIsNone(row['vtpm_version'])

    def test_journal_failure_requeues(self):
        with mock.patch.object(self.journal, 'record_event',
                               side_effect=RuntimeError('db down')), \
                mock.patch('time.sleep'):
            self.assertEqual(
                oslo_messaging.NotificationResult.REQUEUE,
                self.notify('instance.create.end',
                            fakes.instance_payload(UUID)))
        self.assertEqual(1, self.agent.stats['requeued'])

    def test_controller_does_not_run_compute_hooks(self):
        self.assertEqual(['inventory', 'recording'],
                         self.manager.hooks_for('boot'))


class ComputeRoleTest(AgentTestBase):

    role = 'compute'

    def test_other_hosts_are_skipped(self):
        self.notify('instance.create.end',
                    fakes.instance_payload(UUID, host='compute2'),
                    publisher='nova-compute:compute2')
        (event,) = self.journal.list_events()
        self.assertEqual('skipped', event['state'])
        self.assertIn('compute2', event['reason'])

    def test_incoming_migration_is_ours(self):
        self.notify('instance.live_migration_pre.end',
                    fakes.instance_payload(UUID, host='compute2'),
                    publisher='nova-compute:compute1')
        (event,) = self.journal.list_events()
        self.assertEqual('pending', event['state'])

    def test_compute_hooks_run(self):
        self.assertEqual(['inventory', 'recording', 'compute_only'],
                         self.manager.hooks_for('boot'))


class OutcomeTest(AgentTestBase):

    def _boot(self):
        self.notify('instance.create.end', fakes.instance_payload(UUID))

    def test_one_hook_failing_does_not_block_the_others(self):
        self.hooks['recording'].fail_with = ValueError('boom')
        self._boot()
        self.agent.run_due_work()
        event = self.journal.get_event(self.journal.list_events()[0]['id'])
        states = {w['hook']: w['state'] for w in event['work']}
        self.assertEqual({'inventory': 'done', 'recording': 'retry'},
                         states)
        self.assertIsNotNone(self.journal.get_instance(UUID))

    def test_retry_then_failed_after_max_attempts(self):
        self.hooks['recording'].fail_with = hooks_base.RetryLater(
            'keylime down')
        self._boot()
        self.drain()
        event = self.journal.get_event(self.journal.list_events()[0]['id'])
        work = {w['hook']: w for w in event['work']}
        self.assertEqual('failed', work['recording']['state'])
        self.assertEqual(3, work['recording']['attempts'])
        self.assertIn('gave up after 3 attempts: keylime down',
                      work['recording']['reason'])
        self.assertEqual('failed', event['state'])

    def test_permanent_failure_is_not_retried(self):
        self.hooks['recording'].fail_with = hooks_base.PermanentFailure(
            'EK certificate of another instance')
        self._boot()
        self.drain()
        self.assertEqual(1, len(self.calls))
        event = self.journal.list_events()[0]
        self.assertEqual('failed', event['state'])

    def test_retry_later_with_delay(self):
        self.hooks['recording'].fail_with = hooks_base.RetryLater(
            'not registered yet', delay=1000)
        self._boot()
        self.agent.run_due_work()
        self.agent.run_due_work()
        self.assertEqual(1, len(self.calls))
        work = self.journal.get_event(
            self.journal.list_events()[0]['id'])['work'][1]
        self.assertEqual('not registered yet', work['reason'])

    def test_backoff_is_bounded_and_jittered(self):
        self.assertEqual(1.0, manager_mod.backoff(0, 2, 100, lambda: 0))
        self.assertEqual(2.0, manager_mod.backoff(0, 2, 100, lambda: 1))
        self.assertEqual(16.0, manager_mod.backoff(3, 2, 100, lambda: 1))
        self.assertEqual(100.0, manager_mod.backoff(60, 2, 100, lambda: 1))

    def test_reconcile_isolates_hooks(self):
        with mock.patch.object(self.hooks['inventory'], 'reconcile',
                               side_effect=RuntimeError('x')):
            results = self.manager.reconcile([])
        self.assertIn('error', results['inventory'])
        self.assertEqual({'seen': 0}, results['recording'])


class InventoryOrderTest(AgentTestBase):

    def test_delete_before_boot_stays_deleted(self):
        payload = fakes.instance_payload(UUID)
        self.notify('instance.delete.end', payload, 'm2',
                    timestamp='2026-12-04 20:01:00.000000')
        self.notify('instance.create.end', payload, 'm1',
                    timestamp='2026-12-04 20:00:00.000000')
        self.drain()
        row = self.journal.get_instance(UUID)
        self.assertIsNotNone(row['deleted_at'])
        self.assertEqual('delete', row['lifecycle'])

    def test_older_event_does_not_overwrite_newer(self):
        self.notify('instance.live_migration_post_dest.end',
                    fakes.instance_payload(UUID, host='compute2'), 'm2',
                    timestamp='2026-12-04 20:02:00.000000')
        self.notify('instance.create.end',
                    fakes.instance_payload(UUID, host='compute1'), 'm1',
                    timestamp='2026-12-04 20:00:00.000000')
        self.drain()
        self.assertEqual('compute2', self.journal.get_instance(UUID)['host'])

    def test_source_post_event_does_not_move_the_instance_back(self):
        self.notify('instance.create.end',
                    fakes.instance_payload(UUID, host='compute1'), 'm1',
                    timestamp='2026-12-04 20:00:00.000000')
        self.notify('instance.live_migration_post_dest.end',
                    fakes.instance_payload(UUID, host='compute2'), 'm2',
                    publisher='nova-compute:compute2',
                    timestamp='2026-12-04 20:02:00.000000')
        # Sent by the source after the destination's event, host=source.
        self.notify('instance.live_migration_post.end',
                    fakes.instance_payload(UUID, host='compute1'), 'm3',
                    timestamp='2026-12-04 20:02:01.000000')
        self.drain()
        row = self.journal.get_instance(UUID)
        self.assertEqual(('compute2', 'live_migration_post'),
                         (row['host'], row['lifecycle']))

    def test_reconcile_adds_and_removes(self):
        self.journal.put_instance('gone', host='h', vtpm_version='2.0')
        server = events.ServerView(UUID, 'compute1', 'active', None, 'p',
                                   'f', {'hw:tpm_version': '2.0'}, None)
        plain = events.ServerView('other', 'compute1', 'active', None, 'p',
                                  'f', {}, None)
        from nova_vtpm import tpm
        for s in (server, plain):
            s.request = tpm.resolve(s.flavor_specs, {})
        result = self.hooks['inventory'].reconcile([server, plain])
        self.assertEqual({'added': 1, 'updated': 0, 'removed': 1}, result)
        self.assertEqual([UUID], [r['uuid'] for r in
                                  self.journal.list_instances()])
        result = self.hooks['inventory'].reconcile([server, plain])
        self.assertEqual({'added': 0, 'updated': 0, 'removed': 0}, result)


class HookLoadingTest(base.BaseTestCase):

    def test_unknown_hook_stops_with_a_clear_error(self):
        conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(conf)
        conf([], default_config_files=[])
        context = manager_mod.HookContext(conf, None, 'h', 'controller')
        e = self.assertRaises(manager_mod.HookLoadError,
                              manager_mod.HookManager, context,
                              ['inventory', 'nosuchhook'])
        self.assertIn('nosuchhook', str(e))
        self.assertIn('known: inventory', str(e))

    def test_installed_hooks_load_by_name(self):
        conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(conf)
        conf([], default_config_files=[])
        context = manager_mod.HookContext(conf, None, 'h', 'controller')
        mgr = manager_mod.HookManager(context, ['inventory'])
        self.assertEqual(['inventory'], mgr.names)
        self.assertIsInstance(mgr.hooks['inventory'],
                              inventory.InventoryHook)
