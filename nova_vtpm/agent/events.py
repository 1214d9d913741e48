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

"""Nova's versioned notifications, parsed and checked.

Nothing here trusts the message: every field the agent relies on is checked
for presence and type, and a bad message becomes a
:class:`MalformedNotification` naming the field, which the agent records as
``rejected``.
"""

import datetime
import uuid as uuidlib

from nova_vtpm import exception
from nova_vtpm.hooks import base

REQUEST_SPEC_EVENT = 'scheduler.select_destinations.end'

# Events the destination host sends: the payload's host is still the
# source, the publisher is the destination.
_DEST_SIDE = ('live_migration_pre', 'live_migration_post_dest',
              'live_migration_rollback_dest')


class MalformedNotification(exception.NovaVTPMException):
    msg_fmt = 'Malformed notification: %(reason)s'


def _data(obj, where):
    """The ``nova_object.data`` of a serialised Nova object."""
    if not isinstance(obj, dict):
        raise MalformedNotification(
            reason='%s is %s, not a Nova object' % (where,
                                                    type(obj).__name__))
    data = obj.get('nova_object.data')
    if not isinstance(data, dict):
        raise MalformedNotification(
            reason='%s has no nova_object.data object' % where)
    return data


def _str(data, key, where, required=False):
    value = data.get(key)
    if value is None:
        if required:
            raise MalformedNotification(reason='%s.%s is missing' % (where,
                                                                     key))
        return None
    if not isinstance(value, str):
        raise MalformedNotification(
            reason='%s.%s must be a string, not %s' % (
                where, key, type(value).__name__))
    return value


def _uuid(data, key, where):
    value = _str(data, key, where, required=True)
    try:
        uuidlib.UUID(value)
    except ValueError:
        raise MalformedNotification(
            reason='%s.%s is not a UUID: %r' % (where, key, value[:64]))
    return value


def _str_dict(value, where):
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str)
            for k, v in value.items()):
        raise MalformedNotification(
            reason='%s must be an object of strings' % where)
    return dict(value)


def _flavor(data, key, where):
    flavor = data.get(key)
    if flavor is None:
        return None, {}
    fdata = _data(flavor, '%s.%s' % (where, key))
    return (_str(fdata, 'name', where + '.' + key),
            _str_dict(fdata.get('extra_specs'),
                      '%s.%s.extra_specs' % (where, key)))


def parse_timestamp(value):
    """oslo.messaging's '%Y-%m-%d %H:%M:%S.%f' (UTC) -> epoch seconds."""
    if not isinstance(value, str):
        return None
    for fmt in ('%Y-%m-%d %H:%M:%S.%f', '%Y-%m-%d %H:%M:%S',
                '%Y-%m-%dT%H:%M:%S.%f', '%Y-%m-%dT%H:%M:%S'):
        try:
            dt = datetime.datetime.strptime(value, fmt)
        except ValueError:
            continue
        return dt.replace(tzinfo=datetime.timezone.utc).timestamp()
    return None


def publisher_host(publisher_id):
    """'nova-compute:host1' -> 'host1'."""
    if isinstance(publisher_id, str) and ':' in publisher_id:
        return publisher_id.split(':', 1)[1] or None
    return None


class InstanceEvent:
    """One lifecycle event of one server."""

    def __init__(self, event_type, lifecycle, instance_uuid, host=None,
                 node=None, project_id=None, user_id=None, vm_state=None,
                 task_state=None, flavor_name=None, flavor_specs=None,
                 image_uuid=None, publisher_id=None, timestamp=None,
                 message_id=None, data=None):
        self.event_type = event_type
        self.lifecycle = lifecycle
        self.instance_uuid = instance_uuid
        self.host = host
        self.node = node
        self.project_id = project_id
        self.user_id = user_id
        self.vm_state = vm_state
        self.task_state = task_state
        self.flavor_name = flavor_name
        self.flavor_specs = flavor_specs or {}
        self.image_uuid = image_uuid
        self.publisher_id = publisher_id
        self.timestamp = timestamp
        self.message_id = message_id
        self.data = data or {}

    @property
    def acting_host(self):
        """The host where the event happened.

        The payload's host, except for events the destination of a live
        migration sends while the instance still belongs to the source.
        """
        if self.lifecycle in _DEST_SIDE:
            return publisher_host(self.publisher_id) or self.host
        return self.host

    def __repr__(self):
        return '<InstanceEvent %s %s host=%s>' % (
            self.lifecycle or self.event_type, self.instance_uuid, self.host)


