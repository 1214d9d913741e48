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

"""``nova-vtpm migration preflight``: the checks and the command."""

import io
import json
import os
import time
from unittest import mock

import fixtures
from novaclient import exceptions as nova_exc
from oslo_config import cfg
from oslotest import base

from nova_vtpm.cmd import cli
from nova_vtpm import conf as nova_vtpm_conf
from nova_vtpm import journal as journal_mod
from nova_vtpm import preflight
from nova_vtpm import tpm

UUID = '0d6a0c6b-6d3a-4a4e-9a59-3c0b8c7e0f01'
NOW = 1_800_000_000.0


def host_facts(host, libtpms='0.9.2', swtpm='0.7.1', fstype='ext4',
               features=('tpm-1.2', 'tpm-2.0'), **kw):
    facts = {
        'format': 1, 'host': host, 'collected_at': NOW,
        'swtpm_available': True, 'swtpm_version': swtpm,
        'libtpms_version': libtpms, 'swtpm_features': list(features),
        'swtpm_setup_features': [], 'tpm_versions': ['1.2', '2.0'],
        'swtpm_enabled': True,
        'supported_tpm_secret_security': ['user', 'host', 'deployment'],
        'libtpms_profiles': False,
        'available_profiles': [{'name': 'null'}],
        'state_root_fstype': fstype,
        'state_root_shared': fstype in ('nfs4', 'cephfs'),
    }
    facts.update(kw)
    return facts


def row(facts, age=10):
    return {'host': facts['host'], 'facts': facts, 'updated_at': NOW - age}


def server(mode='host', host='src', version='2.0', task_state=None):
    return preflight.ServerInfo(UUID, host, tpm.VTPM(version, 'tpm-crb',
                                                     mode),
                                'journal', task_state=task_state)


def statuses(verdict):
    return {c.name: c.status for c in verdict.checks}


def reasons(verdict, name):
    return [c.reason for c in verdict.checks if c.name == name][0]


class VersionTest(base.BaseTestCase):

    def test_compare(self):
        c = preflight.compare_versions
        self.assertEqual(0, c('0.9.2', '0.9.2'))
        self.assertEqual(0, c('0.9', '0.9.0'))
        self.assertEqual(-1, c('0.9.6', '0.10.0'))
        self.assertEqual(1, c('0.10.0', '0.9.6'))
        self.assertEqual(1, c('0.9.10', '0.9.9'))
        self.assertEqual(-1, c('0.9.2~rc1', '0.9.3'))
        self.assertIsNone(c(None, '0.9'))
        self.assertIsNone(c('abc', '0.9'))


