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

"""The swtpm_state hook, with swtpm and libvirt replaced.

A real sqlite journal, a real local backup store and real state
directories (fake but well-formed blobs); the identity read, the secret
look-up and Nova are mocks. The functional tests run the real swtpm.
"""

import json
import os
import shutil
from unittest import mock

import fixtures
from oslo_config import cfg
from oslotest import base

from nova_vtpm import actions
from nova_vtpm.agent import events
from nova_vtpm import conf as nova_vtpm_conf
from nova_vtpm.hooks import base as hooks_base
from nova_vtpm.hooks import manager as manager_mod
from nova_vtpm.hooks import swtpm_state
from nova_vtpm import journal as journal_mod
from nova_vtpm import secrets as secrets_mod
from nova_vtpm.swtpm import backup as backup_mod
from nova_vtpm.swtpm import capabilities
from nova_vtpm.swtpm import exception as swtpm_exc
from nova_vtpm.swtpm import state as state_mod
from nova_vtpm.tests.unit import test_swtpm_backup as backup_tests
from nova_vtpm.tests.unit import test_swtpm_state as state_tests
from nova_vtpm import tpm

UUID = state_tests.UUID
HOST = 'compute1'
SECRET = b'c2VjcmV0'
FACTS = capabilities.HostFacts('0.7.1', '0.7.1', '0.9.2', ('tpm-2.0',), ())
OLD = backup_tests.fake_identity(b'OLD-EK' * 100)
NEW = backup_tests.fake_identity(b'NEW-EK' * 100)


class FakeSecrets:
    """A SecretSource: a value per mode, or an exception."""

    def __init__(self):
        self.value = SECRET
        self.error = None
        self.calls = []
        self.virsh = mock.Mock(spec=secrets_mod.Virsh)
        self.virsh.instance_secrets.return_value = []
        self.virsh.domain_defined.return_value = False

    def get(self, instance_uuid, mode):
        self.calls.append((instance_uuid, mode))
        if mode == 'user':
            raise secrets_mod.SecretUnavailable(
                'user', instance_uuid, 'only the owner can read it')
        if self.error is not None:
            raise self.error
        return self.value


def event(lifecycle, uuid=UUID, host=HOST, message_id=None, mode='host',
          publisher=None, version='2.0'):
    ev = events.InstanceEvent(
        event_type=hooks_base.LIFECYCLE_EVENTS[lifecycle],
        lifecycle=lifecycle, instance_uuid=uuid, host=host,
        publisher_id=publisher or 'nova-compute:%s' % host,
        message_id=message_id or 'msg-%s' % lifecycle, timestamp=1000.0)
    ev.request = tpm.Resolution(
        vtpm=tpm.VTPM(version, 'tpm-crb', mode) if mode else None,
        attestation=None) if mode is not False else None
    return ev


class HookTestBase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        tmp = self.useFixture(fixtures.TempDir()).path
        self.conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(self.conf)
        self.conf([], default_config_files=[])
        self.root = os.path.join(tmp, 'swtpm')
        self.flags(state_root=self.root,
                   backup_dir=os.path.join(tmp, 'backups'),
                   swtpm_user='root', swtpm_group='root')
        self.journal = journal_mod.Journal(
            'sqlite:///' + os.path.join(tmp, 'j.sqlite'))
        self.journal.upgrade()
        self.clients = mock.Mock(configured=True)
        self.nova = self.clients.nova.return_value
        from novaclient import api_versions
        self.nova.api_version = api_versions.APIVersion('2.86')
        self.secrets = FakeSecrets()
        context = manager_mod.HookContext(self.conf, self.journal, HOST,
                                          'compute', self.clients)
        self.hook = swtpm_state.SwtpmStateHook(context,
                                               secret_source=self.secrets)
        self.sd = state_mod.StateDir(self.root, UUID)
        self.read = self.useFixture(fixtures.MockPatchObject(
            state_mod.StateDir, 'read_identity',
            return_value=OLD)).mock
        self.useFixture(fixtures.MockPatch(
            'nova_vtpm.swtpm.capabilities.host_facts', return_value=FACTS))
        self.log = self.useFixture(fixtures.FakeLogger(level='DEBUG'))

    def flags(self, group='nova_vtpm_state', **kwargs):
        for key, value in kwargs.items():
            self.conf.set_override(key, value, group)

    def make_state(self, permall=None):
        os.makedirs(self.sd.path, mode=0o700, exist_ok=True)
        data = permall or state_tests.blob()
        with open(os.path.join(self.sd.path, 'tpm2-00.permall'), 'wb') as f:
            f.write(data)
        open(os.path.join(self.sd.path, '.lock'), 'wb').close()
        return data

    def events_of(self, event_type):
        return self.journal.list_events(event_type=event_type,
                                        newest_first=False)

    def backups(self):
        return self.hook.store.list(UUID)


