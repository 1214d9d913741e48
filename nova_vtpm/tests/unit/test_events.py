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

from oslotest import base

from nova_vtpm.agent import events
from nova_vtpm.tests.unit import fakes

UUID = '6a8f1a6e-4b6e-4ad0-9d5a-5b1c0d8c0a01'


class ParseTest(base.BaseTestCase):

    def test_instance_event(self):
        e = events.parse('instance.create.end',
                         fakes.instance_payload(UUID),
                         'nova-compute:compute1',
                         fakes.metadata('m1', '2026-12-04 20:00:01.500000'))
        self.assertEqual('boot', e.lifecycle)
        self.assertEqual(UUID, e.instance_uuid)
        self.assertEqual('compute1', e.host)
        self.assertEqual('2.0', e.flavor_specs['hw:tpm_version'])
        self.assertEqual('vtpm.small', e.flavor_name)
        self.assertEqual(1796414401.5, e.timestamp)
        self.assertEqual('m1', e.message_id)

    def test_dest_side_events_act_on_the_publisher(self):
        payload = fakes.instance_payload(UUID, host='compute1')
        e = events.parse('instance.live_migration_pre.end', payload,
                         'nova-compute:compute2')
        self.assertEqual('compute1', e.host)
        self.assertEqual('compute2', e.acting_host)
        e = events.parse('instance.live_migration_post.end', payload,
                         'nova-compute:compute1')
        self.assertEqual('compute1', e.acting_host)

    def test_request_spec(self):
        e = events.parse('scheduler.select_destinations.end',
                         fakes.request_spec_payload(
                             UUID, {'hw_tpm_model': 'tpm-crb',
                                    'hw_rng_model': 'virtio',
                                    'hw_video_ram': 8}))
        self.assertIsInstance(e, events.RequestSpecEvent)
        self.assertEqual({'hw_tpm_model': 'tpm-crb', 'hw_rng_model':
                          'virtio', 'hw_video_ram': '8'}, e.image_props)

    def test_unused_event_type(self):
        self.assertIsNone(events.parse('instance.update',
                                       fakes.instance_payload()))

    def test_malformed(self):
        good = fakes.instance_payload(UUID)
        cases = [
            ('not an object', 'payload is str'),
            ({'x': 1}, 'no nova_object.data'),
            (fakes.nova_object('X', {'host': 'h'}), 'payload.uuid is '
                                                    'missing'),
            (fakes.nova_object('X', {'uuid': 'nope'}), 'not a UUID'),
            (fakes.nova_object('X', {'uuid': 5}), 'must be a string'),
            (fakes.nova_object('X', dict(good['nova_object.data'],
                                         host=['h'])), 'host must be a '
                                                       'string'),
            (fakes.nova_object('X', dict(good['nova_object.data'],
                                         flavor={'a': 1})),
             'payload.flavor has no nova_object.data'),
            (fakes.nova_object('X', dict(
                good['nova_object.data'],
                flavor=fakes.nova_object('F', {'extra_specs': {'a': 1}}))),
             'extra_specs must be an object of strings'),
        ]
        for payload, text in cases:
            e = self.assertRaises(events.MalformedNotification, events.parse,
                                  'instance.create.end', payload)
            self.assertIn(text, str(e))

    def test_timestamps(self):
        self.assertIsNone(events.parse_timestamp(None))
        self.assertIsNone(events.parse_timestamp('yesterday'))
        self.assertEqual(0.0, events.parse_timestamp('1970-01-01 00:00:00'))