class RequestSpecEvent:
    """What the scheduler knew of a server: flavor and image."""

    def __init__(self, instance_uuid, flavor_name, flavor_specs, image_uuid,
                 image_name, image_props):
        self.instance_uuid = instance_uuid
        self.flavor_name = flavor_name
        self.flavor_specs = flavor_specs
        self.image_uuid = image_uuid
        self.image_name = image_name
        self.image_props = image_props


def _image_props(image, where):
    if image is None:
        return None, None, {}
    idata = _data(image, where)
    props = idata.get('properties')
    result = {}
    if props is not None:
        pdata = _data(props, where + '.properties')
        for key, value in pdata.items():
            # Nova's typed props: keep the scalar ones as strings, the way
            # they were set on the image.
            if isinstance(value, (str, int, float, bool)):
                result[key] = value if isinstance(value, str) else str(value)
    return (_str(idata, 'id', where), _str(idata, 'name', where), result)


def parse(event_type, payload, publisher_id=None, metadata=None):
    """Parse one notification.

    :returns: an :class:`InstanceEvent`, a :class:`RequestSpecEvent`, or
        None for an event type the agent does not use.
    :raises: MalformedNotification.
    """
    metadata = metadata if isinstance(metadata, dict) else {}
    if not isinstance(event_type, str):
        raise MalformedNotification(reason='event_type is not a string')
    if event_type == REQUEST_SPEC_EVENT:
        data = _data(payload, 'payload')
        uuid = _uuid(data, 'instance_uuid', 'payload')
        flavor_name, flavor_specs = _flavor(data, 'flavor', 'payload')
        image_uuid, image_name, image_props = _image_props(
            data.get('image'), 'payload.image')
        return RequestSpecEvent(uuid, flavor_name, flavor_specs, image_uuid,
                                image_name, image_props)
    lifecycle = base.EVENT_TYPE_TO_LIFECYCLE.get(event_type)
    if lifecycle is None:
        return None
    data = _data(payload, 'payload')
    where = 'payload'
    flavor_name, flavor_specs = _flavor(data, 'flavor', where)
    return InstanceEvent(
        event_type=event_type, lifecycle=lifecycle,
        instance_uuid=_uuid(data, 'uuid', where),
        host=_str(data, 'host', where), node=_str(data, 'node', where),
        project_id=_str(data, 'tenant_id', where),
        user_id=_str(data, 'user_id', where),
        vm_state=_str(data, 'state', where),
        task_state=_str(data, 'task_state', where),
        flavor_name=flavor_name, flavor_specs=flavor_specs,
        image_uuid=_str(data, 'image_uuid', where),
        publisher_id=publisher_id if isinstance(publisher_id, str) else None,
        timestamp=parse_timestamp(metadata.get('timestamp')),
        message_id=metadata.get('message_id'), data=data)


class ServerView:
    """A server as the reconciler sees it through Nova's API."""

    def __init__(self, uuid, host, vm_state, task_state, project_id,
                 flavor_name, flavor_specs, image_uuid, image_props=None,
                 image_name=None, status=None):
        self.uuid = uuid
        self.host = host
        self.vm_state = vm_state
        self.task_state = task_state
        self.project_id = project_id
        self.flavor_name = flavor_name
        self.flavor_specs = flavor_specs or {}
        self.image_uuid = image_uuid
        self.image_props = image_props or {}
        self.image_name = image_name
        self.status = status
        self.request = None   # set by the reconciler: a tpm.Resolution
        self.unresolved = False   # True: the request could not be known

    def __repr__(self):
        return '<ServerView %s host=%s>' % (self.uuid, self.host)
