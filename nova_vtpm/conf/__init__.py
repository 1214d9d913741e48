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

"""nova-vtpm configuration.

Every option lives in one of nova-vtpm's own groups (``[nova_vtpm_*]``), so
that the same options can be read from nova.conf, where operators enable
nova-vtpm, or from a file of nova-vtpm's own. One module per group, each
with ``register_opts(conf)`` and ``list_opts()``, as in Nova.
"""

import os

from oslo_config import cfg

from nova_vtpm.conf import agent
from nova_vtpm.conf import attestation
from nova_vtpm.conf import clients
from nova_vtpm.conf import facts
from nova_vtpm.conf import journal
from nova_vtpm.conf import keylime
from nova_vtpm.conf import state

CONF = cfg.CONF

# Read when no --config-file is given, in this order (later files win).
DEFAULT_CONFIG_FILES = (
    '/etc/nova/nova.conf',
    '/etc/nova-vtpm/nova-vtpm.conf',
)

_MODULES = (agent, attestation, clients, journal, keylime, state,
            facts)


def register_opts(conf):
    for module in _MODULES:
        module.register_opts(conf)


def default_config_files():
    return [path for path in DEFAULT_CONFIG_FILES if os.path.exists(path)]


register_opts(CONF)
