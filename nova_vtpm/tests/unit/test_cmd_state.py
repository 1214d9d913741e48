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

"""``nova-vtpm state``, on a real journal and store; swtpm and Nova mocked.

The restore itself (real swtpm, real state) is in the functional tests.
"""

import io
import json
import os
import subprocess
import sys
from unittest import mock

import fixtures
from oslo_config import cfg
from oslotest import base

from nova_vtpm.cmd import cli
from nova_vtpm.cmd import state as state_cmd
from nova_vtpm import conf as nova_vtpm_conf
from nova_vtpm.hooks import swtpm_state
from nova_vtpm import journal as journal_mod
from nova_vtpm import secrets as secrets_mod
from nova_vtpm.swtpm import exception as swtpm_exc
from nova_vtpm.swtpm import state as state_mod
from nova_vtpm.tests.unit import test_swtpm_state as state_tests
from nova_vtpm.tests.unit import test_swtpm_state_hook as hook_tests

UUID = state_tests.UUID
OLD = hook_tests.OLD
NEW = hook_tests.NEW


class StateCommandTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.url = 'sqlite:///' + os.path.join(self.tmp, 'j.sqlite')
        self.root = os.path.join(self.tmp, 'swtpm')
        self.backups = os.path.join(self.tmp, 'backups')
        self.conf_file = os.path.join(self.tmp, 'nova.conf')
        with open(self.conf_file, 'w') as f:
            f.write('[nova_vtpm_agent]\nhost = compute1\n'
                    '[nova_vtpm_journal]\nconnection = %s\n'
                    '[nova_vtpm_state]\nstate_root = %s\nbackup_dir = %s\n'
                    'swtpm_user = root\nswtpm_group = root\n'
                    % (self.url, self.root, self.backups))
        self.conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(self.conf)
        self.conf([], default_config_files=[self.conf_file])
        self.journal = journal_mod.Journal(self.url)
        self.journal.upgrade()
        self.clients = mock.Mock(configured=True)
        self.nova = self.clients.nova.return_value
        self.useFixture(fixtures.MockPatch(
            'nova_vtpm.clients.openstack.Clients',
            return_value=self.clients))
        self.read = self.useFixture(fixtures.MockPatchObject(
            state_mod.StateDir, 'read_identity', return_value=OLD)).mock
        self.useFixture(fixtures.MockPatch(
            'nova_vtpm.swtpm.capabilities.host_facts',
            return_value=hook_tests.FACTS))
        self.secret = self.useFixture(fixtures.MockPatchObject(
            secrets_mod.SecretSource, 'get',
            return_value=hook_tests.SECRET)).mock
        self.sd = state_mod.StateDir(self.root, UUID)
        os.makedirs(self.sd.path, mode=0o700)
        with open(os.path.join(self.sd.path, 'tpm2-00.permall'), 'wb') as f:
            f.write(state_tests.blob())
        self.journal.put_instance(UUID, host='compute1', vtpm_version='2.0',
                                  secret_security='host')

    def run_cli(self, *argv):
        args = cli.build_parser().parse_args(list(argv))
        out, err = io.StringIO(), io.StringIO()
        with mock.patch.object(sys, 'stdout', out), \
                mock.patch.object(sys, 'stderr', err):
            rc = args.func(args, self.conf)
        return rc, out.getvalue(), err.getvalue()

    def test_backup_then_list(self):
        rc, out, err = self.run_cli('state', 'backup', UUID)
        self.assertEqual(0, rc, err)
        self.assertIn(OLD.fingerprint, out)
        self.secret.assert_called_with(UUID, 'host')
        rc, out, err = self.run_cli('state', 'backup', UUID)
        self.assertEqual(0, rc, err)
        rc, out, _ = self.run_cli('state', 'list', '--format', 'json')
        (record,) = json.loads(out)
        self.assertEqual(OLD.fingerprint, record['fingerprint'])
        # A manual backup is made even when nothing changed.
        self.assertEqual(2, record['backups'])
        rc, out, _ = self.run_cli('state', 'list')
        self.assertIn(OLD.fingerprint[:16], out)
        rc, out, _ = self.run_cli('state', 'list', '--instance', UUID)
        self.assertEqual(0, rc)
        self.assertIn('manual', out)
        self.assertIn('yes', out)
        rc, out, _ = self.run_cli('state', 'list', '--instance', UUID,
                                  '--format', 'json')
        self.assertEqual(2, len(json.loads(out)['backups']))

    def test_list_unknown_instance(self):
        rc, _, err = self.run_cli('state', 'list', '--instance', 'nope')
        self.assertEqual(2, rc)
        self.assertIn('nothing is known', err)

    def test_verify(self):
        # Nothing recorded yet: recorded now, but not "verified".
        rc, out, err = self.run_cli('state', 'verify', UUID)
        self.assertEqual(1, rc)
        self.assertIn('no identity was recorded', out)
        rc, out, err = self.run_cli('state', 'verify', UUID, '--format',
                                    'json')
        self.assertEqual(0, rc, err)
        self.assertEqual('ok', json.loads(out)['result'])
        # Verify makes no backup.
        self.assertEqual([], os.listdir(self.backups)
                         if os.path.exists(self.backups) else [])

    def test_verify_failures_say_what_swtpm_said(self):
        self.journal.put_identity(UUID, fingerprint=OLD.fingerprint,
                                  tpm_version='2.0', secret_security='host')
        self.read.return_value = NEW
        rc, out, err = self.run_cli('state', 'verify', UUID)
        self.assertEqual(1, rc)
        self.assertIn('not the expected TPM', err)
        self.read.side_effect = swtpm_exc.StateUnreadable(
            swtpm_exc.WRONG_KEY_OR_CORRUPT, self.sd.path, 'HMAC failed',
            detail='Verification of HMAC failed. Data integrity is '
                   'compromised', client_error='PTM_INIT: 0x101')
        rc, out, err = self.run_cli('state', 'verify', UUID)
        self.assertEqual(1, rc)
        self.assertIn('Verification of HMAC failed', err)
        self.assertIn('PTM_INIT: 0x101', err)
        # The CLI reports; the agent raises alarms.
        self.assertEqual([], self.journal.list_events(
            event_type=swtpm_state.EVENT_ALARM))

    def test_user_mode_needs_a_secret_file(self):
        self.secret.side_effect = secrets_mod.SecretUnavailable(
            'user', UUID, 'only the owner can read it')
        rc, out, err = self.run_cli('state', 'verify', UUID,
                                    '--secret-security', 'user')
        self.assertEqual(1, rc)
        self.assertIn('unverified', out)
        path = os.path.join(self.tmp, 'secret')
        with open(path, 'wb') as f:
            f.write(b'the-secret\n')
        rc, out, err = self.run_cli('state', 'verify', UUID,
                                    '--secret-security', 'user',
                                    '--secret-file', path)
        self.assertEqual(b'the-secret', self.read.call_args[0][0])

    def test_mode_and_version_from_nova(self):
        self.journal.put_instance(UUID, vtpm_version=None,
                                  secret_security=None)
        self.nova.servers.get.return_value = mock.Mock(flavor={
            'extra_specs': {'hw:tpm_version': '2.0',
                            'hw:tpm_secret_security': 'deployment'}})
        rc, out, err = self.run_cli('state', 'verify', UUID)
        self.secret.assert_called_with(UUID, 'deployment')


