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

"""The keylime hook with Keylime's REST APIs mocked (requests-mock) and
Nova mocked; EK certificates from throw-away CAs."""

import json
import os
import socket
import threading
import time
from unittest import mock
import uuid as uuidlib

import fixtures
from novaclient import api_versions
from novaclient import exceptions as nova_exc
from oslo_config import cfg
from oslotest import base
from requests_mock.contrib import fixture as rm_fixture

from nova_vtpm.agent import events
from nova_vtpm import conf as nova_vtpm_conf
from nova_vtpm.hooks import base as hooks_base
from nova_vtpm.hooks import keylime as keylime_hook
from nova_vtpm.hooks import manager as manager_mod
from nova_vtpm import journal as journal_mod
from nova_vtpm.keylime import client
from nova_vtpm.tests.unit import test_keylime_ek as ek_helpers
from nova_vtpm import tpm

REG = 'https://registrar.example:8891'
VER = 'https://verifier.example:8881'
VERSION = {'results': {'current_version': '2.6',
                       'supported_versions': ['2.1', '2.6']}}
ZERO = '0' * 64
POLICIES = {'pcr23': {'23': [ZERO]}}
REQUIRED = {'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb',
            'keylime:attestation': 'required'}
OPTIONAL = dict(REQUIRED, **{'keylime:attestation': 'optional'})
T0 = 1_800_000_000.0


def ok(results=None, status=200):
    return {'json': {'code': status, 'status': 'Success',
                     'results': results if results is not None else {}},
            'status_code': status}


def err(status, message='nope'):
    return {'json': {'code': status, 'status': message, 'results': {}},
            'status_code': status}


class Clock:
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


