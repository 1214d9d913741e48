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

"""The journal's upserts (both ways), bulk writes and request spec cache."""

import os
from unittest import mock

import fixtures
from oslotest import base

from nova_vtpm.hooks import inventory
from nova_vtpm import journal as journal_mod


class UpsertTest(base.BaseTestCase):
    """On sqlite's INSERT ... ON CONFLICT (as on PostgreSQL's)."""

    on_conflict = True

    def setUp(self):
        super().setUp()
        self.tmp = self.useFixture(fixtures.TempDir()).path
        self.url = 'sqlite:///' + os.path.join(self.tmp, 'j.sqlite')
        self.j = self.journal()

    def journal(self):
        j = journal_mod.Journal(self.url)
        if not self.on_conflict:
            # As on MySQL: update, insert when absent.
            j._on_conflict = False
        j.upgrade()
        return j

    def test_dialect(self):
        self.assertEqual(self.on_conflict, self.j._on_conflict)

    def test_put_instance_keeps_what_it_does_not_set(self):
        self.j.put_instance('u1', host='h1', vtpm_version='2.0')
        self.j.put_instance('u1', host='h2')
        row = self.j.get_instance('u1')
        self.assertEqual(('h2', '2.0'), (row['host'], row['vtpm_version']))

    def test_put_instances(self):
        self.j.put_instance('u1', host='h1', vtpm_version='2.0')
        self.j.put_instance('u9', host='h9', vtpm_version='2.0')
        rows = [('u%d' % i, {'host': 'n%d' % i, 'vtpm_version': '2.0'})
                for i in range(2, 8)]
        self.j.put_instances(rows + [
            ('u1', {'deleted_at': 5.0, 'lifecycle': 'reconciled'}),
            ('u9', {'host': 'x', 'vtpm_version': '2.0'})])
        self.j.put_instances([])
        got = {r['uuid']: r for r in
               self.j.list_instances(include_deleted=True)}
        self.assertEqual({'u%d' % i for i in (1, 2, 3, 4, 5, 6, 7, 9)},
                         set(got))
        self.assertEqual((5.0, 'reconciled', 'h1', '2.0'), tuple(
            got['u1'][k] for k in ('deleted_at', 'lifecycle', 'host',
                                   'vtpm_version')))
        self.assertEqual('x', got['u9']['host'])
        self.assertEqual(['n%d' % i for i in range(2, 8)],
                         [got['u%d' % i]['host'] for i in range(2, 8)])

    def test_put_instances_is_one_transaction(self):
        self.j.put_instance('u1', host='h1')
        begin = mock.patch.object(self.j.engine, 'begin',
                                  wraps=self.j.engine.begin).start()
        self.addCleanup(mock.patch.stopall)
        self.j.put_instances([('u%d' % i, {'host': 'h'})
                              for i in range(5)])
        self.assertEqual(1, begin.call_count)

    def test_a_new_record_needs_its_not_null_columns(self):
        # attestations.state is NOT NULL: a new record needs it, an update
        # does not.
        self.assertRaises(RuntimeError, self.j.put_attestation, 'a1',
                          host='h')
        self.assertIsNone(self.j.get_attestation('a1'))
        self.j.put_attestation('a1', state='waiting', host='h')
        self.j.put_attestation('a1', host='h2')
        row = self.j.get_attestation('a1')
        self.assertEqual(('waiting', 'h2'), (row['state'], row['host']))

    def test_host_facts(self):
        self.j.put_host_facts('c1', {'a': 1}, updated_at=1.0)
        self.j.put_host_facts('c1', {'a': 2}, updated_at=2.0)
        self.assertEqual({'a': 2}, self.j.get_host_facts('c1')['facts'])

    def test_claims(self):
        e1, _ = self.j.record_event('m1', 'e', {'x': 1}, hooks=['a', 'b'])
        e2, _ = self.j.record_event('m2', 'e', {}, hooks=['a'])
        first = self.j.claim_work('me', 60, limit=2)
        self.assertEqual([(e1, 'a'), (e1, 'b')],
                         [(w['event_id'], w['hook']) for w in first])
        self.assertEqual(('{"x": 1}', 'm1', 'me'), (
            first[0]['payload'], first[0]['message_id'],
            first[0]['claimed_by']))
        (rest,) = self.j.claim_work('me', 60, limit=None)
        self.assertEqual(e2, rest['event_id'])
        self.assertEqual([], self.j.claim_work('other', 60))
        self.assertTrue(self.j.finish_work(first[0]['id'], 'me', 'done'))
        self.assertTrue(self.j.finish_work(first[1]['id'], 'me', 'retry',
                                           'later', 1.0))
        self.assertEqual('retry', self.j.get_event(e1)['state'])
        self.assertFalse(self.j.finish_work(first[1]['id'], 'me', 'done'))


class PortableUpsertTest(UpsertTest):
    """Update, then insert: for databases without ON CONFLICT (MySQL)."""

    on_conflict = False


