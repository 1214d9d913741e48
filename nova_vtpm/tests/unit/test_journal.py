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

"""The journal on a real sqlite file."""

import os
import time

import fixtures
from oslotest import base

from nova_vtpm import journal as journal_mod


class JournalTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        tmp = self.useFixture(fixtures.TempDir()).path
        self.j = journal_mod.Journal('sqlite:///' +
                                     os.path.join(tmp, 'sub', 'j.sqlite'))
        self.j.upgrade()

    def test_upgrade_is_idempotent(self):
        from alembic import config as alembic_config
        from alembic import script
        cfg = alembic_config.Config()
        cfg.set_main_option('script_location',
                            'nova_vtpm.journal:migrations')
        head = script.ScriptDirectory.from_config(cfg).get_current_head()
        self.j.upgrade()
        self.assertEqual(head, self.j.revision())

    def test_dedup_by_message_id(self):
        first = self.j.record_event('m1', 'instance.create.end', {'a': 1},
                                    hooks=['inventory'])
        again = self.j.record_event('m1', 'instance.create.end', {'a': 1},
                                    hooks=['inventory'])
        self.assertEqual((first[0], True), first)
        self.assertEqual((first[0], False), again)
        self.assertEqual(1, len(self.j.get_event(first[0])['work']))

    def test_no_hooks_means_skipped(self):
        eid, _ = self.j.record_event('m1', 'instance.create.end', {})
        self.assertEqual('skipped', self.j.get_event(eid)['state'])

    def test_claim_is_exclusive_until_the_lease_ends(self):
        self.j.record_event('m1', 'e', {}, hooks=['a', 'b'])
        mine = self.j.claim_work('agent1', lease=60)
        self.assertEqual(['a', 'b'], [w['hook'] for w in mine])
        self.assertEqual([], self.j.claim_work('agent2', lease=60))
        later = time.time() + 61
        theirs = self.j.claim_work('agent2', lease=60, now=later)
        self.assertEqual(2, len(theirs))
        # The first agent's lease is gone: its outcome is dropped.
        self.assertFalse(self.j.finish_work(mine[0]['id'], 'agent1', 'done'))
        self.assertTrue(self.j.finish_work(theirs[0]['id'], 'agent2',
                                           'done'))

    def test_event_state_follows_work(self):
        eid, _ = self.j.record_event('m1', 'e', {}, hooks=['a', 'b'])
        a, b = self.j.claim_work('me', 60)
        self.j.finish_work(a['id'], 'me', 'done')
        self.assertEqual('pending', self.j.get_event(eid)['state'])
        self.j.finish_work(b['id'], 'me', 'retry', 'broker down',
                           time.time() + 100)
        self.assertEqual('retry', self.j.get_event(eid)['state'])
        self.assertEqual([], self.j.claim_work('me', 60))
        self.assertGreater(self.j.next_due(), time.time() + 50)
        self.assertEqual(1, self.j.retry_event(eid))
        (b,) = self.j.claim_work('me', 60)
        self.assertEqual(1, b['attempts'])
        self.j.finish_work(b['id'], 'me', 'failed', 'bad data')
        event = self.j.get_event(eid)
        self.assertEqual('failed', event['state'])
        self.assertEqual(['done', 'failed'],
                         [w['state'] for w in event['work']])
        self.assertEqual('bad data', event['work'][1]['reason'])

    def test_release_claims(self):
        self.j.record_event('m1', 'e', {}, hooks=['a'])
        self.j.claim_work('me', 600)
        self.assertEqual(['me'], self.j.claim_owners('m'))
        self.assertEqual(1, self.j.release_claims('me'))
        self.assertEqual(1, len(self.j.claim_work('other', 600)))

    def test_purge_keeps_failed_and_open(self):
        done, _ = self.j.record_event('m1', 'e', {})
        open_, _ = self.j.record_event('m2', 'e', {}, hooks=['a'])
        rejected, _ = self.j.record_event('m3', 'e', {}, state='rejected',
                                          reason='junk')
        self.assertEqual(2, self.j.purge(time.time() + 1))
        self.assertIsNone(self.j.get_event(done))
        self.assertIsNone(self.j.get_event(rejected))
        self.assertIsNotNone(self.j.get_event(open_))

    def test_list_and_count(self):
        self.j.record_event('m1', 'e', {}, instance_uuid='u1')
        self.j.record_event('m2', 'e', {}, instance_uuid='u2',
                            state='rejected', reason='x')
        self.assertEqual(['m2', 'm1'], [
            e['message_id'] for e in self.j.list_events()])
        self.assertEqual(['m2'], [e['message_id'] for e in
                                  self.j.list_events(state='rejected')])
        self.assertEqual(['m1'], [e['message_id'] for e in
                                  self.j.list_events(instance_uuid='u1')])
        self.assertEqual({'skipped': 1, 'rejected': 1},
                         self.j.count_events())

    def test_request_specs_and_instances(self):
        self.j.save_request_spec('u1', 'f', {'hw:tpm_version': '2.0'},
                                 'i', 'img', {'hw_tpm_model': 'tpm-crb'})
        self.j.save_request_spec('u1', 'f', {'hw:tpm_version': '2.0'},
                                 'i', 'img2', {})
        spec = self.j.get_request_spec('u1')
        self.assertEqual('img2', spec['image_name'])
        self.assertEqual({}, spec['image_props'])
        self.assertEqual({'u1'}, set(self.j.all_request_specs()))
        self.j.put_instance('u1', host='h1', vtpm_version='2.0')
        self.j.put_instance('u1', host='h2')
        row = self.j.get_instance('u1')
        self.assertEqual(('h2', '2.0'), (row['host'], row['vtpm_version']))
        self.j.put_instance('u1', deleted_at=1.0)
        self.assertEqual([], self.j.list_instances())
        self.assertEqual(1, len(self.j.list_instances(include_deleted=True)))
