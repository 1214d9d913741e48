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

"""``nova-vtpm check``, run as a user runs it: a separate process."""

import json
import os
import subprocess
import sys

import fixtures
from oslotest import base


class CheckCommandTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        # An empty configuration: the machine's /etc must not leak in.
        self.conf = os.path.join(self.tmp, 'empty.conf')
        open(self.conf, 'w').close()

    def run_check(self, *args, conf=None):
        cmd = [sys.executable, '-m', 'nova_vtpm.cmd.cli',
               '--config-file', conf or self.conf, 'check'] + list(args)
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=60)
        return proc.returncode, proc.stdout, proc.stderr

    def test_json_ok(self):
        rc, out, err = self.run_check(
            '--format', 'json', '--flavor-spec', 'hw:tpm_version=2.0',
            '--flavor-spec', 'hw:tpm_secret_security=host',
            '--image-prop', 'hw_tpm_model=tpm-crb',
            '--flavor-spec', 'keylime:attestation=required')
        self.assertEqual(0, rc, err)
        doc = json.loads(out)
        self.assertEqual({'version': '2.0', 'model': 'tpm-crb',
                          'secret_security': 'host'}, doc['vtpm'])
        self.assertEqual({'mode': 'required', 'tpm_policy': None,
                          'runtime_policy': None, 'mb_policy': None},
                         doc['attestation'])
        self.assertEqual([], doc['errors'])
        self.assertEqual([], doc['warnings'])

    def test_json_errors_exit_1(self):
        rc, out, err = self.run_check(
            '--format', 'json', '--flavor-name', 'vtpm.small',
            '--image-name', 'win11', '--flavor-spec', 'hw:tpm_version=2.0',
            '--image-prop', 'hw_tpm_version=1.2')
        self.assertEqual(1, rc)
        doc = json.loads(out)
        self.assertIsNone(doc['vtpm'])
        self.assertEqual(
            ['Flavor vtpm.small has hw:tpm_version extra spec explicitly set '
             'to 2.0, conflicting with image win11 which has hw_tpm_version '
             'explicitly set to 1.2.'], doc['errors'])

    def test_table_is_default_and_readable(self):
        rc, out, err = self.run_check('--flavor-spec', 'hw:tpm_model=tpm-crb')
        self.assertEqual(0, rc, err)
        self.assertIn('vTPM:         none', out)
        self.assertIn('Warnings:', out)
        self.assertIn('Nova silently creates no vTPM', out)
        self.assertIn('Result:       OK', out)

    def test_table_failure(self):
        rc, out, err = self.run_check('--flavor-spec', 'hw:tpm_version=3')
        self.assertEqual(1, rc)
        self.assertIn("  - Invalid TPM version '3'. Allowed values: 1.2, "
                      "2.0.", out)
        self.assertIn('Result:       FAILED (1 error)', out)

    def test_empty_value_is_a_value_not_a_usage_error(self):
        rc, out, err = self.run_check('--format', 'json',
                                      '--flavor-spec', 'hw:tpm_version=')
        # Nova's flavor API (2.86+) refuses it; older microversions store
        # it and Nova's boot then treats it as unset.
        self.assertEqual(1, rc, err)
        doc = json.loads(out)
        self.assertEqual(
            ["Validation failed; '' is not one of: 1.2, 2.0."], doc['errors'])
        self.assertIn('empty string', doc['warnings'][0])

    def test_malformed_key_value_is_usage_error(self):
        for bad in ('hw:tpm_version', '=2.0', ' =x'):
            rc, out, err = self.run_check('--flavor-spec', bad)
            self.assertEqual(2, rc, bad)
            self.assertIn('expected KEY=VALUE', err)
            self.assertNotIn('Traceback', err)

    def test_contradicting_duplicate_is_usage_error(self):
        rc, out, err = self.run_check('--flavor-spec', 'hw:tpm_version=2.0',
                                      '--flavor-spec', 'hw:tpm_version=1.2')
        self.assertEqual(2, rc)
        self.assertIn('given twice', err)

    def test_unknown_format_is_usage_error(self):
        rc, out, err = self.run_check('--format', 'yaml')
        self.assertEqual(2, rc)
        self.assertNotIn('Traceback', err)

    def _conf(self, text):
        path = os.path.join(self.tmp, 'nova.conf')
        with open(path, 'w') as f:
            f.write(text)
        return path

    def test_config_default_mode_and_policy_file(self):
        policies = os.path.join(self.tmp, 'policies.json')
        with open(policies, 'w') as f:
            json.dump({'boot': {'7': ['a' * 64]}}, f)
        conf = self._conf('[nova_vtpm_attestation]\ndefault_mode = required'
                          '\ntpm_policy_file = %s\n' % policies)
        rc, out, err = self.run_check(
            '--format', 'json', '--flavor-spec', 'hw:tpm_version=2.0',
            '--flavor-spec', 'keylime:tpm_policy=boot', conf=conf)
        self.assertEqual(0, rc, err)
        self.assertEqual('required', json.loads(out)['attestation']['mode'])
        rc, out, err = self.run_check(
            '--format', 'json', '--flavor-spec', 'hw:tpm_version=2.0',
            '--flavor-spec', 'keylime:tpm_policy=other', conf=conf)
        self.assertEqual(1, rc)
        self.assertIn("TPM policy 'other'", json.loads(out)['errors'][0])

    def test_bad_config_value_is_clear(self):
        conf = self._conf('[nova_vtpm_attestation]\ndefault_mode = always\n')
        rc, out, err = self.run_check('--flavor-spec', 'hw:tpm_version=2.0',
                                      conf=conf)
        self.assertEqual(2, rc)
        self.assertIn('configuration error', err)
        self.assertIn('default_mode', err)
        self.assertNotIn('Traceback', err)

    def test_missing_config_file_is_clear(self):
        rc, out, err = self.run_check(
            conf=os.path.join(self.tmp, 'absent.conf'))
        self.assertEqual(2, rc)
        self.assertIn('configuration error', err)
        self.assertNotIn('Traceback', err)

    def test_broken_policy_file_is_clear(self):
        policies = os.path.join(self.tmp, 'policies.json')
        with open(policies, 'w') as f:
            f.write('{"boot": ')
        conf = self._conf('[nova_vtpm_attestation]\ntpm_policy_file = %s\n'
                          % policies)
        rc, out, err = self.run_check('--flavor-spec', 'hw:tpm_version=2.0',
                                      conf=conf)
        self.assertEqual(2, rc)
        self.assertIn('not valid JSON', err)
        self.assertNotIn('Traceback', err)
