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

"""The tempest plugin of nova-vtpm (entry point ``tempest.test_plugins``)."""

import os

from tempest import config
from tempest.test_discover import plugins

from nova_vtpm_tempest_plugin import config as plugin_config


class NovaVTPMTempestPlugin(plugins.TempestPlugin):

    def load_tests(self):
        base_path = os.path.split(os.path.dirname(
            os.path.abspath(__file__)))[0]
        test_dir = os.path.join(base_path, 'nova_vtpm_tempest_plugin',
                                'tests')
        return test_dir, base_path

    def register_opts(self, conf):
        conf.register_opt(plugin_config.service_option,
                          group='service_available')
        for group, opts in plugin_config.list_groups():
            config.register_opt_group(conf, group, opts)

    def get_opt_lists(self):
        return ([(group.name, opts)
                 for group, opts in plugin_config.list_groups()] +
                [('service_available', [plugin_config.service_option])])
