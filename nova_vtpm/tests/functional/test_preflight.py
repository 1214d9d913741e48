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

"""Migration pre-flight on real host facts, published over real RabbitMQ.

Two real ``nova-vtpm-agent`` processes (role compute, hosts ``cmp-a`` and
``cmp-b``, on this machine) publish this host's REAL facts (the swtpm,
swtpm_setup and libtpms installed here) at start through
``oslo_messaging.Notifier`` on a real RabbitMQ; a third "host",
``cmp-old``, is fabricated: this host's facts with an older libtpms,
published the same way (event type ``nova_vtpm.host.facts``, publisher
``nova-vtpm-agent:cmp-old``). Each agent records every host's facts in its
own journal. Then ``nova-vtpm migration preflight`` (the real command, on
agent A's configuration) refuses ``cmp-old`` for a server on ``cmp-a`` (the
state written by libtpms X cannot be read by an older one) and accepts
``cmp-b`` (the same real facts under another name).

The server comes from the journal inventory (no Nova here: the command
falls back to the journal and says so).
"""

import json
import time
import uuid as uuidlib

import kombu
from oslotest import base
from testtools import content

from nova_vtpm.agent import facts as facts_mod
from nova_vtpm.swtpm import capabilities
from nova_vtpm.tests.functional import agent_fixture
from nova_vtpm.tests.functional import services

_shared = services.shared


def tearDownModule():
    services.stop_shared()


def older_version(version):
    """'0.9.2' -> '0.9.1'; '0.10.0' -> '0.9.0'."""
    parts = [int(p) for p in version.split('.')]
    for i in range(len(parts) - 1, -1, -1):
        if parts[i]:
            parts[i] -= 1
            break
    return '.'.join(str(p) for p in parts)


class PreflightRealFactsTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        try:
            self.real = capabilities.host_facts(refresh=True)
        except Exception as e:
            self.skipTest('no swtpm here: %s' % e)
        if not self.real.libtpms_version:
            self.skipTest('libtpms version unknown')
        self.timings = {}
        t0 = time.monotonic()
        self.rabbit = _shared('rabbitmq', services.RabbitMQ)
        if not self.rabbit.running:
            self.rabbit.start()
        self.timings['rabbitmq'] = time.monotonic() - t0
        self.nova = self.useFixture(
            agent_fixture.NovaPublisher(self.rabbit.url))
        self.addCleanup(lambda: self.addDetail(
            'timings', content.text_content(json.dumps(
                {k: round(v, 2) for k, v in self.timings.items()}))))

    def make_agent(self, host):
        agent = agent_fixture.AgentProcess(
            self.rabbit.url, role='compute', host=host, start=False,
            extra={'libvirt': {'swtpm_enabled': 'true',
                               'supported_tpm_secret_security':
                                   'user,host,deployment'},
                   'nova_vtpm_state': {'state_root': services.SHARED_ROOT}})
        self.useFixture(agent)
        self.addCleanup(self.delete_queue, agent.pool)
        self.addOnException(lambda exc_info: self.addDetail(
            'agent-log-%s' % host, content.text_content(
                agent.log_text()[-20000:])))
        agent.start()
        return agent

    def delete_queue(self, name):
        with kombu.Connection(self.rabbit.kombu_url,
                              connect_timeout=5) as conn:
            conn.default_channel.queue_delete(name)

    @staticmethod
    def hosts(agent):
        try:
            return {r['host']: r for r in agent.journal.list_host_facts()}
        except Exception:
            return {}     # the agent has not created the schema yet

    def preflight(self, agent, *args):
        proc = agent.cli('migration', 'preflight', *args, '--format',
                         'json', check=False)
        if isinstance(proc, dict):
            return 0, proc
        self.assertIn(proc.returncode, (0, 1), proc.stderr)
        return proc.returncode, json.loads(proc.stdout)

    def test_preflight_on_real_facts(self):
        t0 = time.monotonic()
        a = self.make_agent('cmp-a')
        b = self.make_agent('cmp-b')
        self.timings['two_agents_started'] = time.monotonic() - t0

        # Both agents published at start; wait for A's facts in B's
        # journal and B's in A's (every agent records every host).
        t0 = time.monotonic()
        for agent in (a, b):
            agent.wait_for(lambda agent=agent: {'cmp-a', 'cmp-b'} <= set(
                self.hosts(agent)), timeout=60,
                message='facts of cmp-a and cmp-b')
        self.timings['facts_over_rabbitmq'] = time.monotonic() - t0

        mine = self.hosts(a)['cmp-a']['facts']
        # The real facts of this host, as swtpm itself says them.
        self.assertEqual(self.real.swtpm_version, mine['swtpm_version'])
        self.assertEqual(self.real.libtpms_version, mine['libtpms_version'])
        self.assertEqual(sorted(self.real.swtpm_features),
                         mine['swtpm_features'])
        self.assertEqual(sorted(self.real.swtpm_setup_features),
                         mine['swtpm_setup_features'])
        self.assertTrue(mine['swtpm_enabled'])
        self.assertEqual(['user', 'host', 'deployment'],
                         mine['supported_tpm_secret_security'])
        self.assertIn('2.0', mine['tpm_versions'])
        self.assertEqual(
            'cmdarg-migration' in self.real.swtpm_features,
            mine['shared_storage_migration'])
        # Recorded as done events, not as work.
        facts_events = [e for e in a.events(
            event_type=facts_mod.FACTS_EVENT)]
        self.assertEqual({'done'}, {e['state'] for e in facts_events})
        self.assertEqual({'nova-vtpm-agent:cmp-a', 'nova-vtpm-agent:cmp-b'},
                         {e['publisher_id'] for e in facts_events})

        # A fabricated older host: this host's facts with an older
        # libtpms, sent the way an agent sends them.
        old = dict(mine, host='cmp-old', collected_at=time.time(),
                   libtpms_version=older_version(mine['libtpms_version']))
        self.nova.notify(facts_mod.FACTS_EVENT, old,
                         publisher_id='nova-vtpm-agent:cmp-old')
        for agent in (a, b):
            agent.wait_for(lambda agent=agent: 'cmp-old' in self.hosts(
                agent), timeout=60, message='facts of cmp-old')

        # A vTPM server on cmp-a, as the inventory hook records it.
        server = str(uuidlib.uuid4())
        a.journal.put_instance(server, host='cmp-a', vtpm_version='2.0',
                               vtpm_model='tpm-crb', secret_security='host',
                               vm_state='active')

        t0 = time.monotonic()
        rc, report = self.preflight(a, server, '--destination', 'cmp-old')
        self.timings['preflight_cli'] = time.monotonic() - t0
        self.assertEqual(1, rc, report)
        self.assertEqual('no', report['answer'])
        checks = {c['check']: c for c in report['verdicts'][0]['checks']}
        self.assertEqual('fail', checks['libtpms']['status'])
        self.assertIn('libtpms on cmp-old (%s) is older than on the source '
                      'cmp-a (%s)' % (old['libtpms_version'],
                                      mine['libtpms_version']),
                      checks['libtpms']['reason'])
        self.assertIn('journal inventory', report['warnings'][0])
        self.assertEqual('journal', report['server']['source'])

        rc, report = self.preflight(a, server, '--destination', 'cmp-b')
        self.assertEqual(0, rc, report)
        self.assertEqual('yes', report['answer'])
        self.assertEqual(
            {'ok'}, {c['status'] for c in report['verdicts'][0]['checks']},
            report)

        rc, report = self.preflight(a, server)
        self.assertEqual(0, rc, report)
        self.assertEqual(['cmp-b'], report['accepting_hosts'])
        self.assertEqual({'cmp-b': 'yes', 'cmp-old': 'no'},
                         {v['destination']: v['answer']
                          for v in report['verdicts']})

        # The table says it too.
        proc = a.cli('migration', 'preflight', server, '--destination',
                     'cmp-old', check=False)
        self.assertEqual(1, proc.returncode)
        self.assertIn('Destination cmp-old: NO', proc.stdout)
        self.assertIn('FAIL  libtpms', proc.stdout)

        # A user mode server cannot be live-migrated: Nova's own words.
        a.journal.put_instance(server, secret_security='user')
        rc, report = self.preflight(a, server, '--destination', 'cmp-b')
        self.assertEqual(1, rc)
        self.assertIn("Operation 'live-migration' not supported for "
                      'vTPM-enabled instance (%s).' % server,
                      json.dumps(report))