class FirstSightAndChecksTest(HookTestBase):

    def test_boot_records_identity_and_backs_up(self):
        self.make_state()
        self.hook.on_boot(event('boot'))
        record = self.journal.get_identity(UUID)
        self.assertEqual(OLD.fingerprint, record['fingerprint'])
        self.assertEqual(OLD.ek_pub_sha256, record['ek_pub_sha256'])
        self.assertEqual('ok', record['last_result'])
        self.assertEqual('host', record['secret_security'])
        self.assertEqual(HOST, record['host'])
        self.assertIsNotNone(record['first_seen'])
        (manifest,) = self.backups()
        self.assertEqual(OLD.fingerprint, manifest['fingerprint'])
        self.assertEqual('boot', manifest['reason'])
        self.assertEqual(manifest['backup_id'], record['last_backup_id'])
        self.assertEqual([(UUID, 'host')], self.secrets.calls)
        # The secret went to swtpm and nowhere else.
        self.assertEqual(SECRET, self.read.call_args[0][0])
        self.assertNotIn(SECRET.decode(), self.log.output)

    def test_duplicate_and_unchanged_states_make_no_new_backup(self):
        self.make_state()
        self.hook.on_boot(event('boot'))
        self.hook.on_boot(event('boot'))
        self.hook.on_reboot(event('reboot'))
        self.assertEqual(1, len(self.backups()))
        # The state changed (the guest wrote NV): a new backup.
        self.make_state(state_tests.blob(tlvs=[
            (2, b'\x01' * 6128), (3, b'\x02' * 32), (6, b'\x03' * 16)]))
        self.hook.on_power_on(event('power_on'))
        self.assertEqual(2, len(self.backups()))
        self.assertEqual([], self.events_of(swtpm_state.EVENT_ALARM))

    def test_other_hosts_events_are_ignored(self):
        self.make_state()
        self.hook.on_boot(event('boot', host='compute2'))
        self.assertIsNone(self.journal.get_identity(UUID))
        self.assertFalse(self.read.called)

    def test_destination_side_event_acts_on_the_publisher(self):
        self.make_state()
        # post_dest: payload host still the source, publisher the dest.
        self.hook.on_live_migration_post_dest(event(
            'live_migration_post_dest', host='compute0',
            publisher='nova-compute:%s' % HOST))
        self.assertEqual(OLD.fingerprint,
                         self.journal.get_identity(UUID)['fingerprint'])

    def test_first_sight_after_another_event_says_so(self):
        self.make_state()
        self.hook.on_reboot(event('reboot'))
        record = self.journal.get_identity(UUID)
        self.assertIn('cannot be detected', record['last_detail'])

    def test_resized_to_a_flavor_without_vtpm(self):
        self.make_state()
        self.hook.on_resize_finish(event('resize_finish', mode=None))
        self.assertFalse(self.read.called)

    def test_expected_identity_from_a_shared_store(self):
        """A migrated-in server: the newest backup says what to expect."""
        self.make_state()
        backup_mod.backup(self.sd, self.hook.store, identity=OLD,
                          host_facts=FACTS)
        self.read.return_value = NEW
        self.hook.on_live_migration_post_dest(event(
            'live_migration_post_dest'))
        (alarm,) = self.events_of(swtpm_state.EVENT_ALARM)
        self.assertIn('not the expected TPM', alarm['reason'])