class EvaluateTest(base.BaseTestCase):

    def evaluate(self, srv=None, dest='dst', dest_facts=None,
                 source_facts=None, migration_type='live', dest_age=10,
                 **kw):
        dest_row = row(dest_facts or host_facts(dest), dest_age) \
            if dest_facts is not False else None
        source_row = row(source_facts or host_facts('src')) \
            if source_facts is not False else None
        return preflight.evaluate(srv or server(), dest, dest_row,
                                  source_row, migration_type, now=NOW,
                                  max_age=1800, **kw)

    def test_compatible(self):
        verdict = self.evaluate()
        self.assertTrue(verdict.ok, verdict.checks)
        self.assertEqual(
            {'facts': 'ok', 'swtpm_enabled': 'ok', 'tpm_version': 'ok',
             'secret_security': 'ok', 'libtpms': 'ok', 'profile': 'ok',
             'shared_storage': 'ok'}, statuses(verdict))
        self.assertEqual([], verdict.reasons)

    def test_older_libtpms_refused(self):
        verdict = self.evaluate(dest_facts=host_facts('dst',
                                                      libtpms='0.8.2'))
        self.assertFalse(verdict.ok)
        self.assertEqual('fail', statuses(verdict)['libtpms'])
        self.assertIn('libtpms on dst (0.8.2) is older than on the source '
                      'src (0.9.2)', reasons(verdict, 'libtpms'))
        self.assertIn('cannot be read by an older one', verdict.reasons[0])

    def test_newer_libtpms_accepted(self):
        self.assertTrue(self.evaluate(
            dest_facts=host_facts('dst', libtpms='0.9.6')).ok)

    def test_no_facts(self):
        verdict = self.evaluate(dest_facts=False)
        self.assertFalse(verdict.ok)
        self.assertEqual({'facts': 'unknown'}, statuses(verdict))
        self.assertIn('never published', verdict.reasons[0])

    def test_stale_facts(self):
        verdict = self.evaluate(dest_age=4000)
        self.assertFalse(verdict.ok)
        self.assertEqual('fail', statuses(verdict)['facts'])
        self.assertIn('4000 s old', verdict.reasons[0])

    def test_no_swtpm(self):
        verdict = self.evaluate(dest_facts=host_facts(
            'dst', swtpm_available=False, swtpm_error='swtpm: not found'))
        self.assertFalse(verdict.ok)
        self.assertIn('swtpm does not run on dst: swtpm: not found',
                      verdict.reasons[0])

    def test_swtpm_disabled(self):
        verdict = self.evaluate(dest_facts=host_facts(
            'dst', swtpm_enabled=False))
        self.assertEqual('fail', statuses(verdict)['swtpm_enabled'])
        self.assertFalse(verdict.ok)

    def test_tpm_version(self):
        verdict = self.evaluate(srv=server(version='1.2'),
                                dest_facts=host_facts(
                                    'dst', tpm_versions=['2.0']))
        self.assertEqual('fail', statuses(verdict)['tpm_version'])

    def test_mode_not_supported(self):
        verdict = self.evaluate(dest_facts=host_facts(
            'dst', supported_tpm_secret_security=['user']))
        self.assertFalse(verdict.ok)
        self.assertIn("does not support secret security 'host'",
                      reasons(verdict, 'secret_security'))

    def test_live_migration_only_in_host_mode(self):
        for mode in ('user', 'deployment'):
            verdict = self.evaluate(srv=server(mode))
            self.assertFalse(verdict.ok, mode)
            reason = reasons(verdict, 'secret_security')
            self.assertIn("Operation 'live-migration' not supported for "
                          'vTPM-enabled instance (%s).' % UUID, reason)
            self.assertIn("this server has '%s'" % mode, reason)

    def test_live_mode_refusal_even_without_facts(self):
        verdict = self.evaluate(srv=server('user'), dest_facts=False)
        self.assertEqual({'facts': 'unknown', 'secret_security': 'fail'},
                         statuses(verdict))

    def test_cold_migration_modes(self):
        verdict = self.evaluate(srv=server('deployment'),
                                migration_type='cold')
        self.assertTrue(verdict.ok)
        self.assertNotIn('shared_storage', statuses(verdict))
        verdict = self.evaluate(srv=server('user'), migration_type='cold')
        self.assertTrue(verdict.ok)
        self.assertEqual('warn', statuses(verdict)['secret_security'])
        self.assertIn('only the server\'s owner',
                      reasons(verdict, 'secret_security'))

    def test_source_facts_unknown_blocks(self):
        verdict = self.evaluate(source_facts=False)
        self.assertFalse(verdict.ok)
        self.assertEqual('unknown', statuses(verdict)['libtpms'])
        self.assertIn('no facts from the source host src',
                      reasons(verdict, 'libtpms'))

    def test_shared_storage_lock_hazard(self):
        verdict = self.evaluate(
            dest_facts=host_facts('dst', fstype='nfs4'),
            source_facts=host_facts('src', fstype='nfs4'))
        self.assertFalse(verdict.ok)
        reason = reasons(verdict, 'shared_storage')
        self.assertIn('shared storage (nfs4)', reason)
        self.assertIn('lacks cmdarg-migration', reason)
        self.assertIn('0.7.1 on src, 0.7.1 on dst', reason)
        # Only one side shared: a copy, no hazard.
        self.assertTrue(self.evaluate(
            dest_facts=host_facts('dst', fstype='nfs4')).ok)
        # Both with cmdarg-migration (swtpm >= 0.8): fine.
        new = ('tpm-2.0', 'cmdarg-migration')
        self.assertTrue(self.evaluate(
            dest_facts=host_facts('dst', fstype='nfs4', features=new,
                                  swtpm='0.8.2'),
            source_facts=host_facts('src', fstype='nfs4', features=new,
                                    swtpm='0.8.2')).ok)
        # Cold: not checked.
        self.assertTrue(self.evaluate(
            dest_facts=host_facts('dst', fstype='nfs4'),
            source_facts=host_facts('src', fstype='nfs4'),
            migration_type='cold').ok)

    def test_profiles(self):
        prof = dict(libtpms_profiles=True, available_profiles=[
            {'name': 'default-v1'}, {'name': 'null'}])
        src = host_facts('src', libtpms='0.10.0', **prof)
        # Destination without profiles.
        verdict = self.evaluate(source_facts=src, dest_facts=host_facts(
            'dst', libtpms='0.10.0'))
        self.assertEqual('fail', statuses(verdict)['profile'])
        # Destination with a smaller set.
        verdict = self.evaluate(source_facts=src, dest_facts=host_facts(
            'dst', libtpms='0.10.1', libtpms_profiles=True,
            available_profiles=[{'name': 'null'}]))
        self.assertIn('default-v1', reasons(verdict, 'profile'))
        self.assertFalse(verdict.ok)
        self.assertTrue(self.evaluate(source_facts=src, dest_facts=dict(
            host_facts('dst', libtpms='0.10.1'), **prof)).ok)

    def test_same_host_and_busy_server(self):
        verdict = self.evaluate(dest='src', dest_facts=host_facts('src'))
        self.assertEqual('fail', statuses(verdict)['destination'])
        verdict = self.evaluate(srv=server(task_state='migrating'))
        self.assertEqual('warn', statuses(verdict)['server_state'])
        self.assertTrue(verdict.ok)


class PreflightTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.url = 'sqlite:///' + os.path.join(self.tmp, 'j.sqlite')
        self.conf_file = os.path.join(self.tmp, 'nova.conf')
        with open(self.conf_file, 'w') as f:
            f.write('[nova_vtpm_journal]\nconnection = %s\n' % self.url)
        self.conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(self.conf)
        self.conf(['--config-file', self.conf_file],
                  default_config_files=[])
        self.journal = journal_mod.Journal(self.url)
        self.journal.upgrade()
        now = time.time()
        for f in (host_facts('src'), host_facts('dst'),
                  host_facts('old', libtpms='0.8.2')):
            self.journal.put_host_facts(f['host'], f, updated_at=now)
        self.journal.put_instance(UUID, host='src', vtpm_version='2.0',
                                  vtpm_model='tpm-crb',
                                  secret_security='host')

    def test_every_host(self):
        report = preflight.preflight(self.conf, self.journal, UUID)
        self.assertTrue(report.ok)
        self.assertEqual(['dst'], report.accepting)
        self.assertEqual(['dst', 'old'],
                         [v.destination for v in report.verdicts])
        self.assertIn('Nova is not configured', report.warnings[0])
        self.assertEqual('journal', report.server.source)

    def test_deleted_or_unknown_server(self):
        self.assertRaises(preflight.ServerNotFound, preflight.preflight,
                          self.conf, self.journal, UUID.replace('0d', 'ff'))
        self.journal.put_instance(UUID, deleted_at=time.time())
        e = self.assertRaises(preflight.ServerNotFound, preflight.preflight,
                              self.conf, self.journal, UUID)
        self.assertIn('deleted', str(e))

    def test_no_vtpm(self):
        self.journal.put_instance(UUID, vtpm_version=None)
        report = preflight.preflight(self.conf, self.journal, UUID, 'old')
        self.assertTrue(report.ok)
        self.assertEqual([], report.verdicts)

    def test_from_nova(self):
        clients = mock.Mock(configured=True)
        srv = mock.Mock()
        srv.to_dict.return_value = {
            'id': UUID, 'OS-EXT-SRV-ATTR:host': 'src', 'tenant_id': 'p',
            'OS-EXT-STS:vm_state': 'active', 'OS-EXT-STS:task_state': None,
            'flavor': {'original_name': 'f', 'extra_specs': {
                'hw:tpm_version': '2.0', 'hw:tpm_model': 'tpm-crb',
                'hw:tpm_secret_security': 'deployment'}},
            'image': {'id': 'img'}}
        clients.nova.return_value.servers.get.return_value = srv
        clients.image_properties.return_value = ('img', {})
        report = preflight.preflight(self.conf, self.journal, UUID, 'dst',
                                     clients=clients)
        self.assertEqual('nova', report.server.source)
        self.assertEqual('deployment', report.server.vtpm.secret_security)
        self.assertFalse(report.ok)        # live migration, deployment
        cold = preflight.preflight(self.conf, self.journal, UUID, 'dst',
                                   clients=clients, migration_type='cold')
        self.assertTrue(cold.ok)

    def test_from_nova_glance_down(self):
        # The vTPM comes from the image, and Glance does not answer: the
        # inventory's record is used, and the report says why.
        from nova_vtpm.clients import openstack
        clients = mock.Mock(configured=True)
        srv = mock.Mock()
        srv.to_dict.return_value = {
            'id': UUID, 'OS-EXT-SRV-ATTR:host': 'src',
            'flavor': {'extra_specs': {}}, 'image': {'id': 'img'}}
        clients.nova.return_value.servers.get.return_value = srv
        clients.image_properties.side_effect = openstack.ServiceUnavailable(
            service='Glance', reason='down', group='g')
        report = preflight.preflight(self.conf, self.journal, UUID, 'dst',
                                     clients=clients)
        self.assertEqual('nova', report.server.source)
        self.assertEqual('host', report.server.vtpm.secret_security)
        self.assertIn('Glance did not answer', report.warnings[0])
        self.assertTrue(report.ok)

    def test_nova_not_found_and_unreachable(self):
        clients = mock.Mock(configured=True)
        servers = clients.nova.return_value.servers
        servers.get.side_effect = nova_exc.NotFound(404)
        self.assertRaises(preflight.ServerNotFound, preflight.preflight,
                          self.conf, self.journal, UUID, clients=clients)
        servers.get.side_effect = ConnectionError('refused')
        report = preflight.preflight(self.conf, self.journal, UUID, 'dst',
                                     clients=clients)
        self.assertEqual('journal', report.server.source)
        self.assertIn('Nova is unreachable (ConnectionError: refused)',
                      report.warnings[0])
        self.assertRaises(preflight.ServerNotFound, preflight.preflight,
                          self.conf, self.journal, UUID, clients=clients,
                          source='nova')

    # -- the command ------------------------------------------------------

    def cli(self, *args):
        out = io.StringIO()
        err = io.StringIO()
        with mock.patch('sys.stdout', out), mock.patch('sys.stderr', err):
            try:
                rc = cli.main(['--config-file', self.conf_file, 'migration',
                               'preflight'] + list(args))
            except SystemExit as e:
                rc = e.code
        return rc, out.getvalue(), err.getvalue()

    def test_cli_exit_codes(self):
        rc, out, _ = self.cli(UUID, '--destination', 'dst')
        self.assertEqual(0, rc, out)
        self.assertIn('Destination dst: YES', out)
        self.assertIn('Answer: yes', out)
        rc, out, _ = self.cli(UUID, '--destination', 'old')
        self.assertEqual(1, rc)
        self.assertIn('FAIL  libtpms', out)
        self.assertIn('Answer: no', out)
        rc, out, _ = self.cli(UUID)
        self.assertEqual(0, rc)
        self.assertIn('hosts that can take it: dst', out)
        rc, out, _ = self.cli(UUID, '--destination', 'old', '--format',
                              'json')
        self.assertEqual(1, rc)
        data = json.loads(out)
        self.assertEqual('no', data['answer'])
        self.assertEqual('fail', {c['check']: c['status'] for c in
                                  data['verdicts'][0]['checks']}['libtpms'])
        rc, _, err = self.cli('not-a-uuid')
        self.assertEqual(2, rc)
        self.assertIn('is not a server UUID', err)
        rc, _, err = self.cli(UUID.replace('0d', 'ff'))
        self.assertEqual(2, rc)
        self.assertIn('no live vTPM server', err)
        rc, _, _ = self.cli(UUID, '--type', 'sideways')
        self.assertEqual(2, rc)

    def test_cli_nobody_can_take_it(self):
        self.journal.put_instance(UUID, secret_security='user')
        rc, out, _ = self.cli(UUID)
        self.assertEqual(1, rc)
        self.assertIn('Answer: no; no host can take it', out)
        self.assertIn("Operation 'live-migration' not supported", out)
