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

"""A base for functional tests that run a real, in-process Nova.

Nova's test ``ConfFixture`` sets ``[wsgi] api_paste_config`` to
``$state_path/etc/nova/api-paste.ini``, and ``$state_path`` defaults to the
directory holding the ``nova`` package, i.e. ``site-packages``. That is
right in a Nova source tree but not for the nova wheel, which installs the
file as data under ``<sys.prefix>/etc/nova/api-paste.ini``. Left alone,
``OSAPIFixture`` fails every test in ``setUp`` with ``ConfigNotFound:
Could not find config at .../site-packages/etc/nova/api-paste.ini``.

:class:`APIPasteConfigFixture` points the option at the installed file
through oslo.config's environment source (``OS_WSGI__API_PASTE_CONFIG``).
The environment wins over the default that ``ConfFixture`` sets, and it can
be in place before Nova's ``setUp`` starts the API.
"""

import os
import sys
import sysconfig

import fixtures
import nova.conf
from nova.tests.functional import integrated_helpers

CONF = nova.conf.CONF

API_PASTE_CONFIG_ENV = 'OS_WSGI__API_PASTE_CONFIG'
_API_PASTE_CONFIG = os.path.join('etc', 'nova', 'api-paste.ini')


def find_api_paste_config():
    """Return the path of the api-paste.ini the nova wheel installed.

    The wheel installs it as data, relative to the installation prefix:
    ``sys.prefix`` in a virtualenv or a system install, the ``data`` scheme
    path for other schemes (e.g. a ``--user`` install).

    :raises RuntimeError: if no such file exists.
    """
    candidates = []
    for prefix in (sys.prefix, sysconfig.get_path('data')):
        if prefix:
            path = os.path.join(prefix, _API_PASTE_CONFIG)
            if path not in candidates:
                candidates.append(path)
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise RuntimeError(
        'Cannot find the api-paste.ini installed by nova (looked at %s); '
        'install nova from its wheel or sdist into this environment.' %
        ', '.join(candidates))


class APIPasteConfigFixture(fixtures.Fixture):
    """Point ``[wsgi] api_paste_config`` at the installed api-paste.ini."""

    def __init__(self, path=None):
        super().__init__()
        self.path = path

    def _setUp(self):
        if self.path is None:
            self.path = find_api_paste_config()
        self.useFixture(
            fixtures.EnvironmentVariable(API_PASTE_CONFIG_ENV, self.path))


class NovaVTPMFunctionalTestCase(integrated_helpers._IntegratedTestBase):
    """An ``_IntegratedTestBase`` whose API finds its paste config.

    Subclasses set ``ADMIN_API``, ``microversion`` etc. as for Nova's own
    functional tests.
    """

    def setUp(self):
        # Before Nova's setUp: that is where OSAPIFixture loads the API.
        self.api_paste_config = self.useFixture(
            APIPasteConfigFixture()).path
        super().setUp()
        # Guard against anything (a flag, a config file) winning over the
        # environment: the API would then run from another paste file.
        self.assertEqual(self.api_paste_config, CONF.wsgi.api_paste_config)