class AlarmTest(HookTestBase):

    def setUp(self):
        super().setUp()
        self.make_state()
        self.hook.on_boot(event('boot'))

    def test_identity_changed_alarm_action_and_clear(self):
        self.flags(alarm_action='lock')
        self.read.return_value = NEW
        self.hook.on_power_on(event('power_on'))
        (alarm,) = self.events_of(swtpm_state.EVENT_ALARM)
        self.assertEqual('failed', alarm['state'])
        self.assertEqual(UUID, alarm['instance_uuid'])
        self.assertIn('is not the expected TPM', alarm['reason'])
        self.assertIn(NEW.fingerprint, alarm['reason'])
        self.assertIn('nova-vtpm state restore %s' % UUID, alarm['reason'])
        payload = json.loads(self.journal.get_event(alarm['id'])['payload'])
        self.assertEqual('identity_changed', payload['kind'])
        self.assertEqual(OLD.fingerprint, payload['expected_fingerprint'])
        self.assertEqual(NEW.fingerprint, payload['actual_fingerprint'])
        self.assertIn('vTPM STATE ALARM for instance %s' % UUID,
                      self.log.output)
        self.nova.servers.lock.assert_called_once_with(UUID, reason=mock.ANY)
        reason = self.nova.servers.lock.call_args[1]['reason']
        self.assertTrue(reason.startswith(actions.LOCK_REASON_PREFIX))
        self.assertLessEqual(len(reason), 255)
        record = self.journal.get_identity(UUID)
        self.assertEqual('alarm', record['last_result'])
        self.assertEqual(OLD.fingerprint, record['fingerprint'])
        self.assertEqual('lock', record['alarm_action'])
        # No backup of the wrong TPM.
        self.assertEqual(1, len(self.backups()))

        # A redelivery records nothing new.
        self.hook.on_power_on(event('power_on'))
        self.assertEqual(1, len(self.events_of(swtpm_state.EVENT_ALARM)))

        # The recorded TPM is back (restored): the alarm clears.
        self.read.return_value = OLD
        self.nova.servers.get.return_value = mock.Mock(
            locked=True, locked_reason=reason)
        self.hook.on_reboot(event('reboot'))
        (cleared,) = self.events_of(swtpm_state.EVENT_ALARM_CLEARED)
        self.assertEqual('done', cleared['state'])
        self.nova.servers.unlock.assert_called_once_with(UUID)
        record = self.journal.get_identity(UUID)
        self.assertEqual('ok', record['last_result'])
        self.assertIsNone(record['alarm_action'])

    def test_an_operators_lock_is_not_undone(self):
        self.flags(alarm_action='lock')
        self.read.return_value = NEW
        self.hook.on_power_on(event('power_on'))
        self.read.return_value = OLD
        self.nova.servers.get.return_value = mock.Mock(
            locked=True, locked_reason='maintenance by ops')
        self.hook.on_reboot(event('reboot'))
        self.assertFalse(self.nova.servers.unlock.called)

    def test_tag_action(self):
        self.flags(alarm_action='tag')
        self.read.return_value = NEW
        self.hook.on_power_on(event('power_on'))
        self.nova.servers.add_tag.assert_called_once_with(
            UUID, 'vtpm-state-alarm')

    def test_missing_dir_alarm_with_swtpm_words(self):
        shutil.rmtree(os.path.dirname(self.sd.path))
        self.read.side_effect = swtpm_exc.StateUnreadable(
            swtpm_exc.MISSING_DIR, self.sd.path,
            'the state directory does not exist',
            detail='SWTPM_NVRAM_Lock_Dir: Could not open lockfile',
            client_error='TPM result from PTM_INIT: 0x9')
        self.hook.on_live_migration_post_dest(event(
            'live_migration_post_dest'))
        (alarm,) = self.events_of(swtpm_state.EVENT_ALARM)
        self.assertIn('missing_dir', alarm['reason'])
        self.assertIn('Could not open lockfile', alarm['reason'])
        self.assertIn('PTM_INIT: 0x9', alarm['reason'])
        # Missing/empty is found without the secret.
        self.assertIsNone(self.read.call_args[0][0])
        self.assertFalse(self.nova.servers.lock.called)   # action none

    def test_empty_dir_alarm(self):
        for name in os.listdir(self.sd.path):
            os.unlink(os.path.join(self.sd.path, name))
        self.read.side_effect = swtpm_exc.StateUnreadable(
            swtpm_exc.EMPTY_STATE, self.sd.path, 'fresh TPM')
        self.hook.on_reboot(event('reboot'))
        (alarm,) = self.events_of(swtpm_state.EVENT_ALARM)
        self.assertIn('empty_state', alarm['reason'])

    def test_wrong_key_alarm(self):
        self.read.side_effect = swtpm_exc.StateUnreadable(
            swtpm_exc.WRONG_KEY, self.sd.path, 'the key does not open it',
            detail='Verification of HMAC failed')
        self.hook.on_reboot(event('reboot'))
        (alarm,) = self.events_of(swtpm_state.EVENT_ALARM)
        self.assertIn('Verification of HMAC failed', alarm['reason'])
        # These bytes were backed up: a failed HMAC is the key for sure.
        permall = self.backups()[-1]['files'][0]['sha256']
        self.assertEqual(permall,
                         self.read.call_args[1]['known_good_sha256'])

    def test_transient_action_failure_retries_without_a_second_alarm(self):
        from novaclient import exceptions as nova_exc
        self.flags(alarm_action='stop')
        self.read.return_value = NEW
        self.nova.servers.stop.side_effect = nova_exc.ClientException(503)
        self.assertRaises(hooks_base.RetryLater, self.hook.on_reboot,
                          event('reboot'))
        self.nova.servers.stop.side_effect = None
        self.hook.on_reboot(event('reboot'))
        self.assertEqual(1, len(self.events_of(swtpm_state.EVENT_ALARM)))
        self.assertEqual(2, self.nova.servers.stop.call_count)

    def test_transient_and_permanent_troubles(self):
        self.read.side_effect = swtpm_exc.StateUnreadable(
            swtpm_exc.SWTPM_FAILED, self.sd.path, 'swtpm crashed')
        self.assertRaises(hooks_base.RetryLater, self.hook.on_reboot,
                          event('reboot'))
        self.read.side_effect = swtpm_exc.SwtpmNotAvailable(
            binary='swtpm', reason='not installed')
        self.assertRaises(hooks_base.PermanentFailure, self.hook.on_reboot,
                          event('reboot'))
        self.read.side_effect = None
        self.secrets.error = secrets_mod.SecretServiceUnavailable(
            instance_uuid=UUID, service='libvirt', reason='down')
        self.assertRaises(hooks_base.RetryLater, self.hook.on_reboot,
                          event('reboot'))
        self.assertEqual([], self.events_of(swtpm_state.EVENT_ALARM))

    def test_swtpm_mid_write_is_retried(self):
        self.make_state(state_tests.blob()[:-100])
        with mock.patch.object(state_mod, 'state_in_use', return_value=True):
            exc = self.assertRaises(hooks_base.RetryLater,
                                    self.hook.on_reboot, event('reboot'))
        self.assertIn('being written', str(exc))
        self.assertEqual(2.0, exc.delay)
        # Not in use: the same damage is an alarm.
        self.read.side_effect = swtpm_exc.StateUnreadable(
            swtpm_exc.TRUNCATED_OR_CORRUPT, self.sd.path, 'truncated')
        self.hook.on_reboot(event('reboot', message_id='m2'))
        self.assertEqual(1, len(self.events_of(swtpm_state.EVENT_ALARM)))


