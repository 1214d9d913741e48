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

"""The swtpm_state hook on REAL vTPM states, driven by InstanceEvents.

* Host mode: a real, private libvirtd runs a q35 TCG domain with a tpm-crb
  emulator and a libvirt secret of usage type ``vtpm`` named by the
  instance uuid, defined as Nova defines it in host mode (not ephemeral,
  not private). libvirt makes the state; the hook finds the secret with
  ``virsh``. The scenario: boot (identity recorded, backup), ``virsh
  save`` + wipe + post_dest (alarm: missing), ``virsh restore`` (the
  migration stream brings the TPM back: the alarm clears), wipe + cold
  start (libvirt re-manufactures a TPM with the same vmid: identity
  changed), ``nova-vtpm state restore`` (the original EK certificate is
  back byte for byte), start on the restored state, and the leftovers of a
  departed instance cleaned up.
* User mode on a state made by ``swtpm_setup`` with libvirt's exact
  arguments: recorded what could be recorded; an emptied directory is a
  fresh TPM: alarm.
* Deployment mode with a real Keystone and Barbican: the secret Nova's
  service user stored is read by nova-vtpm's service user; a service user
  of another project is told clearly that it cannot see it.

Nova is not the component under test: the Compute API client is a mock
whose calls (lock, unlock) are asserted.
"""

import base64
import io
import json
import os
import shutil
import stat
import sys
import time
from unittest import mock
import uuid

import fixtures
from novaclient import api_versions
from oslo_config import cfg
from oslotest import base
from testtools import content

from nova_vtpm import actions
from nova_vtpm.agent import events
from nova_vtpm.cmd import cli
from nova_vtpm import conf as nova_vtpm_conf
from nova_vtpm.hooks import base as hooks_base
from nova_vtpm.hooks import manager as manager_mod
from nova_vtpm.hooks import swtpm_state
from nova_vtpm import journal as journal_mod
from nova_vtpm.swtpm import state as state_mod
from nova_vtpm.tests.functional import libvirt_fixture
from nova_vtpm.tests.functional import test_swtpm_state as swtpm_tests
from nova_vtpm import tpm

HOST = 'compute1'
_OFFLINE_TOOLS = ('swtpm_ioctl', 'tpm2_startup', 'tpm2_nvread')


class GuardTestBase(base.BaseTestCase):
    """A compute agent's swtpm_state hook on a real journal and store."""

    def setUp(self):
        super().setUp()
        missing = [t for t in swtpm_tests.TOOLS if not shutil.which(t)]
        if missing:
            self.skipTest('needs %s' % ', '.join(missing))
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.journal_url = 'sqlite:///' + os.path.join(self.tmp, 'j.sqlite')
        self.journal = journal_mod.Journal(self.journal_url)
        self.journal.upgrade()
        self.clients = mock.Mock(configured=True)
        self.nova = self.clients.nova.return_value
        self.nova.api_version = api_versions.APIVersion('2.86')
        self.timings = {}
        self.addCleanup(lambda: self.addDetail(
            'timings-ms', content.text_content(json.dumps(
                {k: round(v * 1000, 1) for k, v in self.timings.items()},
                indent=1))))
        # Every swtpm the library starts must be gone by the end.
        swtpm_tests.SwtpmStateTestCase._watch_swtpm_pids(self)

    def make_conf(self, state_root, extra=''):
        path = os.path.join(self.tmp, 'nova.conf')
        with open(path, 'w') as f:
            f.write('[nova_vtpm_agent]\nhost = %s\nrole = compute\n'
                    '[nova_vtpm_journal]\nconnection = %s\n'
                    '[nova_vtpm_state]\nstate_root = %s\nbackup_dir = %s\n'
                    'alarm_action = lock\ntmp_dir = %s\n%s'
                    % (HOST, self.journal_url, state_root,
                       os.path.join(self.tmp, 'backups'), self.tmp, extra))
        self.conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(self.conf)
        self.conf([], default_config_files=[path])
        return self.conf

    def flags(self, group='nova_vtpm_state', **kwargs):
        for key, value in kwargs.items():
            self.conf.set_override(key, value, group)

    def make_hook(self, clients=None):
        context = manager_mod.HookContext(self.conf, self.journal, HOST,
                                          'compute', clients or self.clients)
        return swtpm_state.SwtpmStateHook(context)

    @staticmethod
    def event(lifecycle, uuid_, mode, message_id, host=HOST,
              publisher=None):
        ev = events.InstanceEvent(
            event_type=hooks_base.LIFECYCLE_EVENTS[lifecycle],
            lifecycle=lifecycle, instance_uuid=uuid_, host=host,
            publisher_id=publisher or 'nova-compute:%s' % host,
            message_id=message_id, timestamp=time.time())
        ev.request = tpm.Resolution(vtpm=tpm.VTPM('2.0', 'tpm-crb', mode))
        return ev

    def on(self, hook, lifecycle, uuid_, mode, message_id, **kwargs):
        """Offer an event to the hook the way the agent's manager does."""
        manager = manager_mod.HookManager(
            hook.context, [], extension_manager=[])
        manager.hooks = {hook.NAME: hook}
        started = time.monotonic()
        outcome = manager.run(hook.NAME, self.event(
            lifecycle, uuid_, mode, message_id, **kwargs), 0)
        self.timings.setdefault('%s-%s' % (lifecycle, message_id),
                                time.monotonic() - started)
        self.assertEqual('done', outcome.state, outcome.reason)
        return outcome

    def alarms(self, uuid_):
        return self.journal.list_events(
            event_type=swtpm_state.EVENT_ALARM, instance_uuid=uuid_,
            newest_first=False)

    def cleared(self, uuid_):
        return self.journal.list_events(
            event_type=swtpm_state.EVENT_ALARM_CLEARED, instance_uuid=uuid_,
            newest_first=False)

    def run_cli(self, *argv):
        args = cli.build_parser().parse_args(list(argv))
        out, err = io.StringIO(), io.StringIO()
        with mock.patch('nova_vtpm.clients.openstack.Clients',
                        return_value=self.clients), \
                mock.patch.object(sys, 'stdout', out), \
                mock.patch.object(sys, 'stderr', err):
            started = time.monotonic()
            rc = args.func(args, self.conf)
            self.timings['cli-%s' % argv[1]] = time.monotonic() - started
        return rc, out.getvalue(), err.getvalue()


