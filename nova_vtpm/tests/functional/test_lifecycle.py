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

"""The whole vTPM lifecycle through real Nova, RabbitMQ and agent processes.

Real in-process Nova (two fake-libvirt computes) sends its versioned
notifications to a private RabbitMQ; a controller agent and the compute
agent of compute1 run as processes of their own. Each step of the scenario
(boot, reboot, resize, live migration and its rollback, delete) must reach
the right hooks, in order, on the right host.
"""

from nova_vtpm.tests.functional import agent_fixture
from nova_vtpm.tests.functional import nova_base
from nova_vtpm.tests.functional import scenario


class LifecycleTest(nova_base.VTPMServersTestBase):

    def setUp(self):
        super().setUp()
        self.controller = self.useFixture(agent_fixture.AgentProcess(
            self.rabbit_url, role='controller', host='controller'))
        self.compute1 = self.useFixture(agent_fixture.AgentProcess(
            self.rabbit_url, role='compute', host='compute1'))

    def test_lifecycle(self):
        lines = []
        result = scenario.LifecycleScenario(
            self, self.controller, self.compute1, say=lines.append).run()
        self.addDetail('scenario', _text('\n'.join(lines)))
        u = result['uuids']

        # The controller saw the whole life of s1, in order, and the
        # inventory hook did its work on each event.
        events = [e for e in self.controller.journal.list_events(
            instance_uuid=u['s1'], newest_first=False, limit=0)
            if e['lifecycle']]
        self.assertEqual(
            ['boot', 'reboot', 'live_migration_pre',
             'live_migration_post_dest', 'live_migration_post', 'delete'],
            [e['lifecycle'] for e in events])
        for event in events:
            full = self.controller.journal.get_event(event['id'])
            self.assertEqual([('inventory', 'done', 1)], [
                (w['hook'], w['state'], w['attempts'])
                for w in full['work']], event['lifecycle'])

        # The inventory's final state: Nova's hosts, the requests.
        inv = result['inventory']
        for uuid, row in inv.items():
            self.assertEqual(result['nova_hosts'][uuid], row['host'], uuid)
        self.assertEqual('compute2', inv[u['s1']]['host'])
        self.assertEqual(('2.0', 'tpm-crb', 'host', 'optional'),
                         (inv[u['s1']]['vtpm_version'],
                          inv[u['s1']]['vtpm_model'],
                          inv[u['s1']]['secret_security'],
                          inv[u['s1']]['attestation_mode']))
        # Resized from vtpm.tis.host to vtpm.crb.host.
        self.assertEqual('tpm-crb', inv[u['s2']]['vtpm_model'])
        self.assertEqual(('2.0', 'tpm-crb'), (inv[u['s4']]['vtpm_version'],
                                              inv[u['s4']]['vtpm_model']))
        self.assertEqual(('1.2', 'user'), (inv[u['s5']]['vtpm_version'],
                                           inv[u['s5']]['secret_security']))
        for uuid in (u['s1'], u['s2'], u['s4'], u['s5']):
            self.assertIsNotNone(inv[uuid]['deleted_at'])

        # A server without a vTPM costs one skipped journal row per
        # lifecycle event (plus its remembered request spec), no hook call.
        plain = self.controller.journal.list_events(instance_uuid=u['s3'],
                                                    limit=0)
        self.assertEqual({'skipped'}, {e['state'] for e in plain
                                       if e['lifecycle']})
        self.assertEqual(['scheduler.select_destinations.end'], [
            e['event_type'] for e in plain if not e['lifecycle']])
        self.assertIsNone(self.controller.journal.get_instance(u['s3']))

        # The compute agent of compute1 acted on what happened on compute1:
        # s1 and s4 lived there, s2 was resized onto it (a resize never
        # stays on its host here), s6 failed to migrate there; s5 never
        # touched it.
        k = self.compute1.journal
        self.assertEqual({u['s1'], u['s2'], u['s4'], u['s6']}, {
            r['uuid'] for r in k.list_instances(include_deleted=True)})
        self.assertEqual({'skipped'}, {
            e['state'] for e in k.list_events(instance_uuid=u['s5'],
                                              limit=0) if e['lifecycle']})
        # s1's events at compute1 stop being ours once it left.
        self.assertEqual(
            [('boot', 'done'), ('reboot', 'done'),
             ('live_migration_pre', 'done'),
             ('live_migration_post_dest', 'skipped'),
             ('live_migration_post', 'done'), ('delete', 'skipped')],
            [(e['lifecycle'], e['state']) for e in k.list_events(
                instance_uuid=u['s1'], newest_first=False, limit=0)
             if e['lifecycle']])


def _text(text):
    from testtools import content
    return content.text_content(text)
