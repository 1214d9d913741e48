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

"""Host facts: collection, publication and the agent's intake."""

import os
import time
from unittest import mock

import fixtures
from oslo_config import cfg
import oslo_messaging
from oslotest import base

from nova_vtpm.agent import facts
from nova_vtpm.agent import service
from nova_vtpm import conf as nova_vtpm_conf
from nova_vtpm import journal as journal_mod
from nova_vtpm.swtpm import capabilities
from nova_vtpm.swtpm import exception as swtpm_exception

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /var/lib/libvirt rw shared:2 - xfs /dev/sdb1 rw
41 40 0:36 / /var/lib/libvirt/swtpm rw shared:3 - nfs4 nas:/swtpm rw,vers=4.2
42 22 0:37 / /srv/with\\040space rw - fuse.glusterfs gl:/vol rw
43 22 0:38 / /srv/ceph rw - ceph 10.0.0.1:/ rw
"""

HOST_FACTS = capabilities.HostFacts(
    swtpm_version='0.7.1', swtpm_setup_version='0.7.1',
    libtpms_version='0.9.2',
    swtpm_features=('tpm-1.2', 'tpm-2.0', 'cmdarg-key-fd'),
    swtpm_setup_features=('tpm-2.0', 'cmdarg-pwdfile-fd'))


def make_conf(tmp, text=''):
    path = os.path.join(tmp, 'nova-cpu.conf')
    with open(path, 'w') as f:
        f.write(text)
    conf = cfg.ConfigOpts()
    nova_vtpm_conf.register_opts(conf)
    conf(['--config-file', path], default_config_files=[])
    return conf


class MountinfoTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.mountinfo = os.path.join(self.tmp, 'mountinfo')
        with open(self.mountinfo, 'w') as f:
            f.write(MOUNTINFO)

    def test_parse(self):
        mounts = facts.parse_mountinfo(MOUNTINFO)
        self.assertEqual(('/srv/with space', 'fuse.glusterfs', 'gl:/vol'),
                         mounts[3])
        self.assertEqual(5, len(mounts))

    def test_longest_prefix_wins(self):
        with mock.patch('os.path.realpath', side_effect=lambda p: p), \
                mock.patch('os.path.exists', return_value=True):
            self.assertEqual(
                ('nfs4', '/var/lib/libvirt/swtpm', 'nas:/swtpm'),
                facts.filesystem_of('/var/lib/libvirt/swtpm/u/tpm2',
                                    self.mountinfo))
            self.assertEqual(
                'xfs', facts.filesystem_of('/var/lib/libvirt/qemu',
                                           self.mountinfo)[0])
            # Not a prefix match on a partial component.
            self.assertEqual(
                'xfs', facts.filesystem_of('/var/lib/libvirt/swtpmx',
                                           self.mountinfo)[0])
            self.assertEqual('ext4', facts.filesystem_of(
                '/etc', self.mountinfo)[0])

    def test_missing_path_uses_parent(self):
        fstype, point, _ = facts.filesystem_of(
            os.path.join(self.tmp, 'no', 'such', 'dir'))
        self.assertIsNotNone(fstype)
        self.assertTrue(self.tmp.startswith(point))

    def test_unreadable_mountinfo(self):
        self.assertEqual((None, None, None), facts.filesystem_of(
            '/', os.path.join(self.tmp, 'nope')))

    def test_shared_types(self):
        for fs in ('nfs', 'nfs4', 'cephfs', 'ceph', 'glusterfs',
                   'fuse.glusterfs', 'lustre', 'gpfs'):
            self.assertTrue(facts.is_shared_fstype(fs), fs)
        for fs in ('ext4', 'xfs', 'btrfs', 'tmpfs', 'overlay', None, ''):
            self.assertFalse(facts.is_shared_fstype(fs), fs)


class CollectTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def test_collect(self):
        conf = make_conf(self.tmp, (
            '[libvirt]\nswtpm_enabled = true\n'
            'supported_tpm_secret_security = host, deployment\n'
            '[nova_vtpm_state]\nstate_root = %s\n' % self.tmp))
        result = facts.collect(conf, 'cmp1', probe=lambda: HOST_FACTS)
        self.assertEqual('cmp1', result['host'])
        self.assertEqual(facts.FORMAT, result['format'])
        self.assertTrue(result['swtpm_available'])
        self.assertEqual('0.9.2', result['libtpms_version'])
        self.assertEqual(['1.2', '2.0'], result['tpm_versions'])
        self.assertTrue(result['swtpm_enabled'])
        self.assertEqual(['host', 'deployment'],
                         result['supported_tpm_secret_security'])
        self.assertFalse(result['libtpms_profiles'])
        self.assertEqual(['null'], [p['name'] for p in
                                    result['available_profiles']])
        self.assertFalse(result['shared_storage_migration'])
        self.assertEqual(self.tmp, result['state_root'])
        self.assertFalse(result['state_root_shared'])
        self.assertAlmostEqual(time.time(), result['collected_at'], delta=5)

    def test_nova_defaults(self):
        conf = make_conf(self.tmp)
        result = facts.collect(conf, 'cmp1', probe=lambda: HOST_FACTS)
        # Nova's own defaults.
        self.assertFalse(result['swtpm_enabled'])
        self.assertEqual(['user', 'host', 'deployment'],
                         result['supported_tpm_secret_security'])

    def test_no_swtpm(self):
        def probe():
            raise swtpm_exception.SwtpmNotAvailable(binary='swtpm',
                                                    reason='not installed')
        result = facts.collect(make_conf(self.tmp), 'cmp1', probe=probe)
        self.assertFalse(result['swtpm_available'])
        self.assertIn('not installed', result['swtpm_error'])
        self.assertIsNone(result['libtpms_version'])

    def test_profiles_when_swtpm_has_them(self):
        newer = capabilities.HostFacts(
            '0.10.0', '0.10.0', '0.10.0',
            ('tpm-2.0', 'cmdarg-profile', 'cmdarg-migration'), ())
        text = ('{"AvailableProfiles": [{"Name": "default-v1", '
                '"StateFormatLevel": 7}, {"Name": "null", '
                '"StateFormatLevel": 1}]}')
        with mock.patch.object(capabilities, '_run', return_value=text):
            result = facts.collect(make_conf(self.tmp), 'c',
                                   probe=lambda: newer)
        self.assertTrue(result['libtpms_profiles'])
        self.assertEqual([{'name': 'default-v1', 'state_format_level': 7},
                          {'name': 'null', 'state_format_level': 1}],
                         result['available_profiles'])
        self.assertTrue(result['shared_storage_migration'])

    def test_nova_options_already_registered(self):
        # An in-process Nova registered its own definitions: used as is,
        # no DuplicateOptError.
        conf = cfg.ConfigOpts()
        conf.register_opt(cfg.BoolOpt('swtpm_enabled', default=True,
                                      help='Nova'), group='libvirt')
        conf.register_opt(cfg.ListOpt('supported_tpm_secret_security',
                                      default=['host'], help='Nova'),
                          group='libvirt')
        conf([], default_config_files=[])
        self.assertEqual((True, ['host']), facts.nova_libvirt_settings(conf))
        facts.register_nova_libvirt_opts(conf)   # twice is fine
        self.assertEqual('Nova', conf._groups['libvirt']._opts[
            'swtpm_enabled']['opt'].help)


class RecordTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        tmp = self.useFixture(fixtures.TempDir()).path
        self.journal = journal_mod.Journal(
            'sqlite:///' + os.path.join(tmp, 'j.sqlite'))
        self.journal.upgrade()

    def payload(self, host='cmp1', at=None, **kw):
        p = {'format': 1, 'host': host, 'collected_at': at or time.time(),
             'libtpms_version': '0.9.2'}
        p.update(kw)
        return p

    def test_record_and_keep_newest(self):
        now = time.time()
        self.assertEqual(('cmp1', True), facts.record(
            self.journal, self.payload(at=now), 'nova-vtpm-agent:cmp1'))
        self.assertEqual(('cmp1', False), facts.record(
            self.journal, self.payload(at=now - 10, libtpms_version='0.1')))
        row = self.journal.get_host_facts('cmp1')
        self.assertEqual('0.9.2', row['facts']['libtpms_version'])
        facts.record(self.journal, self.payload(at=now + 1,
                                                libtpms_version='0.10.0'))
        self.assertEqual('0.10.0', self.journal.get_host_facts(
            'cmp1')['facts']['libtpms_version'])
        self.assertEqual(['cmp1'], [r['host'] for r in
                                    self.journal.list_host_facts()])

    def test_malformed(self):
        for payload, words in (
                ('junk', 'not an object'),
                ({'format': 1, 'collected_at': 1.0}, 'host is missing'),
                ({'format': '1', 'host': 'h', 'collected_at': 1.0},
                 'format has the wrong type'),
                ({'format': 1, 'host': 'h', 'collected_at': True},
                 'collected_at has the wrong type'),
                ({'format': 1, 'host': '', 'collected_at': 1.0},
                 'not a host name')):
            e = self.assertRaises(facts.MalformedFacts, facts.record,
                                  self.journal, payload)
            self.assertIn(words, str(e))

    def test_publisher_must_be_the_host(self):
        e = self.assertRaises(facts.MalformedFacts, facts.record,
                              self.journal, self.payload('cmp2'),
                              'nova-vtpm-agent:cmp1')
        self.assertIn('another host', str(e))
        self.assertIsNone(self.journal.get_host_facts('cmp2'))


class IntakeTest(base.BaseTestCase):
    """The agent records facts notifications as done events."""

    def setUp(self):
        super().setUp()
        tmp = self.useFixture(fixtures.TempDir()).path
        self.conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(self.conf)
        self.conf([], default_config_files=[])
        self.conf.set_override('host', 'ctl', 'nova_vtpm_agent')
        self.journal = journal_mod.Journal(
            'sqlite:///' + os.path.join(tmp, 'j.sqlite'))
        self.journal.upgrade()
        self.agent = service.Agent(self.conf, self.journal, mock.Mock(),
                                   transport=mock.sentinel.transport)

    def notify(self, payload, publisher='nova-vtpm-agent:cmp1',
               message_id='m1'):
        return self.agent.handle_notification(
            publisher, facts.FACTS_EVENT, payload,
            {'message_id': message_id,
             'timestamp': '2026-12-05 10:00:00.000000'})

    def test_facts_recorded(self):
        payload = {'format': 1, 'host': 'cmp1', 'collected_at': time.time(),
                   'libtpms_version': '0.9.2'}
        self.assertEqual(oslo_messaging.NotificationResult.HANDLED,
                         self.notify(payload))
        self.assertEqual('0.9.2', self.journal.get_host_facts(
            'cmp1')['facts']['libtpms_version'])
        (event,) = self.journal.list_events()
        self.assertEqual(('done', facts.FACTS_EVENT, 'cmp1'),
                         (event['state'], event['event_type'],
                          event['host']))
        self.assertIn('host facts of cmp1 recorded', event['reason'])
        self.assertEqual([], self.journal.get_event(event['id'])['work'])
        # A redelivery is a duplicate.
        self.notify(payload)
        self.assertEqual(1, len(self.journal.list_events()))

    def test_a_starting_host_is_answered(self):
        self.agent.facts_publisher = mock.Mock()
        base_payload = {'format': 1, 'collected_at': time.time()}
        self.notify(dict(base_payload, host='cmp1', trigger='periodic'),
                    message_id='m1')
        self.notify(dict(base_payload, host='ctl', trigger='start'),
                    publisher='nova-vtpm-agent:ctl', message_id='m2')
        self.assertFalse(self.agent.facts_publisher.nudge.called)
        self.notify(dict(base_payload, host='cmp1', trigger='start'),
                    message_id='m3')
        self.agent.facts_publisher.nudge.assert_called_once_with()

    def test_malformed_rejected(self):
        self.assertEqual(oslo_messaging.NotificationResult.HANDLED,
                         self.notify({'host': 'cmp1'}))
        (event,) = self.journal.list_events()
        self.assertEqual('rejected', event['state'])
        self.assertIn('Malformed host facts', event['reason'])
        self.assertEqual([], self.journal.list_host_facts())

    def test_other_unknown_events_still_rejected(self):
        self.agent.handle_notification('x:y', 'nova_vtpm.host.other', {},
                                       {'message_id': 'm9'})
        self.assertEqual('rejected', self.journal.list_events()[0]['state'])


class PublisherTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.conf = make_conf(self.tmp, (
            '[nova_vtpm_agent]\nhost = cmp1\nrole = compute\n'
            'topic = vt\nexchange = nova\n'))

    def test_reuses_the_agent_transport_on_the_right_exchange(self):
        transport = mock.Mock()
        transport.conf.control_exchange = 'nova'
        self.assertEqual((transport, False), facts.notifier_transport(
            self.conf, transport, 'nova'))

    def test_builds_a_transport_for_another_exchange(self):
        transport = mock.Mock()
        transport.conf.control_exchange = 'openstack'
        seen = []

        def build(conf):
            seen.append(conf.control_exchange)
            return mock.sentinel.built
        with mock.patch.object(oslo_messaging, 'get_notification_transport',
                               side_effect=build):
            result = facts.notifier_transport(self.conf, transport, 'nova')
        self.assertEqual((mock.sentinel.built, True), result)
        self.assertEqual(['nova'], seen)
        # The override is gone again.
        self.assertEqual('openstack', self.conf.control_exchange)

    def test_publish_through_a_real_notifier(self):
        # The real Notifier on oslo.messaging's fake driver (no broker),
        # whose exchange is already the agent's: it is reused.
        from oslo_messaging import transport as msg_transport
        self.conf.register_opts(msg_transport._transport_opts)
        self.conf.set_override('control_exchange', 'nova')
        transport = oslo_messaging.get_notification_transport(
            self.conf, url='fake:/')
        self.addCleanup(transport.cleanup)
        sent = []
        with mock.patch.object(
                transport, '_send_notification',
                side_effect=lambda target, ctxt, message, **kw:
                sent.append((target, message, kw))):
            pub = facts.FactsPublisher(
                self.conf, transport,
                collect_fn=lambda conf, host: {'host': host, 'format': 1,
                                               'collected_at': 1.0})
            self.assertFalse(pub._built)
            pub.publish()
        ((target, message, kw),) = sent
        self.assertEqual('vt.info', target.topic)
        self.assertEqual(facts.FACTS_EVENT, message['event_type'])
        self.assertEqual('INFO', message['priority'])
        self.assertEqual('nova-vtpm-agent:cmp1', message['publisher_id'])
        self.assertEqual({'host': 'cmp1', 'format': 1, 'collected_at': 1.0,
                          'trigger': 'periodic'}, message['payload'])
        self.assertEqual(3, kw['retry'])
        self.assertEqual(1, pub.published)
        pub.stop()

    def _publisher(self, interval):
        self.conf.set_override('publish_interval', interval,
                               'nova_vtpm_facts')
        self.useFixture(fixtures.MockPatchObject(
            facts, 'notifier_transport', return_value=(mock.Mock(), False)))
        self.useFixture(fixtures.MockPatchObject(oslo_messaging,
                                                 'Notifier'))
        pub = facts.FactsPublisher(self.conf, None,
                                   collect_fn=lambda conf, host: {})
        pub.MIN_GAP = 0.05
        triggers = []
        pub.publish = triggers.append
        self.addCleanup(pub.stop, 5)
        return pub, triggers

    @staticmethod
    def _wait(predicate, timeout=10):
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.01)
        return predicate()

    def test_publishes_at_start_then_answers_a_nudge(self):
        pub, triggers = self._publisher(0)     # 0: no periodic one
        pub.start()
        self.assertTrue(self._wait(lambda: triggers == ['start']))
        time.sleep(0.1)
        self.assertEqual(['start'], triggers)
        pub.nudge()
        self.assertTrue(self._wait(lambda: len(triggers) == 2))
        self.assertEqual(['start', 'answer'], triggers)
        pub.stop(5)
        self.assertFalse(pub._thread.is_alive())

    def test_periodic(self):
        pub, triggers = self._publisher(1)
        pub.interval = 0.05
        pub.start()
        self.assertTrue(self._wait(lambda: len(triggers) >= 3))
        pub.stop(5)
        self.assertFalse(pub._thread.is_alive())
        self.assertEqual(['start', 'periodic', 'periodic'], triggers[:3])

    def test_publish_failure_is_retried(self):
        pub, _ = self._publisher(1)
        pub.interval = 0.05
        calls = []

        def publish(trigger):
            calls.append(trigger)
            if len(calls) == 1:
                raise RuntimeError('broker down')
        pub.publish = publish
        pub.start()
        self.assertTrue(self._wait(lambda: len(calls) >= 2))
        pub.stop(5)
        self.assertEqual(['start', 'periodic'], calls[:2])

    def test_trigger_is_in_the_payload(self):
        self.useFixture(fixtures.MockPatchObject(
            facts, 'notifier_transport', return_value=(mock.Mock(), False)))
        with mock.patch.object(oslo_messaging, 'Notifier') as notifier:
            pub = facts.FactsPublisher(self.conf, None,
                                       collect_fn=lambda conf, host: {})
            pub.publish('answer')
        notifier.return_value.info.assert_called_once_with(
            mock.ANY, facts.FACTS_EVENT, {'trigger': 'answer'})

    def test_agent_starts_a_publisher_only_on_compute(self):
        for role, expected in (('compute', True), ('controller', False)):
            self.conf.set_override('role', role, 'nova_vtpm_agent')
            journal = mock.Mock()
            journal.claim_owners.return_value = []
            journal.release_claims.return_value = 0
            agent = service.Agent(self.conf, journal,
                                  mock.Mock(names=[]),
                                  transport=mock.Mock())
            with mock.patch.object(service.notify_listener,
                                   'NotificationServer'), \
                    mock.patch.object(facts, 'FactsPublisher') as pub, \
                    mock.patch('threading.Thread'):
                agent.start()
                agent.stop(timeout=1)
            self.assertEqual(expected, pub.called, role)
            if expected:
                pub.return_value.start.assert_called_once_with()
                pub.return_value.stop.assert_called_once_with()
