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

"""The tempest options of nova-vtpm's tempest plugin.

``[service_available] nova_vtpm`` says whether nova-vtpm is deployed at all;
``[nova_vtpm]`` says where its command line is; each flag of
``[nova_vtpm_feature_enabled]`` turns on the tests that need one capability,
so that every test skips cleanly, with the flag's name, where the
deployment does not have it. devstack's nova-vtpm plugin sets them all.
"""

from oslo_config import cfg

service_option = cfg.BoolOpt(
    'nova_vtpm', default=False,
    help='Whether nova-vtpm is deployed next to Nova.')

nova_vtpm_group = cfg.OptGroup(
    name='nova_vtpm', title='nova-vtpm options')

NovaVTPMGroup = [
    cfg.StrOpt(
        'cli_path', default='nova-vtpm',
        help='The nova-vtpm command on the host where tempest runs (in '
             'devstack gates, the controller).'),
    cfg.StrOpt(
        'config_file', default='/etc/nova/nova.conf',
        help="The configuration file the nova-vtpm command reads: the one "
             "with the controller agent's journal."),
    cfg.IntOpt(
        'cli_timeout', default=60, min=1,
        help='Seconds one nova-vtpm command may take.'),
    cfg.IntOpt(
        'journal_timeout', default=120, min=1,
        help="Seconds to wait for the agent's journal to show a server's "
             "lifecycle event after Nova finished it."),
    cfg.IntOpt(
        'attestation_timeout', default=300, min=1,
        help='Seconds to wait for a server to be enrolled and attested.'),
    cfg.FloatOpt(
        'poll_interval', default=2.0, min=0.1,
        help='Seconds between two looks at the journal.'),
]

feature_group = cfg.OptGroup(
    name='nova_vtpm_feature_enabled',
    title='nova-vtpm features to test')

FeatureGroup = [
    cfg.BoolOpt(
        'cli', default=False,
        help='The nova-vtpm command runs on the tempest host '
             '(``[nova_vtpm] cli_path``): the "nova-vtpm check" tests.'),
    cfg.BoolOpt(
        'agent', default=False,
        help="A controller agent consumes Nova's notifications and its "
             "journal is readable with ``[nova_vtpm] config_file``."),
    cfg.BoolOpt(
        'attestation', default=False,
        help='The keylime hook runs and guests register with Keylime: '
             'servers that ask for attestation are enrolled and attested.'),
    cfg.BoolOpt(
        'live_migration', default=False,
        help='Two computes that can live-migrate vTPM servers in the '
             '``host`` secret security mode.'),
    cfg.BoolOpt(
        'state_guard', default=False,
        help="The compute agents' swtpm_state hook records each vTPM's EK "
             "identity."),
]


def list_groups():
    """(group, options) for each group the plugin registers."""
    return [(nova_vtpm_group, NovaVTPMGroup), (feature_group, FeatureGroup)]
