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

"""The vTPM lifecycle scenario: real in-process Nova -> RabbitMQ -> agents.

Shared by the functional test (which asserts) and the lab (which also
prints every step): boot servers with several vTPM flavors (and one
without), reboot, resize, live-migrate (success and rollback) and delete
them through Nova's API, and check after each step what the agents
recorded: a controller agent and the compute agent of ``compute1``.
"""

import time

from nova_vtpm.tests.functional import agent_fixture

FLAVORS = {
    'vtpm.crb.host': {'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb',
                      'hw:tpm_secret_security': 'host',
                      'keylime:attestation': 'optional'},
    'vtpm.tis.host': {'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-tis',
                      'hw:tpm_secret_security': 'host'},
    'vtpm.12.user': {'hw:tpm_version': '1.2'},
    'plain': {},
}


class Step:
    def __init__(self, title):
        self.title = title
        self.nova_seconds = None
        self.agent_seconds = None
        self.lines = []


class LifecycleScenario:
    """Drive Nova and check the agents.

    :param test: a running ``nova_base.VTPMServersTestBase``.
    :param controller: an ``agent_fixture.AgentProcess`` (role controller).
    :param compute1: an ``AgentProcess`` (role compute, host compute1).
    :param say: called with each line of the report.
    :param timeout: seconds to wait for the agents after each Nova action.
    """

    def __init__(self, test, controller, compute1, say=None, timeout=60):
        self.test = test
        self.controller = controller
        self.compute1 = compute1
        self.say = say or (lambda line: None)
        self.timeout = timeout
        self.steps = []
        self.flavors = {}

    # -- helpers ---------------------------------------------------------

    def _events(self, agent, uuid):
        return [e for e in agent.journal.list_events(
            instance_uuid=uuid, newest_first=False, limit=0)]

    def _wait(self, agent, uuid, lifecycle, states=('done',)):
        """Wait for the instance's last ``lifecycle`` event at ``agent``.

        :returns: the event, once it is in one of ``states``.
        """
        found = {}

        def check():
            for event in reversed(self._events(agent, uuid)):
                if event['lifecycle'] == lifecycle:
                    found['event'] = event
                    return event['state'] in states
            return False

        agent_fixture.wait_for(
            check, timeout=self.timeout,
            message='%s event of %s in %s at agent %s (last: %s)' % (
                lifecycle, uuid, '/'.join(states), agent.host,
                found.get('event', {}).get('state')))
        return found['event']

    def _step(self, title, action, waits):
        """Run a Nova action, then wait for the agents.

        :param waits: (agent, uuid, lifecycle, states) tuples, or a
            callable that makes them from the action's result.
        """
        step = Step(title)
        self.say('')
        self.say('== %s' % title)
        start = time.monotonic()
        result = action()
        step.nova_seconds = time.monotonic() - start
        if callable(waits):
            waits = waits(result)
        for agent, uuid, lifecycle, states in waits:
            event = self._wait(agent, uuid, lifecycle, states)
            step.lines.append(
                '%-10s %-29s %-9s %s%s' % (
                    agent.host, event['lifecycle'], event['state'],
                    event['host'] or '-',
                    ' (%s)' % event['reason'] if event['reason'] else ''))
        step.agent_seconds = time.monotonic() - start - step.nova_seconds
        self.say('   Nova: %.2f s; agents caught up %.2f s later' % (
            step.nova_seconds, step.agent_seconds))
        for line in step.lines:
            self.say('   agent ' + line)
        self.steps.append(step)
        return result

    def _inventory(self, uuid):
        row = self.controller.journal.get_instance(uuid)
        if row is None:
            self.say('   inventory: %s unknown' % uuid)
        else:
            self.say('   inventory: %s TPM %s %s %s, attestation %s, host %s,'
                     ' last event %s%s' % (
                         uuid, row['vtpm_version'], row['vtpm_model'],
                         row['secret_security'], row['attestation_mode'],
                         row['host'], row['lifecycle'],
                         ', DELETED' if row['deleted_at'] else ''))
        return row

    # -- the scenario ----------------------------------------------------

    def run(self):
        t = self.test
        c, k = self.controller, self.compute1
        done, skipped = ('done',), ('skipped',)
        for name, specs in FLAVORS.items():
            self.flavors[name] = t.create_vtpm_flavor(
                name=name, extra_specs=specs)
        self.say('flavors: %s' % ', '.join(
            '%s %s' % (n, s or '(no vTPM)') for n, s in FLAVORS.items()))

        s1 = self._step(
            'boot s1 (vtpm.crb.host) on compute1',
            lambda: t.boot(self.flavors['vtpm.crb.host'], host='compute1'),
            lambda server: [(c, server['id'], 'boot', done),
                            (k, server['id'], 'boot', done)])
        u1 = s1['id']
        self._inventory(u1)

        s2 = t.boot(self.flavors['vtpm.tis.host'], host='compute2')
        u2 = s2['id']
        s3 = t.boot(self.flavors['plain'], host='compute1')
        u3 = s3['id']
        s4 = t.boot(self.flavors['plain'], host='compute1',
                    image_props={'hw_tpm_version': '2.0',
                                 'hw_tpm_model': 'tpm-crb'})
        u4 = s4['id']
        s5 = t.boot(self.flavors['vtpm.12.user'], host='compute2')
        u5 = s5['id']
        self._step('boot s2 (vtpm.tis.host, compute2), s3 (no vTPM), s4 '
                   '(vTPM from the image only), s5 (TPM 1.2, user mode)',
                   lambda: None,
                   [(c, u2, 'boot', done), (c, u3, 'boot', skipped),
                    (c, u4, 'boot', done), (c, u5, 'boot', done),
                    (k, u2, 'boot', skipped), (k, u4, 'boot', done)])
        for uuid in (u2, u4, u5):
            self._inventory(uuid)

        self._step('reboot s1', lambda: t.reboot(s1),
                   [(c, u1, 'reboot', done), (k, u1, 'reboot', done)])

        self._step('resize s2 to vtpm.crb.host and confirm',
                   lambda: (t.resize(s2, self.flavors['vtpm.crb.host']),
                            t.confirm_resize(s2)),
                   [(c, u2, 'resize_finish', done),
                    (c, u2, 'resize_confirm', done)])
        self._inventory(u2)

        self._step('live-migrate s1 compute1 -> compute2 (host mode)',
                   lambda: t.live_migrate(s1, 'compute2'),
                   [(c, u1, 'live_migration_pre', done),
                    (c, u1, 'live_migration_post_dest', done),
                    (c, u1, 'live_migration_post', done),
                    (k, u1, 'live_migration_post', done),
                    (k, u1, 'live_migration_post_dest', skipped)])
        self._inventory(u1)

        s6 = t.boot(self.flavors['vtpm.tis.host'], host='compute2')
        u6 = s6['id']
        self._step('live-migrate s6 (vtpm.tis.host) compute2 -> compute1, '
                   'made to fail (rollback)',
                   lambda: t.live_migrate_fail(s6, 'compute1'),
                   [(c, u6, 'live_migration_rollback', done),
                    (c, u6, 'live_migration_rollback_dest', done),
                    (k, u6, 'live_migration_rollback_dest', done)])
        self._inventory(u6)

        servers = (s1, s2, s3, s4, s5, s6)
        nova_hosts = {s['id']: t.server_host(s) for s in servers}
        self.say('')
        self.say('Nova says: %s' % ', '.join(
            '%s on %s' % kv for kv in nova_hosts.items()))
        self._step('delete every server',
                   lambda: [t.delete(s) for s in (s1, s2, s3, s4, s5, s6)],
                   [(c, u, 'delete', done) for u in (u1, u2, u4, u5, u6)] +
                   [(c, u3, 'delete', skipped)])
        rows = {u: self._inventory(u) for u in (u1, u2, u4, u5, u6)}
        return {'uuids': {'s1': u1, 's2': u2, 's3': u3, 's4': u4,
                          's5': u5, 's6': u6}, 'inventory': rows,
                'nova_hosts': nova_hosts}
