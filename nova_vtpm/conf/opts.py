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

"""Feeds oslo-config-generator (entry point ``oslo.config.opts``)."""

from nova_vtpm.conf import _MODULES


def list_opts():
    """Return (group, options) pairs for every nova-vtpm option."""
    result = []
    for module in _MODULES:
        for group, opts in module.list_opts().items():
            result.append((group, opts))
    # Each installed hook's own options, in its own group.
    from nova_vtpm.hooks import manager
    result.extend(manager.list_hook_opts())
    return result
