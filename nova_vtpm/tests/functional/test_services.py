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

"""The private RabbitMQ and PostgreSQL fixtures work, and leave nothing."""

import os

import kombu
from oslo_config import cfg
import oslo_messaging
from oslotest import base
import sqlalchemy as sa
from testtools import content

from nova_vtpm.tests.functional import services


class _Base(base.BaseTestCase):

    def run_and_clean_up(self, fixture, body):
        """setUp the fixture, run body(fixture), cleanUp, check no pid."""
        fixture.setUp()
        try:
            body(fixture)
        finally:
            fixture.cleanUp()
            self.addDetail('%s-start-seconds' % fixture.name,
                           content.text_content(', '.join(
                               '%.2f' % t for t in fixture.start_times)))
            if getattr(fixture, 'initdb_time', None) is not None:
                self.addDetail('initdb-seconds', content.text_content(
                    '%.2f' % fixture.initdb_time))
        self.assertTrue(fixture.all_pids)
        self.assertEqual([], [p for p in fixture.all_pids
                              if services.pid_exists(p)])
        self.assertFalse(os.path.exists(fixture.base))


class RabbitMQTest(_Base):

    def _roundtrip(self, rabbit, queue_name, payload):
        with kombu.Connection(rabbit.kombu_url, connect_timeout=5) as conn:
            queue = conn.SimpleQueue(queue_name)
            try:
                queue.put(payload)
                msg = queue.get(block=True, timeout=10)
                msg.ack()
                self.assertEqual(payload, msg.payload)
            finally:
                queue.close()

    def _rpc_echo(self, rabbit):
        """oslo.messaging takes .url as is: one RPC call round trip."""
        # cfg.CONF, not a fresh ConfigOpts: oslo.messaging 18.3 registers
        # its [oslo_messaging_tracing] options on cfg.CONF only, and a call
        # through a transport built on another ConfigOpts fails with
        # "NoSuchOptError: no such option oslo_messaging_tracing".
        transport = oslo_messaging.get_rpc_transport(cfg.CONF,
                                                     url=rabbit.url)

        class Endpoint:
            def echo(self, ctxt, value):
                return value

        target = oslo_messaging.Target(topic='nvtpm-test', server='s1')
        server = oslo_messaging.get_rpc_server(
            transport, target, [Endpoint()], executor='threading')
        server.start()
        try:
            client = oslo_messaging.get_rpc_client(transport, target,
                                                   timeout=20)
            self.assertEqual({'x': 1}, client.call({}, 'echo',
                                                   value={'x': 1}))
        finally:
            server.stop()
            server.wait()
            transport.cleanup()

    def test_publish_receive_restart(self):
        def body(rabbit):
            self.assertTrue(rabbit.url.startswith('rabbit://guest:guest@'
                                                  '127.0.0.1:'))
            self._roundtrip(rabbit, 'nvtpm-q', {'n': 1})
            # A persistent message in a durable queue outlives a restart
            # only if the node comes back with the same name and data.
            with kombu.Connection(rabbit.kombu_url) as conn:
                queue = conn.SimpleQueue('nvtpm-durable')
                queue.put({'survivor': True})
                queue.close()
            old_vm = rabbit.erlang_pid
            rabbit.stop()
            self.assertFalse(services.pid_exists(old_vm))
            rabbit.start()
            self.assertNotEqual(old_vm, rabbit.erlang_pid)
            with kombu.Connection(rabbit.kombu_url) as conn:
                queue = conn.SimpleQueue('nvtpm-durable')
                msg = queue.get(block=True, timeout=10)
                msg.ack()
                queue.close()
            self.assertEqual({'survivor': True}, msg.payload)
            self._roundtrip(rabbit, 'nvtpm-q', {'n': 2})
            self._rpc_echo(rabbit)
            self.assertEqual(2, len(rabbit.start_times))

        self.run_and_clean_up(services.RabbitMQ(), body)


class PostgreSQLTest(_Base):

    def test_table_insert_select(self):
        def body(pg):
            self.assertTrue(pg.url.startswith('postgresql+psycopg2://'))
            engine = sa.create_engine(pg.url)
            try:
                meta = sa.MetaData()
                table = sa.Table('t', meta,
                                 sa.Column('id', sa.Integer,
                                           primary_key=True),
                                 sa.Column('name', sa.String(32)))
                meta.create_all(engine)
                with engine.begin() as conn:
                    conn.execute(table.insert(), [{'id': 1, 'name': 'a'},
                                                  {'id': 2, 'name': 'b'}])
                with engine.connect() as conn:
                    rows = conn.execute(
                        sa.select(table.c.id, table.c.name)
                        .order_by(table.c.id)).all()
                    db = conn.execute(sa.text('SELECT current_database()'))
                    self.assertEqual(pg.dbname, db.scalar())
                self.assertEqual([(1, 'a'), (2, 'b')],
                                 [tuple(r) for r in rows])
            finally:
                engine.dispose()

        self.run_and_clean_up(services.PostgreSQL(), body)
