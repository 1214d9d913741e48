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

"""Alarm actions on Nova servers, with novaclient's manager mocked."""

from unittest import mock

from keystoneauth1 import exceptions as ks_exc
from novaclient import api_versions
from novaclient import exceptions as nova_exc
from oslotest import base

from nova_vtpm import actions

UUID = '0e9c8a1d-5f0b-4c1e-9d2a-6b7c8d9e0f10'


class _ActionsBase(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.clients = mock.Mock(configured=True)
        self.nova = self.clients.nova.return_value
        self.nova.api_version = api_versions.APIVersion('2.86')
        self.servers = self.nova.servers

    def apply(self, action, reason='the vTPM is gone', **kwargs):
        return actions.apply_action(self.clients, UUID, action, reason,
                                    **kwargs)


class ActionsTest(_ActionsBase):

    def test_none(self):
        self.assertEqual(actions.SKIPPED, self.apply('none'))
        self.assertFalse(self.clients.nova.called)

    def test_unknown_and_bad_arguments(self):
        self.assertRaises(ValueError, self.apply, 'reboot')
        self.assertRaises(ValueError, self.apply, 'tag')

    def test_lock_with_reason(self):
        self.assertEqual(actions.APPLIED, self.apply('lock'))
        self.servers.lock.assert_called_once_with(
            UUID, reason='nova-vtpm: the vTPM is gone')

    def test_lock_reason_is_one_line_within_nova_limit(self):
        self.apply('lock', reason='x\n' * 300)
        reason = self.servers.lock.call_args[1]['reason']
        self.assertEqual(255, len(reason))
        self.assertNotIn('\n', reason)
        self.assertTrue(reason.endswith('...'))

    def test_lock_before_2_73(self):
        self.nova.api_version = api_versions.APIVersion('2.60')
        self.apply('lock')
        self.servers.lock.assert_called_once_with(UUID)

    def test_stop_pause_tag(self):
        self.apply('stop')
        self.servers.stop.assert_called_once_with(UUID)
        self.apply('pause')
        self.servers.pause.assert_called_once_with(UUID)
        self.apply('tag', tag='vtpm-state-alarm')
        self.servers.add_tag.assert_called_once_with(UUID,
                                                     'vtpm-state-alarm')

    def test_tag_needs_2_26(self):
        self.nova.api_version = api_versions.APIVersion('2.1')
        exc = self.assertRaises(actions.ActionFailed, self.apply, 'tag',
                                tag='t')
        self.assertIn('2.26', str(exc))
        self.assertFalse(exc.transient)

    def test_already_stopped(self):
        self.servers.stop.side_effect = nova_exc.Conflict(409)
        self.servers.get.return_value = mock.Mock(status='SHUTOFF')
        self.assertEqual(actions.ALREADY, self.apply('stop'))

    def test_conflict_while_busy_is_transient(self):
        self.servers.stop.side_effect = nova_exc.Conflict(409)
        self.servers.get.return_value = mock.Mock(status='ACTIVE')
        exc = self.assertRaises(actions.ActionFailed, self.apply, 'stop')
        self.assertTrue(exc.transient)

    def test_server_gone(self):
        self.servers.lock.side_effect = nova_exc.NotFound(404)
        self.assertEqual(actions.GONE, self.apply('lock'))

    def test_errors(self):
        self.servers.lock.side_effect = nova_exc.ClientException(500)
        self.assertTrue(self.assertRaises(
            actions.ActionFailed, self.apply, 'lock').transient)
        self.servers.lock.side_effect = nova_exc.Forbidden(403)
        self.assertFalse(self.assertRaises(
            actions.ActionFailed, self.apply, 'lock').transient)
        self.servers.lock.side_effect = ks_exc.ConnectFailure('refused')
        self.assertTrue(self.assertRaises(
            actions.ActionFailed, self.apply, 'lock').transient)
        self.servers.lock.side_effect = ks_exc.Unauthorized('bad password')
        self.assertFalse(self.assertRaises(
            actions.ActionFailed, self.apply, 'lock').transient)

    def test_no_credentials(self):
        self.clients.configured = False
        exc = self.assertRaises(actions.ActionFailed, self.apply, 'lock')
        self.assertIn('[nova_vtpm_service]', str(exc))
        self.assertFalse(exc.transient)


class ClearActionTest(_ActionsBase):

    def test_untag(self):
        self.assertEqual(actions.APPLIED, actions.clear_action(
            self.clients, UUID, 'tag', tag='t'))
        self.servers.delete_tag.assert_called_once_with(UUID, 't')

    def test_unlock_own_lock_only(self):
        self.servers.get.return_value = mock.Mock(
            locked=True, locked_reason=actions.lock_reason('x'))
        self.assertEqual(actions.APPLIED, actions.clear_action(
            self.clients, UUID, 'lock'))
        self.servers.unlock.assert_called_once_with(UUID)
        self.servers.unlock.reset_mock()
        self.servers.get.return_value = mock.Mock(
            locked=True, locked_reason='ops: disk swap')
        self.assertEqual(actions.SKIPPED, actions.clear_action(
            self.clients, UUID, 'lock'))
        self.servers.get.return_value = mock.Mock(locked=False,
                                                  locked_reason=None)
        self.assertEqual(actions.SKIPPED, actions.clear_action(
            self.clients, UUID, 'lock'))
        self.assertFalse(self.servers.unlock.called)

    def test_lock_marker(self):
        self.servers.get.return_value = mock.Mock(
            locked=True, locked_reason=actions.lock_reason('Keylime: x'))
        self.assertEqual(actions.SKIPPED, actions.clear_action(
            self.clients, UUID, 'lock', lock_marker='vTPM state alarm'))
        self.servers.get.return_value = mock.Mock(
            locked=True, locked_reason=actions.lock_reason(
                'vTPM state alarm (missing_dir)'))
        self.assertEqual(actions.APPLIED, actions.clear_action(
            self.clients, UUID, 'lock', lock_marker='vTPM state alarm'))

    def test_stop_is_not_undone(self):
        self.assertEqual(actions.SKIPPED, actions.clear_action(
            self.clients, UUID, 'stop'))
        self.assertFalse(self.servers.start.called)

    def test_gone(self):
        self.servers.get.side_effect = nova_exc.NotFound(404)
        self.assertEqual(actions.GONE, actions.clear_action(
            self.clients, UUID, 'lock'))