class UserModeTest(HookTestBase):

    def test_recorded_what_could_be_recorded(self):
        data = self.make_state()
        self.hook.on_boot(event('boot', mode='user'))
        self.assertFalse(self.read.called)
        record = self.journal.get_identity(UUID)
        self.assertEqual('unverified', record['last_result'])
        self.assertIsNone(record['fingerprint'])
        self.assertEqual(len(data), record['permall_size'])
        self.assertIn('recorded what could be recorded (state present',
                      record['last_detail'])
        self.assertIn('identity not verifiable in user mode',
                      record['last_detail'])
        self.assertIn(str(len(data)), record['last_detail'])
        self.assertIn(backup_tests.sha(data), record['last_detail'])
        (note,) = self.events_of(swtpm_state.EVENT_UNVERIFIED)
        self.assertEqual('done', note['state'])
        self.assertEqual([], self.events_of(swtpm_state.EVENT_ALARM))
        # The ciphertext is backed up all the same.
        (manifest,) = self.backups()
        self.assertIsNone(manifest['fingerprint'])
        # No new note for the same finding.
        self.hook.on_reboot(event('reboot', mode='user'))
        self.assertEqual(1, len(self.events_of(
            swtpm_state.EVENT_UNVERIFIED)))

    def test_missing_state_is_still_an_alarm(self):
        self.read.side_effect = swtpm_exc.StateUnreadable(
            swtpm_exc.MISSING_DIR, self.sd.path, 'missing')
        self.hook.on_boot(event('boot', mode='user'))
        self.assertEqual(1, len(self.events_of(swtpm_state.EVENT_ALARM)))


