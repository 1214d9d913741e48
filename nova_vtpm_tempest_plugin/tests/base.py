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

"""What every nova-vtpm tempest test needs: skips, the CLI, the journal.

The tests read what nova-vtpm knows through its own command line
(``nova-vtpm instances show``, ``nova-vtpm check``) on the host where
tempest runs: in devstack gates that is the controller, where devstack's
nova-vtpm plugin installs the command and points ``[nova_vtpm]`` at it.
"""

import functools
import io
import json
import subprocess
import time

from tempest.api.compute import base
from tempest.common import waiters
from tempest import config
from tempest.lib.common.utils import data_utils

CONF = config.CONF

# Fields of "nova-vtpm instances show --format json" written by hooks other
# than inventory: the keylime hook (attestation) and the swtpm_state hook
# (the vTPM's EK identity). The tests that read them run only with the
# matching [nova_vtpm_feature_enabled] flag.
ATTESTATION_FIELD = 'attestation_state'
ATTESTED = 'attested'
UNENROLLED = 'unenrolled'
EK_FIELD = 'ek_fingerprint'


def requires(*features):
    """Skip the test unless every named feature flag is on."""
    def decorator(func):
        @functools.wraps(func)
        def wrapper(self, *args, **kwargs):
            off = [f for f in features
                   if not getattr(CONF.nova_vtpm_feature_enabled, f)]
            if off:
                raise self.skipException(
                    'needs [nova_vtpm_feature_enabled] %s = True' %
                    ', '.join(off))
            return func(self, *args, **kwargs)
        return wrapper
    return decorator


class CLIResult(object):
    def __init__(self, args, returncode, stdout, stderr):
        self.args = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    def json(self):
        return json.loads(self.stdout)

    def __str__(self):
        return '%s -> exit %d\nstdout: %s\nstderr: %s' % (
            ' '.join(self.args), self.returncode, self.stdout, self.stderr)


class NovaVTPMTestBase(base.BaseV2ComputeAdminTest):
    """Skips unless nova-vtpm and the class's ``features`` are there."""

    # Flags of [nova_vtpm_feature_enabled] every test of the class needs.
    features = ()

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        if not CONF.service_available.nova_vtpm:
            raise cls.skipException(
                'nova-vtpm is not deployed ([service_available] nova_vtpm)')
        off = [f for f in cls.features
               if not getattr(CONF.nova_vtpm_feature_enabled, f)]
        if off:
            raise cls.skipException(
                '%s needs [nova_vtpm_feature_enabled] %s = True' %
                (cls.__name__, ', '.join(off)))

    # The command line.

    def nova_vtpm(self, *args):
        """Run the nova-vtpm command; never raises on a non-zero exit."""
        argv = [CONF.nova_vtpm.cli_path,
                '--config-file', CONF.nova_vtpm.config_file] + list(args)
        proc = subprocess.run(argv, capture_output=True, text=True,
                              timeout=CONF.nova_vtpm.cli_timeout)
        return CLIResult(argv, proc.returncode, proc.stdout, proc.stderr)

    def check(self, flavor_specs, image_props):
        """``nova-vtpm check`` of a flavor x image pair, as JSON."""
        args = ['check', '--format', 'json']
        for key, value in sorted(flavor_specs.items()):
            args += ['--flavor-spec', '%s=%s' % (key, value)]
        for key, value in sorted(image_props.items()):
            args += ['--image-prop', '%s=%s' % (key, value)]
        result = self.nova_vtpm(*args)
        self.assertIn(result.returncode, (0, 1), str(result))
        return result

    def wait_for_record(self, uuid, predicate, what, timeout=None):
        """Poll ``nova-vtpm instances show`` until ``predicate(record)``."""
        timeout = timeout or CONF.nova_vtpm.journal_timeout
        deadline = time.time() + timeout
        last = None
        while True:
            result = self.nova_vtpm('instances', 'show', uuid,
                                    '--format', 'json')
            if result.returncode == 0:
                record = result.json()
                if predicate(record):
                    return record
                last = record
            else:
                last = str(result)
            if time.time() > deadline:
                self.fail('nova-vtpm did not record that %s %s within %d s; '
                          'last seen: %s' % (uuid, what, timeout, last))
            time.sleep(CONF.nova_vtpm.poll_interval)

    # Nova resources.

    def create_vtpm_flavor(self, **extra_specs):
        # The size of devstack's cirros256: enough for the CirrOS image.
        flavor = self.create_flavor(ram=256, vcpus=1, disk=1)
        self.admin_flavors_client.set_flavor_extra_spec(
            flavor['id'], **extra_specs)
        return flavor

    def create_image_with_properties(self, **properties):
        """A small active image with the given properties.

        Its content is not bootable: it is for pairs Nova rejects at
        scheduling, before any compute host downloads it.
        """
        client = self.admin_image_client
        image = client.create_image(
            name=data_utils.rand_name(prefix=CONF.resource_name_prefix,
                                      name='nova-vtpm-image'),
            container_format='bare', disk_format='raw',
            visibility='public', **properties)
        self.addCleanup(client.wait_for_resource_deletion, image['id'])
        self.addCleanup(client.delete_image, image['id'])
        client.store_image_file(image['id'], io.BytesIO(b'\0' * 1024))
        return image

    def boot(self, flavor, image_id=None, wait_until='ACTIVE'):
        kwargs = {'flavor': flavor['id'], 'wait_until': wait_until}
        if image_id:
            kwargs['image_id'] = image_id
        return self.create_test_server(**kwargs)

    def wait_for_error(self, server_id):
        return waiters.wait_for_server_status(
            self.servers_client, server_id, 'ERROR', ready_wait=False)