class _Base(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.mock = self.useFixture(rm_fixture.Fixture())
        self.mock.get(REG + '/version', json=VERSION)
        self.mock.get(VER + '/version', json=VERSION)
        self.ca = ek_helpers.HostCA()
        self.trust_dir = os.path.join(self.tmp, 'trust')
        os.makedirs(self.trust_dir)
        self.ca.install(self.trust_dir, 'compute1')
        policy_file = os.path.join(self.tmp, 'policies.json')
        with open(policy_file, 'w') as f:
            json.dump(POLICIES, f)
        self.conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(self.conf)
        self.conf([], default_config_files=[])
        self.flags(registrar_url=REG, verifier_url=VER, retries=0,
                   ek_trust_dir=self.trust_dir, failure_action='lock',
                   registration_deadline=600)
        self.flags(group='nova_vtpm_attestation',
                   tpm_policy_file=policy_file)
        self.journal = journal_mod.Journal('sqlite://')
        self.journal.upgrade()
        self.clients = mock.Mock(configured=True)
        self.nova = self.clients.nova.return_value
        self.nova.api_version = api_versions.APIVersion('2.86')
        self.clock = Clock()
        self.hook = self.make_hook()
        self.uuid = str(uuidlib.uuid4())

    def flags(self, group='nova_vtpm_keylime', **kwargs):
        for key, value in kwargs.items():
            self.conf.set_override(key, value, group)

    def make_hook(self):
        context = manager_mod.HookContext(self.conf, self.journal,
                                          'controller', 'controller',
                                          self.clients)
        sleep = []
        registrar = client.RegistrarClient(REG, retries=0,
                                           sleep=sleep.append)
        verifier = client.VerifierClient(VER, retries=0, sleep=sleep.append)
        return keylime_hook.KeylimeHook(context, registrar=registrar,
                                        verifier=verifier, clock=self.clock)

    def event(self, lifecycle='boot', specs=REQUIRED, uuid=None,
              timestamp=T0, host='compute1'):
        ev = events.InstanceEvent(
            event_type=hooks_base.LIFECYCLE_EVENTS[lifecycle],
            lifecycle=lifecycle, instance_uuid=uuid or self.uuid, host=host,
            project_id='p1', flavor_name='vtpm.attested', flavor_specs=specs,
            timestamp=timestamp)
        ev.request = tpm.resolve(specs, {}, tpm_policies=POLICIES)
        return ev

    def server(self, specs=REQUIRED, uuid=None, vm_state='active',
               task_state=None):
        s = events.ServerView(uuid=uuid or self.uuid, host='compute1',
                              vm_state=vm_state, task_state=task_state,
                              project_id='p1', flavor_name='vtpm.attested',
                              flavor_specs=specs, image_uuid=None)
        s.request = tpm.resolve(specs, {}, tpm_policies=POLICIES)
        return s

    def registered(self, uuid=None, cn=None, key=ek_helpers._RSA_EK,
                   ca=None, **changes):
        uuid = uuid or self.uuid
        cert = (ca or self.ca).ek_cert(cn or 'instance-00000001:%s' % uuid,
                                       key=key)
        results = {'agent_id': uuid,
                   'ek_tpm': ek_helpers.b64(ek_helpers.tpm2b_rsa(key)),
                   'ekcert': ek_helpers.b64(ek_helpers.der(cert)),
                   'aik_tpm': 'QUlL', 'mtls_cert': 'MTLS', 'ip': '10.0.0.5',
                   'port': 9002, 'regcount': 1}
        results.update(changes)
        self.mock.get(REG + '/v2.6/agents/' + uuid, **ok(results))
        return results

    def not_registered(self, uuid=None):
        self.mock.get(REG + '/v2.6/agents/' + (uuid or self.uuid),
                      **err(404, 'not found'))

    def verifier_add(self, uuid=None, **response):
        return self.mock.post(VER + '/v2.6/agents/' + (uuid or self.uuid),
                              **(response or ok()))

    def verifier_status(self, state, status='PASS', uuid=None, count=3,
                        event_id=None):
        self.mock.get(VER + '/v2.6/agents/' + (uuid or self.uuid), **ok({
            'operational_state': state, 'attestation_status': status,
            'attestation_count': count,
            'last_successful_attestation': int(T0), 'last_event_id':
            event_id}))

    def row(self, uuid=None):
        return self.journal.get_attestation(uuid or self.uuid)

    def requests(self, method, prefix):
        return [r for r in self.mock.request_history
                if r.method == method and r.url.startswith(prefix)]


class BootTest(_Base):

    def test_not_attested_does_nothing(self):
        self.hook.on_boot(self.event(specs={'hw:tpm_version': '2.0'}))
        self.assertEqual([], self.mock.request_history)
        self.assertIsNone(self.row())

    def test_waits_for_the_registration_without_using_the_budget(self):
        self.not_registered()
        self.clock.now = T0 + 10
        e = self.assertRaises(hooks_base.RetryLater, self.hook.on_boot,
                              self.event())
        self.assertTrue(e.waiting)
        self.assertEqual(0.5, e.delay)
        self.assertIn('has not registered yet (10 s of 600 s)', str(e))
        self.assertEqual(('waiting', T0), (self.row()['state'],
                                           self.row()['waiting_since']))
        # Later, the delay grows (elapsed / 60), up to the maximum.
        self.clock.now = T0 + 120
        e = self.assertRaises(hooks_base.RetryLater, self.hook.on_boot,
                              self.event())
        self.assertEqual(2.0, e.delay)
        self.clock.now = T0 + 540
        e = self.assertRaises(hooks_base.RetryLater, self.hook.on_boot,
                              self.event())
        self.assertEqual(9.0, e.delay)       # (max 10)
        self.clock.now = T0 + 595
        e = self.assertRaises(hooks_base.RetryLater, self.hook.on_boot,
                              self.event())
        self.assertEqual(5.0, e.delay)       # what is left of the deadline
        self.assertFalse(self.requests('POST', VER))

    def test_manager_does_not_count_waits(self):
        self.not_registered()
        manager = manager_mod.HookManager(self.hook.context, [],
                                          extension_manager=[],
                                          max_attempts=3)
        manager.hooks = {'keylime': self.hook}
        outcome = manager.run('keylime', self.event(), attempts=50)
        self.assertEqual('retry', outcome.state)

    def test_required_never_registered_gets_the_action_once(self):
        self.not_registered()
        self.clock.now = T0 + 601
        e = self.assertRaises(hooks_base.PermanentFailure, self.hook.on_boot,
                              self.event())
        self.assertIn('did not register', str(e))
        self.nova.servers.lock.assert_called_once_with(
            self.uuid, reason=mock.ANY)
        reason = self.nova.servers.lock.call_args[1]['reason']
        self.assertTrue(reason.startswith(
            'nova-vtpm: Keylime attestation: The guest'), reason)
        row = self.row()
        self.assertEqual(('failed', 'lock', 'unregistered'),
                         (row['state'], row['action'], row['failure_key']))
        failed = self.journal.list_events(
            event_type=keylime_hook.EVENT_FAILED)
        self.assertEqual(1, len(failed))
        # Again (a redelivery, a reconciliation): no second action.
        self.assertRaises(hooks_base.PermanentFailure, self.hook.on_boot,
                          self.event())
        self.assertEqual(1, self.nova.servers.lock.call_count)
        self.assertEqual(1, len(self.journal.list_events(
            event_type=keylime_hook.EVENT_FAILED)))

    def test_tag_action(self):
        self.flags(failure_action='tag')
        self.not_registered()
        self.clock.now = T0 + 601
        self.assertRaises(hooks_base.PermanentFailure, self.hook.on_boot,
                          self.event())
        self.nova.servers.add_tag.assert_called_once_with(
            self.uuid, keylime_hook.ATTESTATION_TAG)

    def test_transient_action_failure_is_retried(self):
        self.not_registered()
        self.clock.now = T0 + 601
        self.nova.servers.lock.side_effect = nova_exc.ClientException(503)
        e = self.assertRaises(hooks_base.RetryLater, self.hook.on_boot,
                              self.event())
        self.assertTrue(e.waiting)
        self.assertIsNone(self.row()['failure_key'])
        self.nova.servers.lock.side_effect = None
        self.assertRaises(hooks_base.PermanentFailure, self.hook.on_boot,
                          self.event())
        self.assertEqual('lock', self.row()['action'])

    def test_optional_never_registered_is_recorded_only(self):
        self.not_registered()
        self.clock.now = T0 + 601
        self.hook.on_boot(self.event(specs=OPTIONAL))
        self.assertFalse(self.nova.servers.lock.called)
        row = self.row()
        self.assertEqual(('failed', None), (row['state'], row['action']))
        self.assertIn('optional: no action', row['last_failure_reason'])

    def test_enrol_default_policy(self):
        self.registered()
        add = self.verifier_add()
        self.hook.on_boot(self.event())
        body = add.last_request.json()
        self.assertEqual({'mask': '0x0'}, json.loads(body['tpm_policy']))
        self.assertEqual(('10.0.0.5', 9002), (body['cloudagent_ip'],
                                              body['cloudagent_port']))
        self.assertEqual(('', ''), (body['runtime_policy_name'],
                                    body['mb_policy_name']))
        self.assertEqual('QUlL', body['ak_tpm'])
        self.assertEqual('2.1', body['supported_version'])
        self.assertEqual({'instance_uuid': self.uuid, 'project_id': 'p1',
                          'host': 'compute1', 'flavor': 'vtpm.attested',
                          'enrolled_by': 'nova-vtpm'},
                         json.loads(body['metadata']))
        row = self.row()
        self.assertEqual(('enrolled', 'required', '10.0.0.5', 9002),
                         (row['state'], row['mode'], row['agent_ip'],
                          row['agent_port']))
        self.assertEqual('CN=instance-00000001:%s' % self.uuid,
                         row['ek_subject'])

    def test_enrol_named_policies(self):
        self.registered()
        add = self.verifier_add()
        self.hook.on_boot(self.event(specs=dict(REQUIRED, **{
            'keylime:tpm_policy': 'pcr23', 'keylime:runtime_policy': 'ima1',
            'keylime:mb_policy': 'mb1'})))
        body = add.last_request.json()
        self.assertEqual({'23': [ZERO], 'mask': '0x800000'},
                         json.loads(body['tpm_policy']))
        self.assertEqual(('ima1', 'mb1'), (body['runtime_policy_name'],
                                           body['mb_policy_name']))
        self.assertEqual('pcr23', self.row()['tpm_policy'])

    def test_default_policies_from_config(self):
        self.flags(default_tpm_policy='{"7": ["%s"]}' % ZERO,
                   default_runtime_policy_name='base-ima')
        self.registered()
        add = self.verifier_add()
        self.hook.on_boot(self.event())
        body = add.last_request.json()
        self.assertEqual({'7': [ZERO], 'mask': '0x80'},
                         json.loads(body['tpm_policy']))
        self.assertEqual('base-ima', body['runtime_policy_name'])

    def test_unknown_tpm_policy_fails_without_action(self):
        specs = dict(REQUIRED, **{'keylime:tpm_policy': 'nope'})
        ev = self.event()
        ev.request = tpm.resolve(specs, {}, tpm_policies=None)
        e = self.assertRaises(hooks_base.PermanentFailure, self.hook.on_boot,
                              ev)
        self.assertIn("TPM policy 'nope' is not defined", str(e))
        self.assertFalse(self.nova.servers.lock.called)
        self.assertFalse(self.requests('POST', VER))

    def test_request_errors_refuse(self):
        ev = self.event()
        ev.request = tpm.resolve(
            dict(REQUIRED, **{'keylime:tpm_policy': 'nope'}), {},
            tpm_policies=POLICIES)
        e = self.assertRaises(hooks_base.PermanentFailure, self.hook.on_boot,
                              ev)
        self.assertIn('The attestation request has errors', str(e))
        self.assertEqual('failed', self.row()['state'])

    def test_tpm_1_2_cannot_be_attested(self):
        ev = self.event(specs={'hw:tpm_version': '1.2',
                               'keylime:attestation': 'required'})
        e = self.assertRaises(hooks_base.PermanentFailure, self.hook.on_boot,
                              ev)
        self.assertIn('TPM 2.0 only', str(e))

    def test_already_enrolled_is_done(self):
        self.registered()
        self.verifier_add(**err(409, 'exists'))
        self.hook.on_boot(self.event())
        self.assertEqual('enrolled', self.row()['state'])

    def test_agent_address_from_nova(self):
        self.flags(agent_network='private')
        self.nova.servers.get.return_value = mock.Mock(addresses={
            'private': [
                {'addr': 'fd00::5', 'version': 6,
                 'OS-EXT-IPS:type': 'fixed'},
                {'addr': '203.0.113.9', 'version': 4,
                 'OS-EXT-IPS:type': 'floating'},
                {'addr': '192.168.0.7', 'version': 4,
                 'OS-EXT-IPS:type': 'fixed'}],
            'public': [{'addr': '198.51.100.1', 'version': 4}]})
        self.registered()
        add = self.verifier_add()
        self.hook.on_boot(self.event())
        self.assertEqual('192.168.0.7', add.last_request.json()[
            'cloudagent_ip'])
        self.nova.servers.get.assert_called_once_with(self.uuid)

    def test_agent_network_without_address(self):
        self.flags(agent_network='private')
        self.nova.servers.get.return_value = mock.Mock(addresses={})
        self.registered()
        e = self.assertRaises(hooks_base.PermanentFailure, self.hook.on_boot,
                              self.event())
        self.assertIn("no address on the network 'private'", str(e))

    def test_keylime_down_is_waited_out_within_the_window(self):
        self.registered()
        self.verifier_add(**err(503, 'down'))
        self.clock.now = T0 + 30
        e = self.assertRaises(hooks_base.RetryLater, self.hook.on_boot,
                              self.event())
        self.assertTrue(e.waiting)
        self.assertEqual(3.0, e.delay)
        self.assertIn('unavailable', str(e))
        self.clock.now = T0 + 901
        e = self.assertRaises(hooks_base.RetryLater, self.hook.on_boot,
                              self.event())
        self.assertFalse(e.waiting)

    def test_deleted_server_is_not_enrolled_by_a_late_boot(self):
        self.mock.delete(VER + '/v2.6/agents/' + self.uuid,
                         **err(404, 'gone'))
        self.mock.delete(REG + '/v2.6/agents/' + self.uuid,
                         **err(404, 'gone'))
        self.hook.on_delete(self.event('delete'))
        self.assertEqual('removed', self.row()['state'])
        self.hook.on_boot(self.event())
        self.assertFalse(self.requests('GET', REG + '/v2.6'))


class RefusalTest(_Base):

    def assert_refused(self, *fragments):
        e = self.assertRaises(hooks_base.PermanentFailure, self.hook.on_boot,
                              self.event())
        for fragment in fragments:
            self.assertIn(fragment, str(e))
        self.assertFalse(self.requests('POST', VER))
        row = self.row()
        self.assertEqual('refused', row['state'])
        self.nova.servers.lock.assert_called_once_with(self.uuid,
                                                       reason=mock.ANY)
        return row

    def test_ek_of_another_instance(self):
        other = str(uuidlib.uuid4())
        self.registered(cn='instance-00000002:%s' % other)
        row = self.assert_refused('belongs to instance %s' % other)
        self.assertEqual('CN=instance-00000002:%s' % other,
                         row['ek_subject'])

    def test_untrusted_ca(self):
        self.registered(ca=ek_helpers.HostCA())
        self.assert_refused('does not chain to a trusted root CA')

    def test_ek_tpm_mismatch(self):
        self.registered(ek_tpm=ek_helpers.b64(ek_helpers.tpm2b_rsa(
            ek_helpers._RSA_EK2)))
        self.assert_refused('not the EK the TPM proved')

    def test_no_ek_certificate(self):
        self.registered(ekcert=None)
        self.assert_refused('registered no EK certificate')

    def test_no_trust_dir(self):
        self.flags(ek_trust_dir=None)
        self.hook = self.make_hook()
        self.registered()
        self.assert_refused('has no root CA certificate')

    def test_optional_is_refused_without_action(self):
        self.registered(ekcert=None)
        self.assertRaises(hooks_base.PermanentFailure, self.hook.on_boot,
                          self.event(specs=OPTIONAL))
        self.assertFalse(self.nova.servers.lock.called)
        self.assertEqual('refused', self.row()['state'])

    def test_trusted_later_is_enrolled_and_unlocked(self):
        new_ca = ek_helpers.HostCA()
        self.registered(ca=new_ca)
        self.assert_refused('does not chain')
        new_ca.install(self.trust_dir, 'compute2')   # the operator adds it
        self.verifier_add()
        self.hook.on_boot(self.event())
        self.assertEqual(('enrolled', None, None),
                         (self.row()['state'], self.row()['failure_key'],
                          self.row()['action']))
        self.nova.servers.unlock.assert_called_once_with(self.uuid)
        self.assertEqual(1, len(self.journal.list_events(
            event_type=keylime_hook.EVENT_RECOVERED)))


class DeleteTest(_Base):

    def test_delete_from_both(self):
        self.registered()
        self.verifier_add()
        self.hook.on_boot(self.event())
        v = self.mock.delete(VER + '/v2.6/agents/' + self.uuid,
                             **ok(status=202))
        r = self.mock.delete(REG + '/v2.6/agents/' + self.uuid, **ok())
        self.hook.on_delete(self.event('delete'))
        self.assertEqual((1, 1), (v.call_count, r.call_count))
        self.assertEqual('removed', self.row()['state'])

    def test_delete_of_a_server_never_attested(self):
        self.hook.on_delete(self.event('delete', specs={
            'hw:tpm_version': '2.0'}))
        self.assertEqual([], self.mock.request_history)

    def test_keylime_down_at_delete(self):
        self.mock.delete(VER + '/v2.6/agents/' + self.uuid,
                         **err(503, 'down'))
        self.clock.now = T0 + 5
        e = self.assertRaises(hooks_base.RetryLater, self.hook.on_delete,
                              self.event('delete'))
        self.assertTrue(e.waiting)


class RecoveryTest(_Base):
    """Live migration, reboot, power on: back to Get Quote / PASS."""

    def setUp(self):
        super().setUp()
        self.registered()
        self.verifier_add()
        self.hook.on_boot(self.event())
        self.url = VER + '/v2.6/agents/' + self.uuid
        self.migrated = T0 + 100
        self.clock.now = T0 + 101
        self.reachable = self.useFixture(fixtures.MockPatchObject(
            self.hook, '_reachable', return_value=True)).mock

    def post_dest(self):
        return self.hook.on_live_migration_post_dest(self.event(
            'live_migration_post_dest', host='compute2',
            timestamp=self.migrated))

    def test_still_passing(self):
        self.verifier_status(client.GET_QUOTE)
        self.post_dest()
        row = self.row()
        self.assertEqual(('enrolled', 'compute2', 'PASS', 'Get Quote'),
                         (row['state'], row['host'],
                          row['attestation_status'],
                          row['operational_state_name']))
        self.assertFalse(self.requests('DELETE', VER))

    def test_retrying_verifier_is_waited_for(self):
        self.verifier_status(client.GET_QUOTE_RETRY, None)
        e = self.assertRaises(hooks_base.RetryLater, self.post_dest)
        self.assertTrue(e.waiting)
        self.assertFalse(self.requests('DELETE', VER))

    def test_gave_up_unreachable_waits(self):
        self.verifier_status(client.FAILED, 'FAIL')
        self.reachable.return_value = False
        e = self.assertRaises(hooks_base.RetryLater, self.post_dest)
        self.assertIn('not reachable yet', str(e))
        self.assertFalse(self.requests('DELETE', VER))

    def test_gave_up_is_deleted_and_added_again(self):
        for state in (client.FAILED, client.INVALID_QUOTE,
                      client.TENANT_FAILED):
            self.mock.reset_mock()
            self.verifier_status(state, 'FAIL')
            delete = self.mock.delete(self.url, **ok(status=202))
            self.assertRaises(hooks_base.RetryLater, self.post_dest)
            self.assertEqual(1, delete.call_count, state)
            self.assertEqual('waiting', self.row()['state'])
            # Gone: added again.
            self.mock.get(self.url, **err(404, 'gone'))
            add = self.verifier_add()
            self.assertRaises(hooks_base.RetryLater, self.post_dest)
            self.assertEqual(1, add.call_count)
            self.assertEqual('enrolled', self.row()['state'])
            self.assertEqual(T0 + 101, self.row()['enrolled_at'])
            # PASS: done.
            self.verifier_status(client.GET_QUOTE)
            self.post_dest()
            self.assertFalse(self.nova.servers.lock.called)
            self.journal.put_attestation(self.uuid, enrolled_at=T0)

    def test_failing_again_after_the_new_add_is_a_failure(self):
        self.journal.put_attestation(self.uuid, enrolled_at=T0 + 100.5)
        self.verifier_status(client.INVALID_QUOTE, 'FAIL',
                             event_id='pcr_validation.invalid_pcr_23')
        e = self.assertRaises(hooks_base.PermanentFailure, self.post_dest)
        self.assertIn('Invalid Quote', str(e))
        self.assertFalse(self.requests('DELETE', VER))
        self.nova.servers.lock.assert_called_once_with(self.uuid,
                                                       reason=mock.ANY)

    def test_not_back_within_the_deadline(self):
        self.verifier_status(client.GET_QUOTE_RETRY, None)
        self.clock.now = self.migrated + 301
        e = self.assertRaises(hooks_base.PermanentFailure, self.post_dest)
        self.assertIn('Not back to Get Quote / PASS within 300 s', str(e))
        self.nova.servers.lock.assert_called_once_with(self.uuid,
                                                       reason=mock.ANY)

    def test_reboot_power_on_and_rollback_recover_too(self):
        self.verifier_status(client.GET_QUOTE)
        for lifecycle in ('reboot', 'power_on', 'live_migration_rollback'):
            getattr(self.hook, 'on_' + lifecycle)(self.event(lifecycle))
        self.assertFalse(self.requests('DELETE', VER))


class ReconcileTest(_Base):

    def setUp(self):
        super().setUp()
        self.bulk = self.mock.get(VER + '/v2.6/agents/', **ok({}))

    def statuses(self, **agents):
        self.mock.get(VER + '/v2.6/agents/', **ok({
            uuid: {'operational_state': state, 'attestation_status': status,
                   'attestation_count': 7, 'last_event_id': event,
                   'last_successful_attestation': int(T0)}
            for uuid, (state, status, event) in agents.items()}))

    def test_failure_gets_the_action_once_and_clears(self):
        self.registered()
        self.verifier_add()
        self.hook.on_boot(self.event())
        self.statuses(**{self.uuid: (client.INVALID_QUOTE, 'FAIL',
                                     'pcr_validation.invalid_pcr_23')})
        counts = self.hook.reconcile([self.server()])
        self.assertEqual(1, counts['failed'])
        self.nova.servers.lock.assert_called_once_with(self.uuid,
                                                       reason=mock.ANY)
        row = self.row()
        self.assertEqual(('enrolled', 'FAIL', 9, 'lock'),
                         (row['state'], row['attestation_status'],
                          row['operational_state'], row['action']))
        self.hook.reconcile([self.server()])
        self.assertEqual(1, self.nova.servers.lock.call_count)
        # Passing again (reactivated by the operator): the lock goes.
        self.statuses(**{self.uuid: (client.GET_QUOTE, 'PASS', None)})
        self.nova.servers.get.return_value = mock.Mock(
            locked=True, locked_reason='nova-vtpm: Keylime attestation: x')
        counts = self.hook.reconcile([self.server()])
        self.assertEqual(1, counts['passed'])
        self.nova.servers.unlock.assert_called_once_with(self.uuid)
        self.assertIsNone(self.row()['action'])
        # A new failure: a new action.
        self.statuses(**{self.uuid: (client.INVALID_QUOTE, 'FAIL',
                                     'pcr_validation.invalid_pcr_23')})
        self.hook.reconcile([self.server()])
        self.assertEqual(2, self.nova.servers.lock.call_count)

    def test_optional_failure_is_recorded_only(self):
        self.statuses(**{self.uuid: (client.FAILED, 'FAIL', None)})
        counts = self.hook.reconcile([self.server(specs=OPTIONAL)])
        self.assertEqual(1, counts['failed'])
        self.assertFalse(self.nova.servers.lock.called)
        self.assertIn('Failed', self.row()['last_failure_reason'])

    def test_drift_enrols(self):
        self.registered()
        add = self.verifier_add()
        counts = self.hook.reconcile([self.server()])
        self.assertEqual(1, counts['enrolled'])
        self.assertEqual(1, add.call_count)
        self.assertEqual('enrolled', self.row()['state'])

    def test_drift_waits_for_registration(self):
        self.not_registered()
        counts = self.hook.reconcile([self.server()])
        self.assertEqual(1, counts['waiting'])
        self.assertEqual(('waiting', T0), (self.row()['state'],
                                           self.row()['waiting_since']))

    def test_stopped_or_busy_servers_are_left_alone(self):
        self.statuses(**{self.uuid: (client.FAILED, 'FAIL', None)})
        other = str(uuidlib.uuid4())
        counts = self.hook.reconcile([
            self.server(vm_state='stopped'),
            self.server(uuid=other, task_state='migrating')])
        self.assertEqual(0, counts['failed'])
        self.assertFalse(self.nova.servers.lock.called)
        self.assertIsNone(self.row())

    def test_gone_servers_are_removed(self):
        self.registered()
        self.verifier_add()
        self.hook.on_boot(self.event())
        v = self.mock.delete(VER + '/v2.6/agents/' + self.uuid,
                             **ok(status=202))
        r = self.mock.delete(REG + '/v2.6/agents/' + self.uuid, **ok())
        counts = self.hook.reconcile([])
        self.assertEqual(1, counts['removed'])
        self.assertEqual((1, 1), (v.call_count, r.call_count))
        self.assertEqual('removed', self.row()['state'])
        self.assertEqual(0, self.hook.reconcile([])['removed'])

    def test_agents_not_ours_are_left_alone(self):
        self.statuses(**{str(uuidlib.uuid4()): (client.GET_QUOTE, 'PASS',
                                                None)})
        counts = self.hook.reconcile([])
        self.assertEqual(0, counts['removed'])
        self.assertFalse(self.requests('DELETE', VER))

    def test_verifier_down(self):
        self.mock.get(VER + '/v2.6/agents/', **err(503, 'down'))
        self.assertRaises(hooks_base.RetryLater, self.hook.reconcile,
                          [self.server()])

    def test_not_configured(self):
        self.flags(verifier_url=None)
        context = self.hook.context
        hook = keylime_hook.KeylimeHook(context)
        self.assertEqual({'not configured': 1}, hook.reconcile([]))


class HelpersTest(base.BaseTestCase):

    def test_pick_address(self):
        self.assertIsNone(keylime_hook.pick_address(None))
        self.assertEqual('10.0.0.1', keylime_hook.pick_address(
            [{'addr': '10.0.0.1'}]))
        self.assertEqual('10.0.0.2', keylime_hook.pick_address([
            {'addr': '203.0.113.1', 'version': 4,
             'OS-EXT-IPS:type': 'floating'},
            {'addr': 'fd00::1', 'version': 6, 'OS-EXT-IPS:type': 'fixed'},
            {'addr': '10.0.0.2', 'version': 4, 'OS-EXT-IPS:type': 'fixed'}]))

    def test_registered_in_setup_cfg(self):
        self.assertIn('keylime', manager_mod.available_hooks())
        self.assertEqual(('controller',), keylime_hook.KeylimeHook.ROLES)


class ReachableTest(base.BaseTestCase):
    """The probe: an agent must answer, an open port is not enough."""

    def setUp(self):
        super().setUp()
        conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(conf)
        conf([], default_config_files=[])
        context = manager_mod.HookContext(conf, None, 'c', 'controller')
        self.hook = keylime_hook.KeylimeHook(context)
        conf.set_override('probe_timeout', 0.3, keylime_hook.GROUP)

    def listener(self):
        sock = socket.socket()
        sock.bind(('127.0.0.1', 0))
        sock.listen(5)
        self.addCleanup(sock.close)
        return sock

    def test_silent_listener_is_not_reachable(self):
        # Connections are accepted by the kernel, nobody answers (a
        # paused guest, a stopped process).
        sock = self.listener()
        t0 = time.monotonic()
        self.assertFalse(self.hook._reachable('127.0.0.1',
                                              sock.getsockname()[1]))
        self.assertLess(time.monotonic() - t0, 2)

    def test_closed_port_is_not_reachable(self):
        sock = self.listener()
        port = sock.getsockname()[1]
        sock.close()
        self.assertFalse(self.hook._reachable('127.0.0.1', port))

    def test_any_answer_is_reachable(self):
        sock = self.listener()

        def answer():
            conn, _ = sock.accept()
            conn.sendall(b'HTTP/1.1 400 Bad Request\r\n\r\n')
            conn.close()

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        self.assertTrue(self.hook._reachable('127.0.0.1',
                                             sock.getsockname()[1]))
        thread.join(5)
