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

import json
import os

import fixtures
from oslotest import base

from nova_vtpm import exception
from nova_vtpm import policy

SHA256 = 'ab' * 32


class TPMPolicyTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path

    def _write(self, content):
        path = os.path.join(self.tmp, 'p.json')
        with open(path, 'w') as f:
            f.write(content if isinstance(content, str)
                    else json.dumps(content))
        return path

    def test_mask_computed(self):
        p = policy.validate_tpm_policy('boot', {'0': [SHA256],
                                                '7': [SHA256.upper()]})
        self.assertEqual({'0': [SHA256], '7': [SHA256], 'mask': '0x81'}, p)

    def test_empty_policy(self):
        self.assertEqual({'mask': '0x0'}, policy.validate_tpm_policy('n', {}))

    def test_declared_mask_kept_if_covering(self):
        p = policy.validate_tpm_policy('b', {'mask': '0x180', '7': [SHA256]})
        self.assertEqual('0x180', p['mask'])

    def test_errors(self):
        for name, body, text in (
                ('b', {'mask': '0x1', '7': [SHA256]}, 'leaves out'),
                ('b', {'24': [SHA256]}, 'not a PCR number'),
                ('b', {'x': [SHA256]}, 'not a PCR number'),
                ('b', {'7': []}, 'one or more hex digests'),
                ('b', {'7': ['zz']}, 'one or more hex digests'),
                ('b', {'mask': 7}, 'hex string'),
                ('b', [], 'JSON object'),
                ('-b', {}, 'not a valid policy name')):
            e = self.assertRaises(ValueError, policy.validate_tpm_policy,
                                  name, body)
            self.assertIn(text, str(e))

    def test_load(self):
        path = self._write({'boot': {'7': [SHA256]}, 'none': {}})
        self.assertEqual({'boot', 'none'},
                         set(policy.load_tpm_policies(path)))

    def test_load_errors_name_the_file(self):
        for content, text in (('{', 'not valid JSON'),
                              ('[]', 'one JSON object'),
                              ({'b': {'99': [SHA256]}}, 'not a PCR number')):
            path = self._write(content)
            e = self.assertRaises(exception.PolicyFileError,
                                  policy.load_tpm_policies, path)
            self.assertIn(path, str(e))
            self.assertIn(text, str(e))
            self.assertIn('tpm_policy_file', str(e))

    def test_missing_file(self):
        e = self.assertRaises(exception.PolicyFileError,
                              policy.load_tpm_policies,
                              os.path.join(self.tmp, 'absent.json'))
        self.assertIn('No such file', str(e))