class RestoreCommandTest(StateCommandTest):

    def setUp(self):
        super().setUp()
        self.restore = self.useFixture(fixtures.MockPatchObject(
            swtpm_state.SwtpmStateHook, 'restore',
            return_value=(OLD, {'backup_id': 'b1', 'created_at': 'then'}))
        ).mock

    def server(self, status, host='compute1'):
        server = mock.Mock(status=status)
        setattr(server, 'OS-EXT-SRV-ATTR:host', host)
        self.nova.servers.get.return_value = server

    def test_refused_unless_shutoff(self):
        self.server('ACTIVE')
        rc, out, err = self.run_cli('state', 'restore', UUID)
        self.assertEqual(1, rc)
        self.assertIn('is ACTIVE, not SHUTOFF', err)
        self.assertFalse(self.restore.called)

    def test_refused_on_another_host(self):
        self.server('SHUTOFF', host='compute7')
        rc, out, err = self.run_cli('state', 'restore', UUID)
        self.assertEqual(1, rc)
        self.assertIn('on host compute7', err)
        self.assertFalse(self.restore.called)

    def test_refused_without_nova(self):
        self.clients.configured = False
        rc, out, err = self.run_cli('state', 'restore', UUID)
        self.assertEqual(2, rc)
        self.assertIn('--skip-nova-check', err)
        self.nova.servers.get.side_effect = Exception('Nova is down')
        self.clients.configured = True
        rc, out, err = self.run_cli('state', 'restore', UUID)
        self.assertEqual(2, rc)
        self.assertIn('Nova is down', err)
        self.assertFalse(self.restore.called)

    def test_restore(self):
        self.server('SHUTOFF')
        rc, out, err = self.run_cli('state', 'restore', UUID, '--backup',
                                    'b1', '--format', 'json')
        self.assertEqual(0, rc, err)
        self.restore.assert_called_once_with(UUID, '2.0', 'host',
                                             backup_id='b1', secret=None)
        self.assertEqual(OLD.fingerprint, json.loads(out)['fingerprint'])

    def test_skip_nova_check_warns_loudly(self):
        rc, out, err = self.run_cli('state', 'restore', UUID,
                                    '--skip-nova-check')
        self.assertEqual(0, rc, err)
        self.assertIn('WARNING', err)
        self.assertIn('NOT asking Nova', err)
        self.assertFalse(self.nova.servers.get.called)

    def test_restore_errors(self):
        self.server('SHUTOFF')
        failed = swtpm_exc.RestoreFailed(
            backup_id='b1', path=self.sd.path, reason='it does not open',
            original='The original state was left in place.')
        failed.cause = swtpm_exc.StateUnreadable(
            swtpm_exc.WRONG_KEY, self.sd.path, 'wrong key')
        self.restore.side_effect = failed
        rc, out, err = self.run_cli('state', 'restore', UUID)
        self.assertEqual(1, rc)
        self.assertIn('left in place', err)
        self.assertIn('cause:', err)
        self.restore.side_effect = swtpm_exc.StateInUse(path=self.sd.path)
        rc, out, err = self.run_cli('state', 'restore', UUID)
        self.assertEqual(1, rc)
        self.assertIn('in use by a running swtpm', err)


class CommandLineTest(base.BaseTestCase):

    def test_wired_into_nova_vtpm(self):
        tmp = self.useFixture(fixtures.TempDir()).path
        conf = os.path.join(tmp, 'nova.conf')
        with open(conf, 'w') as f:
            f.write('[nova_vtpm_journal]\nconnection = sqlite:///%s\n'
                    '[nova_vtpm_state]\nbackup_dir = %s\n'
                    % (os.path.join(tmp, 'j.sqlite'),
                       os.path.join(tmp, 'b')))
        journal_mod.Journal('sqlite:///%s' % os.path.join(
            tmp, 'j.sqlite')).upgrade()
        proc = subprocess.run(
            [sys.executable, '-m', 'nova_vtpm.cmd.cli', '--config-file',
             conf, 'state', 'list'], capture_output=True, text=True,
            timeout=60)
        self.assertEqual(0, proc.returncode, proc.stderr)
        self.assertIn('Instance', proc.stdout)
        self.assertIn('state', state_cmd.__name__)
