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

from oslo_config import cfg


def fresh(group):
    """A new OptGroup like ``group``, to register in one ConfigOpts.

    oslo.config keeps a registered group's option state (overrides) in the
    group object: the same module-level object registered in two
    ConfigOpts would share it.
    """
    return cfg.OptGroup(group.name, title=group.title, help=group.help)