class HostModeLibvirtTest(GuardTestBase):
    """Host mode: libvirt makes the state and holds the secret."""

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest('needs root (libvirtd, mount namespace)')
        missing = libvirt_fixture.missing_binaries()
        if missing:
            self.skipTest('missing: %s' % ', '.join(missing))
        self.lv = libvirt_fixture.Libvirt()
        self.lv.setUp()
        self.addCleanup(self.lv.cleanUp)
        self.make_conf(self.lv.host_path(libvirt_fixture.SWTPM_STORAGE_DIR),
                       'libvirt_uri = %s\nswtpm_user = %s\nswtpm_group = %s\n'
                       % (self.lv.uri, self.lv.swtpm_user,
                          self.lv.swtpm_group))
        self.hook = self.make_hook()
        self.uuid = str(uuid.uuid4())
        self.secret_uuid = str(uuid.uuid4())
        # Nova: base64 of 384 random bytes; host mode: not ephemeral, not
        # private, usage name = the instance uuid.
        self.secret = base64.b64encode(os.urandom(384))
        self.lv.define_vtpm_secret(self.secret_uuid, self.secret,
                                   usage_name=self.uuid, private=False)
        self.name = 'instance-%s' % self.uuid[:8]
        self.lv.define_vtpm_domain(self.name, self.uuid, self.secret_uuid)
        self.tpm2 = self.lv.swtpm_tpm2_dir(self.uuid)

    def ek_cert(self):
        """The EK certificate in the state, read offline (DER).

        With tpm2-tools when installed (independent of the library under
        test), else with the library.
        """
        permall = os.path.join(self.tpm2, 'tpm2-00.permall')
        deadline = time.monotonic() + 10
        while not os.path.exists(permall) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not libvirt_fixture.missing_binaries(_OFFLINE_TOOLS):
            from nova_vtpm.tests.functional import test_libvirt_fixture
            return test_libvirt_fixture.read_ek_cert(
                self.tpm2, self.secret, self.lv.work)
        return state_mod.StateDir.at_path(self.tpm2).read_identity(
            self.secret, tmp_dir=self.tmp).ek_cert_der

    def test_boot_wipe_recreate_restore(self):
        lv, uuid_ = self.lv, self.uuid
        lv.start(self.name)
        original = self.ek_cert()

        # Boot: the identity is recorded at first sight, and backed up.
        self.on(self.hook, 'boot', uuid_, 'host', 'm-boot')
        record = self.journal.get_identity(uuid_)
        fingerprint = swtpm_tests.sha(original)
        self.assertEqual(fingerprint, record['fingerprint'])
        self.assertEqual('ok', record['last_result'])
        self.assertIn('CN=%s:%s' % (self.name, uuid_),
                      record['ek_cert_subject'])
        (manifest,) = self.hook.store.list(uuid_)
        self.assertEqual(fingerprint, manifest['fingerprint'])
        self.assertTrue(manifest['identity']['read_from_these_files'])
        self.assertEqual([], self.alarms(uuid_))

        # A migration that lost the state: saved, wiped, post_dest.
        saved = lv.save(self.name)
        shutil.rmtree(lv.swtpm_state_dir(uuid_))
        self.on(self.hook, 'live_migration_post_dest', uuid_, 'host',
                'm-post-dest-1')
        (alarm,) = self.alarms(uuid_)
        self.assertEqual('failed', alarm['state'])
        self.assertIn('(missing_dir)', alarm['reason'])
        self.assertIn('Could not open lockfile', alarm['reason'])
        self.assertIn('nova-vtpm state restore %s' % uuid_, alarm['reason'])
        self.nova.servers.lock.assert_called_once_with(uuid_,
                                                       reason=mock.ANY)
        lock_reason = self.nova.servers.lock.call_args[1]['reason']
        self.assertTrue(lock_reason.startswith(actions.LOCK_REASON_PREFIX))
        # The redelivered notification records no second alarm (the
        # action is applied again: it is idempotent).
        self.on(self.hook, 'live_migration_post_dest', uuid_, 'host',
                'm-post-dest-1')
        self.assertEqual(1, len(self.alarms(uuid_)))
        self.assertEqual(2, self.nova.servers.lock.call_count)

        # The migration stream carried the TPM: restored, it is the same
        # TPM, and the alarm clears (the lock is nova-vtpm's: undone).
        lv.restore(saved)
        self.nova.servers.get.return_value = mock.Mock(
            locked=True, locked_reason=lock_reason, status='ACTIVE')
        self.on(self.hook, 'live_migration_post_dest', uuid_, 'host',
                'm-post-dest-2')
        self.assertEqual(original, self.ek_cert())
        self.assertEqual(1, len(self.cleared(uuid_)))
        self.nova.servers.unlock.assert_called_once_with(uuid_)
        self.assertEqual('ok', self.journal.get_identity(uuid_)[
            'last_result'])
        # swtpm rewrote the state it loaded: a backup of that, too.
        backups = len(self.hook.store.list(uuid_))
        self.assertEqual(2, backups)

        # Lost state and a cold start: libvirt silently makes a NEW TPM
        # with the same vmid. The guard sees through it.
        lv.destroy(self.name)
        shutil.rmtree(lv.swtpm_state_dir(uuid_))
        lv.start(self.name)
        new = self.ek_cert()
        self.assertNotEqual(original, new)
        self.on(self.hook, 'power_on', uuid_, 'host', 'm-power-on-1')
        alarm = self.alarms(uuid_)[-1]
        self.assertIn('is not the expected TPM', alarm['reason'])
        self.assertIn(fingerprint, alarm['reason'])
        self.assertIn(swtpm_tests.sha(new), alarm['reason'])
        payload = json.loads(self.journal.get_event(alarm['id'])['payload'])
        self.assertEqual('identity_changed', payload['kind'])
        self.assertEqual(3, self.nova.servers.lock.call_count)
        # No backup of the wrong TPM.
        self.assertEqual(backups, len(self.hook.store.list(uuid_)))

        # The way out: stop the server, restore from the backup.
        server = mock.Mock(status='ACTIVE', locked=True,
                           locked_reason=lock_reason)
        setattr(server, 'OS-EXT-SRV-ATTR:host', HOST)
        self.nova.servers.get.return_value = server
        rc, out, err = self.run_cli('state', 'restore', uuid_)
        self.assertEqual(1, rc)
        self.assertIn('not SHUTOFF', err)
        lv.destroy(self.name)
        server.status = 'SHUTOFF'
        rc, out, err = self.run_cli('state', 'restore', uuid_, '--format',
                                    'json')
        self.assertEqual(0, rc, err)
        self.assertEqual(fingerprint, json.loads(out)['fingerprint'])
        # Byte for byte, read independently of the guard's library.
        self.assertEqual(original, self.ek_cert())
        st = os.stat(self.tpm2)
        self.assertEqual((lv.swtpm_uid, lv.swtpm_gid, 0o700),
                         (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)))
        for name in os.listdir(self.tpm2):
            st = os.stat(os.path.join(self.tpm2, name))
            self.assertEqual((lv.swtpm_uid, lv.swtpm_gid, 0o600),
                             (st.st_uid, st.st_gid,
                              stat.S_IMODE(st.st_mode)), name)
        # The restore cleared the alarm, and verify agrees.
        self.assertEqual(2, len(self.cleared(uuid_)))
        self.assertEqual(2, self.nova.servers.unlock.call_count)
        rc, out, err = self.run_cli('state', 'verify', uuid_)
        self.assertEqual(0, rc, err)

        # libvirt starts the guest on the restored state as it is.
        lv.start(self.name)
        self.on(self.hook, 'power_on', uuid_, 'host', 'm-power-on-2')
        self.assertEqual(original, self.ek_cert())
        self.assertEqual(2, len(self.alarms(uuid_)))
        self.assertEqual('ok', self.journal.get_identity(uuid_)[
            'last_result'])

    def test_leftovers_of_a_departed_instance(self):
        lv, uuid_ = self.lv, self.uuid
        lv.start(self.name)
        self.on(self.hook, 'boot', uuid_, 'host', 'm-boot')
        # Still defined and running here: reported, never removed.
        self.flags(cleanup_source=True)
        self.on(self.hook, 'live_migration_post', uuid_, 'host', 'm-post-1')
        (report,) = self.journal.list_events(
            event_type=swtpm_state.EVENT_LEFTOVER)
        self.assertIn('is defined on this host', report['reason'])
        self.assertTrue(os.path.exists(self.tpm2))
        # Gone from this host the way a migration leaves it, but with the
        # state and the secret left behind: both removed.
        lv.destroy(self.name)
        lv.undefine(self.name, keep_tpm=True)
        self.on(self.hook, 'live_migration_post', uuid_, 'host', 'm-post-2')
        report = self.journal.list_events(
            event_type=swtpm_state.EVENT_LEFTOVER)[0]
        self.assertIn('libvirt vtpm secret %s' % self.secret_uuid,
                      report['reason'])
        self.assertIn('Removed:', report['reason'])
        self.assertFalse(os.path.exists(lv.swtpm_state_dir(uuid_)))
        self.assertNotIn(self.secret_uuid,
                         lv.virsh('secret-list').stdout)
        lv.secrets.remove(self.secret_uuid)   # not the fixture's to undo
        # Nothing left: nothing reported.
        self.on(self.hook, 'live_migration_post', uuid_, 'host', 'm-post-3')
        self.assertEqual(2, len(self.journal.list_events(
            event_type=swtpm_state.EVENT_LEFTOVER)))


