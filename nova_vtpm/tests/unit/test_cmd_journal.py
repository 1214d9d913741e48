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

"""``nova-vtpm events`` and ``nova-vtpm instances`` on a real journal."""

import json
import os
import subprocess
import sys

import fixtures
from oslotest import base

from nova_vtpm import journal as journal_mod


class JournalCommandsTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        tmp = self.useFixture(fixtures.TempDir()).path
        url = 'sqlite:///' + os.path.join(tmp, 'j.sqlite')
        self.conf = os.path.join(tmp, 'nova.conf')
        with open(self.conf, 'w') as f:
            f.write('[nova_vtpm_journal]\nconnection = %s\n' % url)
        self.j = journal_mod.Journal(url)
        self.j.upgrade()
        self.ok, _ = self.j.record_event(
            'm1', 'instance.create.end', {'x': 1}, instance_uuid='u1',
            host='compute1', lifecycle='boot')
        self.bad, _ = self.j.record_event(
            'm2', 'frobnicate', 'junk', state='rejected',
            reason='unknown event type')
        self.failed, _ = self.j.record_event(
            'm3', 'instance.create.end', {}, hooks=['inventory'],
            instance_uuid='u2')
        (w,) = self.j.claim_work('me', 60)
        self.j.finish_work(w['id'], 'me', 'failed', 'bad data')
        self.j.put_instance('u1', host='compute1', vtpm_version='2.0',
                            vtpm_model='tpm-crb', secret_security='host',
                            lifecycle='boot')

    def cli(self, *args):
        proc = subprocess.run(
            [sys.executable, '-m', 'nova_vtpm.cmd.cli', '--config-file',
             self.conf] + list(args), capture_output=True, text=True,
            timeout=60)
        return proc.returncode, proc.stdout, proc.stderr

    def test_events_list_json_and_filters(self):
        rc, out, err = self.cli('events', 'list', '--format', 'json')
        self.assertEqual(0, rc, err)
        self.assertEqual([self.failed, self.bad, self.ok],
                         [e['id'] for e in json.loads(out)])
        rc, out, _ = self.cli('events', 'list', '--state', 'rejected',
                              '--format', 'json')
        (event,) = json.loads(out)
        self.assertEqual('unknown event type', event['reason'])
        rc, out, _ = self.cli('events', 'list', '--instance', 'u1',
                              '--format', 'json')
        self.assertEqual([self.ok], [e['id'] for e in json.loads(out)])

    def test_events_table(self):
        rc, out, err = self.cli('events', 'list')
        self.assertEqual(0, rc, err)
        self.assertIn('frobnicate', out)
        self.assertIn('rejected', out)

    def test_events_show_and_retry(self):
        rc, out, err = self.cli('events', 'show', str(self.failed),
                                '--format', 'json')
        self.assertEqual(0, rc, err)
        event = json.loads(out)
        self.assertEqual('failed', event['state'])
        self.assertEqual('bad data', event['work'][0]['reason'])
        rc, out, err = self.cli('events', 'show', str(self.failed))
        self.assertIn('inventory', out)
        rc, out, err = self.cli('events', 'retry', str(self.failed))
        self.assertEqual(0, rc, err)
        self.assertEqual('pending', self.j.get_event(self.failed)['state'])
        rc, out, err = self.cli('events', 'retry', str(self.ok))
        self.assertEqual(1, rc)

    def test_unknown_event(self):
        rc, out, err = self.cli('events', 'show', '999')
        self.assertEqual(2, rc)
        self.assertIn('no event 999', err)

    def test_instances(self):
        rc, out, err = self.cli('instances', 'list', '--format', 'json')
        self.assertEqual(0, rc, err)
        (row,) = json.loads(out)
        self.assertEqual(('u1', 'compute1', 'tpm-crb'),
                         (row['uuid'], row['host'], row['vtpm_model']))
        rc, out, err = self.cli('instances', 'list')
        self.assertIn('2.0 tpm-crb', out)
        rc, out, err = self.cli('instances', 'show', 'u1')
        self.assertEqual(0, rc)
        self.assertIn('secret_security', out)
        rc, out, err = self.cli('instances', 'show', 'u1', '--format',
                                'json')
        self.assertIsNone(json.loads(out)['ek_fingerprint'])
        self.j.put_identity('u1', fingerprint='ab' * 32)
        rc, out, err = self.cli('instances', 'show', 'u1', '--format',
                                'json')
        self.assertEqual('ab' * 32, json.loads(out)['ek_fingerprint'])
        rc, out, err = self.cli('instances', 'show', 'nope')
        self.assertEqual(2, rc)

    def test_missing_journal_is_not_created(self):
        missing = self.conf + '.absent.sqlite'
        with open(self.conf, 'w') as f:
            f.write('[nova_vtpm_journal]\nconnection = sqlite:///%s\n'
                    % missing)
        rc, out, err = self.cli('events', 'list')
        self.assertEqual(2, rc)
        self.assertIn('no journal at', err)
        self.assertFalse(os.path.exists(missing))

    def test_reconcile_without_credentials_is_clear(self):
        rc, out, err = self.cli('reconcile', '--once')
        self.assertEqual(2, rc)
        self.assertIn('[nova_vtpm_service]', err)
        self.assertNotIn('Traceback', err)