class DeleteAndOrderTest(HookTestBase):

    def test_delete_before_boot(self):
        self.make_state()
        self.hook.on_delete(event('delete'))
        self.hook.on_boot(event('boot'))
        record = self.journal.get_identity(UUID)
        self.assertIsNotNone(record['deleted_at'])
        self.assertIsNone(record['fingerprint'])
        self.assertEqual([], self.backups())

    def test_delete_keeps_then_forgets(self):
        self.make_state()
        self.hook.on_boot(event('boot'))
        self.hook.on_delete(event('delete'))
        self.hook.on_delete(event('delete'))
        self.assertEqual(1, len(self.backups()))
        self.assertEqual(0, self.hook.purge_deleted(now=2000.0))
        self.assertEqual(1, self.hook.purge_deleted(
            now=1000.0 + 7 * 86400 + 1))
        self.assertIsNone(self.journal.get_identity(UUID))
        self.assertEqual([], self.backups())


class PruneTest(HookTestBase):

    def test_retention_keeps_the_last_good_backup(self):
        self.flags(backup_retention=2)
        self.make_state()
        self.hook.on_boot(event('boot'))
        good = self.backups()[0]['backup_id']
        # Three states that cannot be verified (host secret gone).
        self.secrets.error = secrets_mod.SecretUnavailable(
            'host', UUID, 'no libvirt secret')
        for n in range(3):
            self.make_state(state_tests.blob(tlvs=[
                (2, bytes([n]) * 6128), (3, b'\x02' * 32),
                (6, b'\x03' * 16)]))
            self.hook.on_reboot(event('reboot', message_id='r%d' % n))
        ids = [m['backup_id'] for m in self.backups()]
        self.assertEqual(3, len(ids))
        self.assertEqual(good, ids[0])
        # A host-mode secret that is gone is worth a warning.
        self.assertIn('no libvirt secret', self.log.output)


class LeftoverTest(HookTestBase):

    def setUp(self):
        super().setUp()
        self.make_state()
        self.secrets.virsh.instance_secrets.return_value = ['sec-1']

    def test_report_only(self):
        found, removed = self.hook.check_leftovers(
            UUID, 'live_migration_post', 'msg-live_migration_post')
        self.hook.on_live_migration_post(event('live_migration_post'))
        self.assertEqual(2, len(found))
        self.assertEqual([], removed)
        self.assertTrue(os.path.exists(self.sd.path))
        self.assertFalse(self.secrets.virsh.undefine_secret.called)
        (report,) = self.events_of(swtpm_state.EVENT_LEFTOVER)
        self.assertEqual('done', report['state'])
        self.assertIn('libvirt vtpm secret sec-1', report['reason'])
        self.assertIn('cleanup_source is off', report['reason'])

    def test_cleanup(self):
        self.flags(cleanup_source=True)
        self.hook.on_live_migration_post(event('live_migration_post'))
        self.secrets.virsh.undefine_secret.assert_called_once_with('sec-1')
        self.assertFalse(os.path.exists(os.path.dirname(self.sd.path)))
        (report,) = self.events_of(swtpm_state.EVENT_LEFTOVER)
        self.assertIn('Removed:', report['reason'])

    def test_no_cleanup_while_the_domain_is_here(self):
        self.flags(cleanup_source=True)
        self.secrets.virsh.domain_defined.return_value = True
        self.hook.on_live_migration_post(event('live_migration_post'))
        self.assertTrue(os.path.exists(self.sd.path))
        (report,) = self.events_of(swtpm_state.EVENT_LEFTOVER)
        self.assertIn('is defined on this host', report['reason'])

    def test_nothing_left(self):
        shutil.rmtree(os.path.dirname(self.sd.path))
        self.secrets.virsh.instance_secrets.return_value = []
        self.hook.on_live_migration_post(event('live_migration_post'))
        self.assertEqual([], self.events_of(swtpm_state.EVENT_LEFTOVER))

    def test_rollback_dest(self):
        # On the destination of a failed migration (payload host = src).
        self.hook.on_live_migration_rollback_dest(event(
            'live_migration_rollback_dest', host='compute0',
            publisher='nova-compute:%s' % HOST))
        self.assertEqual(1, len(self.events_of(swtpm_state.EVENT_LEFTOVER)))
        # Not for the host where the instance stays.
        self.hook.on_live_migration_rollback_dest(event(
            'live_migration_rollback_dest', message_id='x',
            publisher='nova-compute:compute9'))
        self.assertEqual(1, len(self.events_of(swtpm_state.EVENT_LEFTOVER)))

    def test_libvirt_down_is_retried(self):
        self.secrets.virsh.instance_secrets.side_effect = (
            secrets_mod.VirshError('secret-list', 'failed to connect to '
                                   'the hypervisor', connection=True))
        self.assertRaises(hooks_base.RetryLater,
                          self.hook.on_live_migration_post,
                          event('live_migration_post'))


