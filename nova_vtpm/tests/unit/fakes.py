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

"""Builders of Nova-shaped notification payloads for unit tests."""

import uuid as uuidlib


def nova_object(name, data, version='1.0'):
    return {'nova_object.name': name, 'nova_object.namespace': 'nova',
            'nova_object.version': version, 'nova_object.data': data}


def flavor(name='vtpm.small', extra_specs=None):
    return nova_object('FlavorPayload', {
        'name': name, 'flavorid': name, 'memory_mb': 512, 'vcpus': 1,
        'extra_specs': extra_specs if extra_specs is not None else {
            'hw:tpm_version': '2.0', 'hw:tpm_secret_security': 'host'}})


def instance_payload(uuid=None, host='compute1', extra_specs=None,
                     image_uuid=None, state='active'):
    return nova_object('InstanceActionPayload', {
        'uuid': uuid or str(uuidlib.uuid4()), 'host': host, 'node': host,
        'tenant_id': 'p1', 'user_id': 'u1', 'state': state,
        'task_state': None, 'flavor': flavor(extra_specs=extra_specs),
        'image_uuid': image_uuid or str(uuidlib.uuid4())})


def request_spec_payload(uuid, image_props=None, extra_specs=None,
                         image_name='img'):
    return nova_object('RequestSpecPayload', {
        'instance_uuid': uuid, 'flavor': flavor(extra_specs=extra_specs),
        'image': nova_object('ImageMetaPayload', {
            'id': str(uuidlib.uuid4()), 'name': image_name,
            'properties': nova_object('ImageMetaPropsPayload',
                                      image_props or {})})})


def metadata(message_id=None, timestamp='2026-12-04 20:00:00.000000'):
    return {'message_id': message_id or str(uuidlib.uuid4()),
            'timestamp': timestamp}