class SwtpmSetupStateTestBase(GuardTestBase):
    """A state made by swtpm_setup exactly as libvirt makes it."""

    def setUp(self):
        super().setUp()
        self.template = swtpm_tests.template()
        self.root = os.path.join(self.tmp, 'swtpm')
        self.uuid = str(uuid.uuid4())
        self.sd = state_mod.StateDir(self.root, self.uuid)

    def copy_template(self):
        shutil.copytree(self.template['path'], self.sd.path)
        owner = swtpm_tests.state_owner()
        if owner:
            for path in [self.sd.path] + [os.path.join(self.sd.path, n)
                                          for n in os.listdir(self.sd.path)]:
                os.chown(path, *owner)


class UserModeTest(SwtpmSetupStateTestBase):

    def test_recorded_what_could_be_recorded_then_empty_is_an_alarm(self):
        self.make_conf(self.root)
        hook = self.make_hook()
        self.copy_template()
        with open(os.path.join(self.sd.path, 'tpm2-00.permall'), 'rb') as f:
            permall = f.read()
        self.on(hook, 'boot', self.uuid, 'user', 'm-boot')
        record = self.journal.get_identity(self.uuid)
        self.assertEqual('unverified', record['last_result'])
        self.assertIsNone(record['fingerprint'])
        self.assertEqual(len(permall), record['permall_size'])
        self.assertEqual(swtpm_tests.sha(permall), record['permall_sha256'])
        self.assertIn('identity not verifiable in user mode',
                      record['last_detail'])
        (manifest,) = hook.store.list(self.uuid)
        self.assertEqual(swtpm_tests.sha(permall),
                         manifest['files'][0]['sha256'])

        # Emptied: swtpm would start a fresh TPM. No key needed to see it.
        for name in os.listdir(self.sd.path):
            os.unlink(os.path.join(self.sd.path, name))
        self.on(hook, 'reboot', self.uuid, 'user', 'm-reboot')
        (alarm,) = self.alarms(self.uuid)
        self.assertIn('(empty_state)', alarm['reason'])
        self.assertIn('no state file', alarm['reason'])
        self.nova.servers.lock.assert_called_once_with(self.uuid,
                                                       reason=mock.ANY)