class ReconcileTest(HookTestBase):

    def server(self, uuid=UUID, host=HOST, vm_state='active',
               task_state=None, mode='host'):
        view = events.ServerView(uuid, host, vm_state, task_state, 'p1',
                                 'f', {}, None)
        view.request = tpm.Resolution(
            vtpm=tpm.VTPM('2.0', 'tpm-crb', mode), attestation=None)
        return view

    def test_first_sight_backup_due_and_drift(self):
        self.make_state()
        counts = self.hook.reconcile([self.server()])
        self.assertEqual(1, counts['first_seen'])
        self.assertEqual(1, counts['backed_up'])
        # Not due yet: nothing read.
        self.read.reset_mock()
        counts = self.hook.reconcile([self.server()])
        self.assertEqual(0, counts['checked'])
        self.assertFalse(self.read.called)
        # Due: checked and, unchanged, not backed up twice.
        self.journal.put_identity(UUID, last_backup_at=1.0)
        counts = self.hook.reconcile([self.server()])
        self.assertEqual(1, counts['checked'])
        self.assertEqual(1, len(self.backups()))
        # Drift: the state directory is gone.
        shutil.rmtree(self.sd.path)
        self.read.side_effect = swtpm_exc.StateUnreadable(
            swtpm_exc.MISSING_DIR, self.sd.path, 'missing')
        counts = self.hook.reconcile([self.server()])
        self.assertEqual(1, counts['alarms'])
        # Once alarmed, the periodic look records no second alarm.
        self.hook.reconcile([self.server()])
        self.assertEqual(1, len(self.events_of(swtpm_state.EVENT_ALARM)))

    def test_skips(self):
        self.make_state()
        counts = self.hook.reconcile([
            self.server(host='compute2'),
            self.server(task_state='migrating'),
            self.server(vm_state='building')])
        self.assertEqual(0, counts['checked'])
        self.assertFalse(self.read.called)

    def test_periodic_backups_off(self):
        self.flags(backup_interval=0)
        self.make_state()
        self.hook.reconcile([self.server()])
        self.journal.put_identity(UUID, last_backup_at=1.0)
        self.read.reset_mock()
        self.assertEqual(0, self.hook.reconcile([self.server()])['checked'])

    def test_errors_are_counted_not_raised(self):
        self.make_state()
        self.secrets.error = secrets_mod.SecretServiceUnavailable(
            instance_uuid=UUID, service='libvirt', reason='down')
        self.assertEqual(1, self.hook.reconcile([self.server()])['errors'])


class LoadTest(base.BaseTestCase):

    def test_entry_point(self):
        self.assertIn('swtpm_state', manager_mod.available_hooks())
        self.assertEqual(('compute',), swtpm_state.SwtpmStateHook.ROLES)
        for lifecycle in ('boot', 'reboot', 'power_on', 'resize_finish',
                          'resize_revert', 'live_migration_post_dest',
                          'live_migration_rollback', 'live_migration_post',
                          'live_migration_rollback_dest', 'delete'):
            self.assertTrue(swtpm_state.SwtpmStateHook.handles(lifecycle),
                            lifecycle)
        self.assertFalse(swtpm_state.SwtpmStateHook.handles('power_off'))
