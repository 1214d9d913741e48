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

"""``nova-vtpm attestation list|show`` on a journal the keylime hook wrote."""

import io
import json
import os

import fixtures
from oslo_config import cfg
from oslotest import base
from requests_mock.contrib import fixture as rm_fixture

from nova_vtpm.cmd import cli
from nova_vtpm import conf as nova_vtpm_conf
from nova_vtpm import journal as journal_mod

VER = 'https://verifier.example:8881'
U1 = '11111111-1111-4111-8111-111111111111'
U2 = '22222222-2222-4222-8222-222222222222'
U3 = '33333333-3333-4333-8333-333333333333'


class AttestationCommandTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        tmp = self.useFixture(fixtures.TempDir()).path
        self.url = 'sqlite:///' + os.path.join(tmp, 'j.sqlite')
        self.conf_file = os.path.join(tmp, 'nova.conf')
        with open(self.conf_file, 'w') as f:
            f.write('[nova_vtpm_journal]\nconnection = %s\n'
                    '[nova_vtpm_keylime]\nverifier_url = %s\n'
                    'registrar_url = https://registrar.example:8891\n'
                    'retries = 0\n' % (self.url, VER))
        j = journal_mod.Journal(self.url)
        j.upgrade()
        j.put_attestation(U1, state='enrolled', mode='required',
                          host='compute1', operational_state=3,
                          operational_state_name='Get Quote',
                          attestation_status='PASS', attestation_count=42,
                          last_success=1_800_000_000.0, tpm_policy='pcr23')
        j.put_attestation(U2, state='refused', mode='required',
                          last_failure_reason='Refused to enrol: the EK '
                          'certificate belongs to instance ' + U1 + ' ' +
                          'x' * 80, action='lock')
        j.put_attestation(U3, state='removed', mode='optional')
        j.engine.dispose()

    def run_cli(self, *args):
        parsed = cli.build_parser().parse_args(
            ['--config-file', self.conf_file, 'attestation'] + list(args))
        conf = cfg.ConfigOpts()
        nova_vtpm_conf.register_opts(conf)
        cli.load_config(parsed, conf)
        out, err = io.StringIO(), io.StringIO()
        with fixtures.MonkeyPatch('sys.stdout', out), \
                fixtures.MonkeyPatch('sys.stderr', err):
            try:
                rc = parsed.func(parsed, conf)
            except SystemExit as e:
                rc = e.code
        return rc, out.getvalue(), err.getvalue()

    def test_list_json(self):
        rc, out, err = self.run_cli('list', '--format', 'json')
        self.assertEqual(0, rc, err)
        rows = json.loads(out)
        self.assertEqual([U1, U2], [r['instance_uuid'] for r in rows])
        self.assertEqual(('enrolled', 'Get Quote', 'PASS', 42),
                         (rows[0]['state'], rows[0]['operational_state_name'],
                          rows[0]['attestation_status'],
                          rows[0]['attestation_count']))
        rc, out, _ = self.run_cli('list', '--all', '--format', 'json')
        self.assertEqual(3, len(json.loads(out)))
        rc, out, _ = self.run_cli('list', '--state', 'removed', '--format',
                                  'json')
        self.assertEqual([U3], [r['instance_uuid'] for r in json.loads(out)])

    def test_list_table(self):
        rc, out, err = self.run_cli('list')
        self.assertEqual(0, rc, err)
        lines = out.splitlines()
        for title in ('Instance', 'Enrolment', 'Verifier state',
                      'Attestation', 'Count', 'Last success',
                      'Last failure'):
            self.assertIn(title, lines[0])
        self.assertIn('Get Quote (3)', out)
        self.assertIn('2027-01-15 08:00:00', out)
        self.assertIn('refused', out)
        # Long reasons are cut in the table.
        self.assertIn('...', out)
        self.assertNotIn('x' * 80, out)

    def test_show(self):
        rc, out, err = self.run_cli('show', U2)
        self.assertEqual(0, rc, err)
        self.assertIn('x' * 80, out)
        self.assertIn('lock', out)
        rc, out, err = self.run_cli('show', U1, '--format', 'json')
        self.assertEqual('pcr23', json.loads(out)['tpm_policy'])

    def test_show_unknown(self):
        rc, out, err = self.run_cli('show', 'nope')
        self.assertEqual(2, rc)
        self.assertIn('no attestation record', err)

    def test_live(self):
        mock = self.useFixture(rm_fixture.Fixture())
        mock.get(VER + '/version', json={'results': {
            'supported_versions': ['2.6']}})
        mock.get(VER + '/v2.6/agents/', json={'results': {
            U1: {'operational_state': 9, 'attestation_status': 'FAIL',
                 'attestation_count': 43,
                 'last_successful_attestation': 1_800_000_100}}})
        rc, out, err = self.run_cli('list', '--live', '--format', 'json')
        self.assertEqual(0, rc, err)
        rows = {r['instance_uuid']: r for r in json.loads(out)}
        self.assertEqual(('Invalid Quote', 'FAIL', 43),
                         (rows[U1]['operational_state_name'],
                          rows[U1]['attestation_status'],
                          rows[U1]['attestation_count']))
        self.assertEqual('not in verifier',
                         rows[U2]['operational_state_name'])
        mock.get(VER + '/v2.6/agents/' + U1, json={'results': {
            'operational_state': 3, 'attestation_status': 'PASS',
            'attestation_count': 44}})
        rc, out, err = self.run_cli('show', U1, '--live')
        self.assertEqual(0, rc, err)
        self.assertIn('Get Quote', out)
        mock.get(VER + '/v2.6/agents/', status_code=503)
        rc, out, err = self.run_cli('list', '--live')
        self.assertEqual(2, rc)
        self.assertIn('cannot reach the Keylime verifier', err)