class DeploymentModeBarbicanTest(SwtpmSetupStateTestBase):
    """Deployment mode: the secret is read from a real Barbican."""

    def setUp(self):
        super().setUp()
        from nova_vtpm.tests.functional import openstack_fixture
        from nova_vtpm.tests.functional import test_openstack_fixture
        self.store_vtpm_secret = test_openstack_fixture.store_vtpm_secret
        os_fixture = openstack_fixture.KeystoneBarbican(install=False)
        try:
            os_fixture.setUp()
        except openstack_fixture.OpenStackError as e:
            if 'no Keystone/Barbican virtualenv' in str(e):
                self.skipTest(str(e))
            raise
        self.addCleanup(os_fixture.cleanUp)
        self.os = os_fixture

    def service_conf(self, user):
        return ('[nova_vtpm_service]\nauth_type = password\n'
                'auth_url = %s\nusername = %s\npassword = %s\n'
                'project_name = %s\nuser_domain_id = default\n'
                'project_domain_id = default\n' % (
                    self.os.keystone_url, user['name'], user['password'],
                    user['project_name']))

    def with_service_user(self, user):
        """The configuration, with ``user`` as nova-vtpm's service user."""
        conf = self.make_conf(self.root)
        service = os.path.join(self.tmp, 'service.conf')
        with open(service, 'w') as f:
            f.write(self.service_conf(user))
        conf([], default_config_files=[os.path.join(self.tmp, 'nova.conf'),
                                       service])
        return conf

    def test_the_service_user_reads_novas_secret(self):
        from nova_vtpm.clients import openstack
        ks = self.os
        # Nova's service user stores deployment-mode secrets in its own
        # project; nova-vtpm's service user reads them as a member of it.
        nova_user = ks.create_user(roles=('member',))
        ref, passphrase = self.store_vtpm_secret(
            ks.make_session(nova_user), ks.barbican_url, self.uuid)
        xdg = self.template['xdg']
        os.makedirs(os.path.dirname(self.sd.path))
        swtpm_tests.swtpm_setup(xdg, self.sd.path, secret=passphrase,
                                vmid='instance-1:%s' % self.uuid)
        reader = ks.create_user(project=nova_user['project_id'],
                                roles=('member',))
        conf = self.with_service_user(reader)
        hook = self.make_hook(clients=openstack.Clients(conf))
        log = self.useFixture(fixtures.FakeLogger(level='DEBUG'))
        self.on(hook, 'boot', self.uuid, 'deployment', 'm-boot')
        record = self.journal.get_identity(self.uuid)
        self.assertEqual('ok', record['last_result'], record['last_detail'])
        expected = self.sd.read_identity(passphrase, tmp_dir=self.tmp)
        self.assertEqual(expected.fingerprint, record['fingerprint'])
        self.assertEqual(1, len(hook.store.list(self.uuid)))
        # The secret never reached the log, not even keystoneauth's.
        self.assertNotIn(passphrase.decode(), log.output)

        # A service user of another project cannot see it: said clearly,
        # and no alarm (the state is fine, it just cannot be verified).
        stranger = ks.create_user(roles=('member',))
        conf = self.with_service_user(stranger)
        hook = self.make_hook(clients=openstack.Clients(conf))
        self.on(hook, 'reboot', self.uuid, 'deployment', 'm-reboot')
        record = self.journal.get_identity(self.uuid)
        self.assertEqual('unverified', record['last_result'])
        self.assertIn('Barbican has no secret named', record['last_detail'])
        self.assertIn('identity not verifiable in deployment mode',
                      record['last_detail'])
        self.assertEqual([], self.alarms(self.uuid))
