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

import subprocess
import sys

from oslo_config import cfg
from oslotest import base

from nova_vtpm.conf import opts


class ConfTest(base.BaseTestCase):

    def test_list_opts_covers_registered_groups(self):
        listed = {group.name: {o.name for o in group_opts}
                  for group, group_opts in opts.list_opts()}
        self.assertIn('nova_vtpm_attestation', listed)
        self.assertEqual({'default_mode', 'tpm_policy_file'},
                         listed['nova_vtpm_attestation'])

    def test_groups_do_not_clash_with_nova(self):
        for group, _ in opts.list_opts():
            self.assertTrue(group.name.startswith('nova_vtpm'), group.name)

    def test_registration_is_idempotent(self):
        from nova_vtpm import conf
        c = cfg.ConfigOpts()
        conf.register_opts(c)
        conf.register_opts(c)
        c([], default_config_files=[])
        self.assertEqual('disabled', c.nova_vtpm_attestation.default_mode)

    def test_generator_writes_a_sample(self):
        out = subprocess.run(
            [sys.executable, '-m', 'oslo_config.generator',
             '--namespace', 'nova_vtpm'],
            capture_output=True, text=True, timeout=60, check=True).stdout
        self.assertIn('[nova_vtpm_attestation]', out)
        self.assertIn('#default_mode = disabled', out)
