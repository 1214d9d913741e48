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

"""Where a vTPM's secret comes from, per Nova's secret security mode.

What Nova 34.0.0 does (``nova/crypto.py`` ``ensure_vtpm_secret``,
``nova/virt/libvirt/driver.py`` ``_get_or_create_secret_for_vtpm`` and
``_create_guest``, ``nova/virt/libvirt/host.py`` ``create_secret``):

* the passphrase is ``base64.b64encode(os.urandom(384))`` (ASCII bytes),
  stored in the key manager as a castellan ``Passphrase`` named
  ``vTPM secret for instance <instance uuid>``; its uuid is kept in the
  instance's system metadata as ``vtpm_secret_uuid``;
* libvirt gets it as a secret of usage type ``vtpm`` whose usage name is
  the INSTANCE UUID and whose own uuid is the key manager secret's uuid
  (``create_secret('vtpm', instance.uuid, password=passphrase,
  uuid=secret_uuid)``); libvirt hands the value to swtpm (``--key
  pwdfd=``), which derives the AES key from it;
* ``host`` mode: that libvirt secret is defined ``ephemeral='no'
  private='no'`` and stays on the host (it is how a live migration carries
  it); nova-vtpm reads it with ``virsh secret-get-value``;
* ``user`` and ``deployment`` modes: the libvirt secret is private and
  ephemeral, and undefined as soon as the guest is launched. The key
  manager holds the only copy: in the owner's project for ``user`` (Nova
  reads it with the user's token; nova-vtpm cannot), in Nova's service
  user's project for ``deployment`` (nova-vtpm reads it with its service
  user, which must be allowed to).

The secret value is returned to the caller and never logged, written to a
file or put on a command line.
"""

import base64
import binascii
import os
import subprocess
from urllib import parse

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from oslo_log import log as logging

from nova_vtpm.conf import state as state_conf
from nova_vtpm import exception

LOG = logging.getLogger(__name__)

HOST = 'host'
DEPLOYMENT = 'deployment'
USER = 'user'
MODES = (USER, HOST, DEPLOYMENT)

LIBVIRT_USAGE_TYPE = 'vtpm'
BARBICAN_NAME_FMT = 'vTPM secret for instance %s'


def barbican_secret_name(instance_uuid):
    """The name Nova gives an instance's vTPM secret in the key manager."""
    return BARBICAN_NAME_FMT % instance_uuid


class SecretError(exception.NovaVTPMException):
    """Base class of the secret look-up errors."""


class SecretUnavailable(SecretError):
    """The secret cannot be had by nova-vtpm; trying again will not help.

    ``mode`` is the secret security mode. In ``user`` mode this is
    expected: only the server's owner can read the secret.
    """
    msg_fmt = ('The vTPM secret of instance %(instance_uuid)s (%(mode)s '
               'mode) is not available to nova-vtpm: %(reason)s')

    def __init__(self, mode, instance_uuid, reason):
        super().__init__(mode=mode, instance_uuid=instance_uuid,
                         reason=reason)
        self.mode = mode
        self.instance_uuid = instance_uuid
        self.reason = reason


class SecretServiceUnavailable(SecretError):
    """libvirt or the key manager cannot be reached now: try again later."""
    msg_fmt = ('Cannot get the vTPM secret of instance %(instance_uuid)s: '
               '%(service)s is unavailable: %(reason)s')


class VirshError(exception.NovaVTPMException):
    msg_fmt = 'virsh %(command)s failed: %(reason)s'

    def __init__(self, command, reason, connection=False):
        super().__init__(command=command, reason=reason)
        self.connection = connection


# virsh's words for "cannot reach libvirtd" (libvirt 9.0).
_CONNECTION_ERRORS = ('failed to connect to the hypervisor',
                      'Failed to connect socket',
                      'no connection driver available',
                      'unable to connect to server')