class RequestSpecCacheTest(base.BaseTestCase):

    def setUp(self):
        super().setUp()
        url = 'sqlite:///' + os.path.join(
            self.useFixture(fixtures.TempDir()).path, 'j.sqlite')
        self.j = journal_mod.Journal(url)
        self.j.upgrade()
        # Another agent sharing the database.
        self.other = journal_mod.Journal(url)
        self.clock = [1000.0]
        self.useFixture(fixtures.MockPatch(
            'nova_vtpm.journal.time.monotonic', lambda: self.clock[0]))

    def save(self, journal, uuid, image_name, props=None):
        journal.save_request_spec(uuid, 'f', {'hw:tpm_version': '2.0'},
                                  'img', image_name, props or {})

    def test_as_read_from_the_database(self):
        self.save(self.j, 'u1', 'i1', {'hw_tpm_model': 'tpm-crb'})
        cached = self.j.get_request_spec('u1')
        self.j._specs.clear()
        read = self.j.get_request_spec('u1')
        self.assertEqual(read, cached)
        self.assertEqual({'hw_tpm_model': 'tpm-crb'}, read['image_props'])

    def test_callers_get_copies(self):
        self.save(self.j, 'u1', 'i1', {'hw_tpm_model': 'tpm-crb'})
        spec = self.j.get_request_spec('u1')
        spec['image_props']['x'] = 'y'
        spec['image_name'] = 'changed'
        spec = self.j.get_request_spec('u1')
        self.assertEqual(({'hw_tpm_model': 'tpm-crb'}, 'i1'),
                         (spec['image_props'], spec['image_name']))

    def test_hits_do_not_query(self):
        self.save(self.other, 'u1', 'i1')
        self.j.get_request_spec('u1')
        with mock.patch.object(self.j.engine, 'connect') as connect:
            self.assertEqual('i1', self.j.get_request_spec('u1')[
                'image_name'])
        connect.assert_not_called()

    def test_own_writes_are_seen_at_once(self):
        self.save(self.j, 'u1', 'i1')
        self.assertEqual('i1', self.j.get_request_spec('u1')['image_name'])
        self.save(self.j, 'u1', 'i2')
        self.assertEqual('i2', self.j.get_request_spec('u1')['image_name'])

    def test_a_miss_is_not_remembered(self):
        self.assertIsNone(self.j.get_request_spec('u1'))
        self.save(self.other, 'u1', 'i1')
        self.assertEqual('i1', self.j.get_request_spec('u1')['image_name'])

    def test_other_agents_writes_are_seen_when_the_copy_expires(self):
        self.save(self.other, 'u1', 'i1')
        self.j.get_request_spec('u1')
        self.save(self.other, 'u1', 'i2')
        self.clock[0] += journal_mod.REQUEST_SPEC_CACHE_SECONDS - 1
        self.assertEqual('i1', self.j.get_request_spec('u1')['image_name'])
        self.clock[0] += 2
        self.assertEqual('i2', self.j.get_request_spec('u1')['image_name'])

    def test_a_read_older_than_a_write_is_not_kept(self):
        self.save(self.other, 'u1', 'i1')
        generation = self.j._specs_generation
        old = self.j.get_request_spec('u1')
        self.j._specs.clear()
        # Written by this process while that read was under way.
        self.save(self.j, 'u1', 'i2')
        self.j._remember_spec('u1', old, generation)
        self.assertEqual('i2', self.j.get_request_spec('u1')['image_name'])

    def test_a_failed_write_forgets(self):
        self.save(self.j, 'u1', 'i1')
        with mock.patch.object(self.j, '_upsert',
                               side_effect=RuntimeError('db down')):
            self.assertRaises(RuntimeError, self.save, self.j, 'u1', 'i2')
        self.assertNotIn('u1', self.j._specs)

    def test_bounded(self):
        self.useFixture(fixtures.MockPatch(
            'nova_vtpm.journal.REQUEST_SPEC_CACHE_SIZE', 3))
        for i in range(5):
            self.save(self.j, 'u%d' % i, 'i')
        self.j.get_request_spec('u2')      # most recently used now
        self.save(self.j, 'u5', 'i')
        self.assertEqual(['u4', 'u2', 'u5'], list(self.j._specs))


class InventoryReconcileTest(base.BaseTestCase):

    def test_writes_in_one_call(self):
        journal = mock.Mock()
        journal.list_instances.return_value = [
            {'uuid': 'gone', 'host': 'h'}]
        hook = inventory.InventoryHook(mock.Mock(journal=journal))
        vtpm = mock.Mock(vtpm=mock.Mock(version='2.0', model='tpm-crb',
                                        secret_security='host'),
                         attestation=None)
        servers = [mock.Mock(uuid='new', unresolved=False, request=vtpm,
                             host='h', project_id='p', flavor_name='f',
                             image_uuid='i', vm_state='active',
                             task_state=None)]
        counts = hook.reconcile(servers)
        self.assertEqual({'added': 1, 'updated': 0, 'removed': 1}, counts)
        journal.put_instance.assert_not_called()
        (rows,), _ = journal.put_instances.call_args
        self.assertEqual(['new', 'gone'], [uuid for uuid, _ in rows])
        self.assertEqual('2.0', rows[0][1]['vtpm_version'])
        self.assertEqual('reconciled', rows[1][1]['lifecycle'])
