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

"""Nova and Glance clients with nova-vtpm's service credentials."""

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from oslo_log import log as logging

from nova_vtpm.conf import clients as clients_conf
from nova_vtpm import exception

LOG = logging.getLogger(__name__)


class ServiceUnavailable(exception.NovaVTPMException):
    msg_fmt = ('%(service)s is unavailable: %(reason)s. nova-vtpm retries '
               'later; check [%(group)s] and the service.')


class NotConfigured(exception.NovaVTPMException):
    msg_fmt = ('No credentials for %(service)s: set the [%(group)s] '
               'authentication options.')


class Clients:
    """Lazily built clients, shared by the agent and its hooks."""

    def __init__(self, conf):
        self.conf = conf
        self._session = None
        self._nova = None
        self._glance = None

    @property
    def configured(self):
        return bool(self.conf[clients_conf.SERVICE_GROUP].auth_type)

    def session(self):
        if self._session is None:
            group = clients_conf.SERVICE_GROUP
            if not self.configured:
                raise NotConfigured(service='OpenStack', group=group)
            auth = ks_loading.load_auth_from_conf_options(self.conf, group)
            self._session = ks_loading.load_session_from_conf_options(
                self.conf, group, auth=auth)
        return self._session

    def glance(self):
        if self._glance is None:
            self._glance = ks_loading.load_adapter_from_conf_options(
                self.conf, clients_conf.GLANCE_GROUP, session=self.session(),
                service_type='image')
        return self._glance

    def nova(self):
        if self._nova is None:
            from novaclient import client as nova_client
            group = self.conf[clients_conf.NOVA_GROUP]
            self._nova = nova_client.Client(
                group.api_version, session=self.session(),
                endpoint_type=(group.valid_interfaces or ['public'])[0],
                region_name=group.region_name,
                endpoint_override=group.endpoint_override)
        return self._nova

    def image_properties(self, image_uuid):
        """The properties of an image (the non-standard keys of Glance v2).

        :returns: (image name, {property: value as string}), or (None, {})
            when the image is gone.
        :raises: ServiceUnavailable, NotConfigured.
        """
        try:
            resp = self.glance().get('/v2/images/%s' % image_uuid,
                                     raise_exc=False)
        except ks_exc.ClientException as e:
            raise ServiceUnavailable(service='Glance', reason=e,
                                     group=clients_conf.GLANCE_GROUP)
        if resp.status_code == 404:
            return None, {}
        if resp.status_code >= 400:
            raise ServiceUnavailable(
                service='Glance', reason='HTTP %d' % resp.status_code,
                group=clients_conf.GLANCE_GROUP)
        image = resp.json()
        props = {k: v if isinstance(v, str) else str(v)
                 for k, v in image.items()
                 if k not in _GLANCE_CORE and v is not None}
        return image.get('name'), props


# Glance v2 image attributes that are not image properties.
_GLANCE_CORE = frozenset((
    'id', 'name', 'status', 'visibility', 'protected', 'checksum',
    'os_hash_algo', 'os_hash_value', 'owner', 'size', 'virtual_size',
    'container_format', 'disk_format', 'created_at', 'updated_at', 'tags',
    'direct_url', 'min_ram', 'min_disk', 'self', 'file', 'schema',
    'locations', 'os_hidden', 'stores'))