class Virsh:
    """The few ``virsh`` commands the guard needs, on one connection.

    :param uri: the libvirt URI (``[nova_vtpm_state] libvirt_uri``).
    :param timeout: seconds allowed for each command.
    """

    def __init__(self, uri, timeout=10.0, binary='virsh'):
        self.uri = uri
        self.timeout = timeout
        self.binary = binary

    def run(self, *args):
        """Run ``virsh -q -c <uri> args``; stdout as bytes.

        :raises VirshError: ``connection`` True when libvirtd is
            unreachable.
        """
        cmd = [self.binary, '-q', '-c', self.uri] + list(args)
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=self.timeout,
                                  env=dict(os.environ, LC_ALL='C'))
        except FileNotFoundError:
            raise VirshError(args[0], '%s is not installed' % self.binary,
                             connection=True)
        except subprocess.TimeoutExpired:
            raise VirshError(args[0], 'no answer in %s s' % self.timeout,
                             connection=True)
        if proc.returncode:
            err = proc.stderr.decode('utf-8', 'replace').strip()
            raise VirshError(args[0], err or 'exit status %d'
                             % proc.returncode, connection=any(
                                 e in err for e in _CONNECTION_ERRORS))
        return proc.stdout

    def vtpm_secrets(self):
        """Every libvirt secret of usage type vtpm: [(uuid, usage name)]."""
        out = self.run('secret-list').decode('utf-8', 'replace')
        found = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == LIBVIRT_USAGE_TYPE:
                found.append((parts[0], ' '.join(parts[2:])))
        return found

    def instance_secrets(self, instance_uuid):
        """The uuids of the vtpm secrets Nova defined for an instance."""
        return [uuid for uuid, name in self.vtpm_secrets()
                if name == instance_uuid]

    def secret_value(self, secret_uuid):
        """The value of a secret (bytes). Never logged."""
        out = self.run('secret-get-value', secret_uuid)
        try:
            return base64.b64decode(out.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise VirshError('secret-get-value', 'the value of secret %s is '
                             'not base64' % secret_uuid)

    def undefine_secret(self, secret_uuid):
        self.run('secret-undefine', secret_uuid)

    def domain_defined(self, domain_uuid):
        """Whether a domain with this uuid is defined (or running)."""
        try:
            self.run('domstate', domain_uuid)
        except VirshError as e:
            if e.connection:
                raise
            return False
        return True


class SecretSource:
    """Gets an instance's vTPM secret the way its mode allows.

    :param conf: the oslo.config ConfigOpts (``[nova_vtpm_state]``,
        ``[nova_vtpm_barbican]``).
    :param clients: a :class:`~nova_vtpm.clients.openstack.Clients`, for
        ``deployment`` mode.
    :param virsh: a :class:`Virsh`; by default one on ``libvirt_uri``.
    """

    def __init__(self, conf, clients=None, virsh=None):
        self.conf = conf
        self.clients = clients
        group = conf[state_conf.GROUP_NAME]
        self.virsh = virsh or Virsh(group.libvirt_uri,
                                    timeout=group.check_timeout)
        self._barbican = None

    def get(self, instance_uuid, mode):
        """The secret value (bytes), as libvirt gives it to swtpm.

        :param mode: the secret security mode (``user``, ``host``,
            ``deployment``; None means ``user``, as in Nova).
        :raises SecretUnavailable: it cannot be had (user mode, missing,
            forbidden).
        :raises SecretServiceUnavailable: libvirt or Barbican is down.
        """
        mode = mode or USER
        if mode == HOST:
            return self.from_libvirt(instance_uuid)
        if mode == DEPLOYMENT:
            return self.from_barbican(instance_uuid)
        if mode == USER:
            raise SecretUnavailable(
                USER, instance_uuid, "in user mode the secret is in the "
                "server owner's Barbican project and only the owner can "
                'read it; the state can be backed up (as ciphertext) but '
                'its TPM identity cannot be verified by the service')
        raise SecretUnavailable(mode, instance_uuid,
                                'unknown secret security mode')

    def from_libvirt(self, instance_uuid):
        """The host-mode secret: the libvirt ``vtpm`` secret of the instance.

        Found by its usage name, which Nova sets to the instance uuid.
        """
        try:
            uuids = self.virsh.instance_secrets(instance_uuid)
            if not uuids:
                raise SecretUnavailable(
                    HOST, instance_uuid, 'this host has no libvirt secret '
                    "of usage type vtpm named %s (virsh secret-list); Nova "
                    'defines it when the guest is created or migrated '
                    'here' % instance_uuid)
            if len(uuids) > 1:
                # libvirt refuses two secrets with the same usage: cannot
                # happen, but do not guess.
                raise SecretUnavailable(
                    HOST, instance_uuid, 'several libvirt vtpm secrets are '
                    'named %s: %s' % (instance_uuid, ', '.join(uuids)))
            return self.virsh.secret_value(uuids[0])
        except VirshError as e:
            if e.connection:
                raise SecretServiceUnavailable(
                    instance_uuid=instance_uuid, service='libvirt',
                    reason=e)
            raise SecretUnavailable(HOST, instance_uuid, str(e))

    def barbican(self):
        """A keystoneauth adapter on the Key Manager API."""
        if self._barbican is None:
            self._barbican = ks_loading.load_adapter_from_conf_options(
                self.conf, state_conf.BARBICAN_GROUP,
                session=self.clients.session(), service_type='key-manager')
        return self._barbican

    def _barbican_get(self, instance_uuid, url, **kwargs):
        try:
            resp = self.barbican().get(url, raise_exc=False, **kwargs)
        except ks_exc.Unauthorized as e:
            raise SecretUnavailable(
                DEPLOYMENT, instance_uuid, 'the [nova_vtpm_service] '
                'credentials are refused: %s' % e)
        except ks_exc.ClientException as e:
            raise SecretServiceUnavailable(instance_uuid=instance_uuid,
                                           service='Barbican', reason=e)
        if resp.status_code in (401, 403):
            raise SecretUnavailable(
                DEPLOYMENT, instance_uuid, 'Barbican refuses the '
                'nova-vtpm service user (HTTP %d): it must be able to read '
                "the secrets Nova's service user stores (the member role "
                "on that user's project, or a Barbican ACL; reader is not "
                'enough for the payload)'
                % resp.status_code)
        if resp.status_code >= 500:
            raise SecretServiceUnavailable(
                instance_uuid=instance_uuid, service='Barbican',
                reason='HTTP %d' % resp.status_code)
        return resp

    def from_barbican(self, instance_uuid):
        """The deployment-mode secret, read with nova-vtpm's service user.

        Looks the secret up by the name Nova gives it; the newest active
        one wins if there are several.
        """
        if self.clients is None or not self.clients.configured:
            raise SecretUnavailable(
                DEPLOYMENT, instance_uuid, 'no [nova_vtpm_service] '
                'credentials to read it from Barbican')
        name = barbican_secret_name(instance_uuid)
        resp = self._barbican_get(
            instance_uuid, '/v1/secrets?' + parse.urlencode(
                {'name': name, 'limit': 100}),
            headers={'Accept': 'application/json'})
        if resp.status_code >= 400:
            raise SecretUnavailable(
                DEPLOYMENT, instance_uuid, 'listing the Barbican secrets '
                'named %r failed: HTTP %d' % (name, resp.status_code))
        try:
            listed = resp.json().get('secrets') or []
        except ValueError:
            raise SecretServiceUnavailable(
                instance_uuid=instance_uuid, service='Barbican',
                reason='its answer is not JSON')
        # The name filter may be a prefix match on some back ends.
        listed = [s for s in listed if s.get('name') == name and
                  s.get('status', 'ACTIVE') == 'ACTIVE' and
                  s.get('secret_ref')]
        if not listed:
            raise SecretUnavailable(
                DEPLOYMENT, instance_uuid, 'Barbican has no secret named '
                '%r that the nova-vtpm service user can see' % name)
        listed.sort(key=lambda s: s.get('created') or '', reverse=True)
        if len(listed) > 1:
            LOG.warning('Barbican has %(n)d secrets named %(name)r for '
                        'instance %(uuid)s; using the newest',
                        {'n': len(listed), 'name': name,
                         'uuid': instance_uuid})
        secret_id = listed[0]['secret_ref'].rstrip('/').rsplit('/', 1)[-1]
        # log=False: keystoneauth logs text and JSON bodies at debug level.
        resp = self._barbican_get(
            instance_uuid, '/v1/secrets/%s/payload' % parse.quote(secret_id),
            headers={'Accept': 'application/octet-stream'}, log=False)
        if resp.status_code >= 400:
            raise SecretUnavailable(
                DEPLOYMENT, instance_uuid, 'reading the payload of Barbican '
                'secret %s failed: HTTP %d' % (secret_id, resp.status_code))
        if not resp.content:
            raise SecretUnavailable(
                DEPLOYMENT, instance_uuid, 'Barbican secret %s has an empty '
                'payload' % secret_id)
        return resp.content
