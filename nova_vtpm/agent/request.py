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

"""From an event to the server's vTPM request (a ``tpm.Resolution``).

Instance notifications carry the flavor's extra specs but only the image's
uuid. The image properties come from the scheduler's RequestSpec
notification remembered in the journal; when it was missed, from Glance.
"""

import time

from oslo_log import log as logging

from nova_vtpm import exception
from nova_vtpm import policy
from nova_vtpm import tpm

LOG = logging.getLogger(__name__)

# Image properties change rarely; one Glance call per image per this many
# seconds at most.
IMAGE_CACHE_SECONDS = 300
FAILED_IMAGE_CACHE_SECONDS = 30

_LOOKUP = object()


class RequestResolver:

    def __init__(self, conf, journal, clients=None):
        self.conf = conf
        self.journal = journal
        self.clients = clients
        self._policies = None
        self._policies_loaded = False
        self._images = {}

    def tpm_policies(self):
        if not self._policies_loaded:
            self._policies_loaded = True
            path = self.conf.nova_vtpm_attestation.tpm_policy_file
            if path:
                try:
                    self._policies = policy.load_tpm_policies(path)
                except exception.PolicyFileError as e:
                    LOG.error('%s', e)
        return self._policies

    def image_properties(self, instance_uuid, image_uuid, spec=_LOOKUP):
        """The image name and properties of an instance, best effort.

        :param spec: the instance's remembered request spec, when the
            caller has it already (None: there is none).
        :returns: (image name, properties, complete). ``complete`` is False
            when Glance should have been asked and could not answer: the
            properties may then lack the ones that make a vTPM, and callers
            must not conclude that the server has none.
        """
        if spec is _LOOKUP:
            # Asked for every event of the instance, at intake and again
            # by the worker: the journal keeps recent specs in memory.
            spec = self.journal.get_request_spec(instance_uuid)
        props = {}
        name = None
        if spec is not None:
            props = dict(spec['image_props'])
            name = spec['image_name']
        if not (image_uuid and self.clients is not None and
                self.clients.configured):
            return name, props, True
        # Glance has the properties Nova does not model (keylime_*); the
        # RequestSpec has Nova's view. Merge, Nova's view first.
        now = time.monotonic()
        cached = self._images.get(image_uuid)
        if cached is None or cached[0] < now:
            try:
                gname, gprops = self.clients.image_properties(image_uuid)
            except exception.NovaVTPMException as e:
                LOG.warning('Image %(image)s of instance %(uuid)s: %(err)s',
                            {'image': image_uuid, 'uuid': instance_uuid,
                             'err': e})
                # Remember the failure briefly: every server of this image
                # would ask again otherwise.
                cached = (now + FAILED_IMAGE_CACHE_SECONDS, None, None)
            else:
                cached = (now + IMAGE_CACHE_SECONDS, gname, gprops)
            self._images[image_uuid] = cached
        _, gname, gprops = cached
        if gprops is None:
            return name, props, spec is not None
        for key, value in gprops.items():
            props.setdefault(key, value)
        return name or gname, props, True

    def resolve_event(self, event, spec=_LOOKUP):
        """The event's request and whether it is complete (see above)."""
        image_name, image_props, complete = self.image_properties(
            event.instance_uuid, event.image_uuid, spec)
        return self.resolve_specs(event.flavor_specs, image_props,
                                  event.flavor_name, image_name), complete

    def resolve_specs(self, flavor_specs, image_props, flavor_name=None,
                      image_name=None):
        return tpm.resolve(
            flavor_specs, image_props, flavor_name=flavor_name,
            image_name=image_name,
            default_attestation=self.conf.nova_vtpm_attestation.default_mode,
            tpm_policies=self.tpm_policies())

    def resolve(self, event):
        return self.resolve_event(event)[0]
