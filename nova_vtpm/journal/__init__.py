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

"""The journal: the durable record of events and of each hook's work.

Every notification the agent receives is written here before it is
acknowledged; the work of each hook on it is a row that moves from
``pending`` to ``done``, to ``retry`` (transient trouble, with a time for
the next attempt) or to ``failed`` (permanent, with the reason). Several
agents can share one journal in a database server: work is claimed with a
lease by a conditional UPDATE, so one agent's work is never done twice at
once and a dead agent's claims expire.

The default is a sqlite file (zero setup, one host); any SQLAlchemy URL
(MySQL, PostgreSQL) serves several agents.
"""

import json
import os
import time

from alembic import command as alembic_command
from alembic import config as alembic_config
from oslo_log import log as logging
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from nova_vtpm.journal import models

LOG = logging.getLogger(__name__)

# Event states.
RECEIVED = 'received'      # recorded, no work yet (internal)
PENDING = 'pending'        # hooks still have work to do
DONE = 'done'              # every hook is done
RETRY = 'retry'            # at least one hook waits for a retry
FAILED = 'failed'          # at least one hook failed permanently
REJECTED = 'rejected'      # malformed: not processed, reason recorded
SKIPPED = 'skipped'        # nothing to do (not a vTPM server, not ours...)
EVENT_STATES = (PENDING, DONE, RETRY, FAILED, REJECTED, SKIPPED)

# Work states.
WORK_STATES = (PENDING, RETRY, DONE, FAILED)
_OPEN_WORK = (PENDING, RETRY)


def _now():
    return time.time()


def _row(row):
    return dict(row._mapping) if row is not None else None


class Journal:
    """Access to the journal database.

    :param url: an SQLAlchemy database URL.
    """

    def __init__(self, url):
        self.url = url
        kwargs = {'future': True}
        if url.startswith('sqlite'):
            # The agent's listener and worker threads share the file; WAL
            # lets readers (the CLI) read while the agent writes.
            kwargs['connect_args'] = {'timeout': 30,
                                      'check_same_thread': False}
        else:
            kwargs['pool_pre_ping'] = True
        self.engine = sa.create_engine(url, **kwargs)
        if url.startswith('sqlite'):
            sa.event.listen(self.engine, 'connect', _sqlite_pragmas)

    # -- schema ----------------------------------------------------------

    def upgrade(self):
        """Create or upgrade the schema to the newest revision."""
        if self.url.startswith('sqlite:///'):
            path = self.url[len('sqlite:///'):]
            if path and path != ':memory:':
                os.makedirs(os.path.dirname(os.path.abspath(path)),
                            exist_ok=True)
        cfg = alembic_config.Config()
        cfg.set_main_option('script_location',
                            'nova_vtpm.journal:migrations')
        with self.engine.begin() as conn:
            cfg.attributes['connection'] = conn
            alembic_command.upgrade(cfg, 'head')

    def revision(self):
        with self.engine.connect() as conn:
            try:
                return conn.execute(sa.text(
                    'SELECT version_num FROM alembic_version')).scalar()
            except sa_exc.DatabaseError:
                return None

    # -- events ----------------------------------------------------------

    def record_event(self, message_id, event_type, payload, hooks=(),
                     state=None, reason=None, lifecycle=None,
                     publisher_id=None, instance_uuid=None, host=None,
                     timestamp=None):
        """Record a notification and the work each hook has on it.

        :returns: (event id, True) when recorded, (existing id, False) when
            the message id was already recorded (a redelivery).
        """
        now = _now()
        if state is None:
            state = PENDING if hooks else SKIPPED
        if not isinstance(payload, str):
            payload = json.dumps(payload, default=str, sort_keys=True)
        try:
            with self.engine.begin() as conn:
                event_id = conn.execute(models.events.insert().values(
                    message_id=message_id, event_type=event_type,
                    lifecycle=lifecycle, publisher_id=publisher_id,
                    instance_uuid=instance_uuid, host=host,
                    timestamp=timestamp, received_at=now, state=state,
                    reason=reason, payload=payload)).inserted_primary_key[0]
                if hooks:
                    conn.execute(models.work.insert(), [
                        {'event_id': event_id, 'hook': hook,
                         'state': PENDING, 'attempts': 0,
                         'next_attempt_at': now, 'updated_at': now}
                        for hook in hooks])
            return event_id, True
        except sa_exc.IntegrityError:
            with self.engine.connect() as conn:
                existing = conn.execute(
                    sa.select(models.events.c.id).where(
                        models.events.c.message_id == message_id)).scalar()
            if existing is None:
                raise
            return existing, False

    def get_event(self, event_id):
        """An event with its work rows, or None."""
        with self.engine.connect() as conn:
            event = _row(conn.execute(models.events.select().where(
                models.events.c.id == event_id)).first())
            if event is None:
                return None
            event['work'] = [_row(r) for r in conn.execute(
                models.work.select().where(
                    models.work.c.event_id == event_id).order_by(
                    models.work.c.id))]
        return event

    def list_events(self, state=None, instance_uuid=None, event_type=None,
                    limit=100, newest_first=True):
        query = sa.select(*[c for c in models.events.c
                            if c.name != 'payload'])
        if state:
            query = query.where(models.events.c.state == state)
        if instance_uuid:
            query = query.where(
                models.events.c.instance_uuid == instance_uuid)
        if event_type:
            query = query.where(models.events.c.event_type == event_type)
        order = models.events.c.id
        query = query.order_by(order.desc() if newest_first else order)
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query)]

    def count_events(self):
        """Events by state: {state: count}."""
        query = sa.select(models.events.c.state,
                          sa.func.count()).group_by(models.events.c.state)
        with self.engine.connect() as conn:
            return {state: n for state, n in conn.execute(query)}

    def retry_event(self, event_id):
        """Make an event's failed or waiting work due now.

        :returns: the number of work rows made due.
        """
        now = _now()
        with self.engine.begin() as conn:
            n = conn.execute(models.work.update().where(
                models.work.c.event_id == event_id,
                models.work.c.state.in_((FAILED, RETRY))).values(
                state=PENDING, next_attempt_at=now, claimed_by=None,
                claimed_until=None, updated_at=now)).rowcount
            if n:
                conn.execute(models.events.update().where(
                    models.events.c.id == event_id).values(state=PENDING))
        return n

    # -- work ------------------------------------------------------------

    def claim_work(self, owner, lease, limit=20, now=None):
        """Claim due work for ``owner`` for ``lease`` seconds.

        Work is due when it is pending or waiting for a retry whose time
        has come, and nobody else holds a live claim on it. Oldest events
        first, so that one instance's events are offered in order.

        :returns: a list of dicts: the work row plus ``event`` (the event
            row with its payload).
        """
        now = now or _now()
        w = models.work.c
        candidates = sa.select(w.id).where(
            w.state.in_(_OPEN_WORK), w.next_attempt_at <= now,
            sa.or_(w.claimed_until.is_(None), w.claimed_until < now),
        ).order_by(w.event_id, w.id).limit(limit)
        claimed = []
        with self.engine.begin() as conn:
            ids = [r[0] for r in conn.execute(candidates)]
            for work_id in ids:
                n = conn.execute(models.work.update().where(
                    w.id == work_id, w.state.in_(_OPEN_WORK),
                    sa.or_(w.claimed_until.is_(None),
                           w.claimed_until < now),
                ).values(claimed_by=owner, claimed_until=now + lease)
                ).rowcount
                if n:
                    claimed.append(work_id)
        if not claimed:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(models.work, models.events.c.event_type,
                          models.events.c.lifecycle,
                          models.events.c.instance_uuid,
                          models.events.c.host,
                          models.events.c.publisher_id,
                          models.events.c.timestamp,
                          models.events.c.payload,
                          models.events.c.message_id).join(
                    models.events,
                    models.events.c.id == w.event_id).where(
                    w.id.in_(claimed)).order_by(w.event_id, w.id))
            return [_row(r) for r in rows]

    def finish_work(self, work_id, owner, state, reason=None,
                    next_attempt_at=None):
        """Record the outcome of claimed work and update its event's state.

        :returns: False when the claim was lost (another agent took the
            work after this one's lease ran out): the outcome is dropped.
        """
        if state not in WORK_STATES:
            raise ValueError('unknown work state %r' % state)
        now = _now()
        w = models.work.c
        with self.engine.begin() as conn:
            n = conn.execute(models.work.update().where(
                w.id == work_id, w.claimed_by == owner).values(
                state=state, reason=reason, attempts=w.attempts + 1,
                next_attempt_at=next_attempt_at or now, claimed_by=None,
                claimed_until=None, updated_at=now)).rowcount
            if not n:
                return False
            event_id = conn.execute(sa.select(w.event_id).where(
                w.id == work_id)).scalar()
            states = {r[0] for r in conn.execute(
                sa.select(w.state).where(w.event_id == event_id))}
            if FAILED in states:
                event_state = FAILED
            elif PENDING in states:
                event_state = PENDING
            elif RETRY in states:
                event_state = RETRY
            else:
                event_state = DONE
            conn.execute(models.events.update().where(
                models.events.c.id == event_id).values(state=event_state))
        return True

    def release_claims(self, owner):
        """Give up every claim of ``owner`` (on a clean shutdown)."""
        with self.engine.begin() as conn:
            return conn.execute(models.work.update().where(
                models.work.c.claimed_by == owner).values(
                claimed_by=None, claimed_until=None)).rowcount

    def claim_owners(self, prefix):
        """The owners of live or stale claims whose name starts so."""
        w = models.work.c
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(
                sa.select(w.claimed_by).where(
                    w.claimed_by.like(prefix + '%')).distinct())]

    def next_due(self):
        """The time the next open work is due, or None."""
        w = models.work.c
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.min(
                w.next_attempt_at)).where(w.state.in_(_OPEN_WORK))).scalar()

    def purge(self, older_than):
        """Delete finished events received before ``older_than``.

        Done, rejected and skipped events go; failed and open ones stay
        until someone looks at them.

        :returns: the number of events deleted.
        """
        e = models.events.c
        with self.engine.begin() as conn:
            old = sa.select(e.id).where(
                e.state.in_((DONE, REJECTED, SKIPPED)),
                e.received_at < older_than)
            conn.execute(models.work.delete().where(
                models.work.c.event_id.in_(old)))
            return conn.execute(models.events.delete().where(
                e.id.in_(old))).rowcount

    # -- request specs ---------------------------------------------------

    def save_request_spec(self, instance_uuid, flavor_name, flavor_specs,
                          image_uuid, image_name, image_props):
        values = dict(flavor_name=flavor_name,
                      flavor_specs=json.dumps(flavor_specs or {}),
                      image_uuid=image_uuid, image_name=image_name,
                      image_props=json.dumps(image_props or {}),
                      updated_at=_now())
        self._upsert(models.request_specs, 'instance_uuid', instance_uuid,
                     values)

    def get_request_spec(self, instance_uuid):
        with self.engine.connect() as conn:
            row = _row(conn.execute(models.request_specs.select().where(
                models.request_specs.c.instance_uuid ==
                instance_uuid)).first())
        if row:
            row['flavor_specs'] = json.loads(row['flavor_specs'] or '{}')
            row['image_props'] = json.loads(row['image_props'] or '{}')
        return row

    def all_request_specs(self):
        """Every remembered request spec: {instance uuid: spec}."""
        with self.engine.connect() as conn:
            rows = conn.execute(models.request_specs.select())
            return {r.instance_uuid: {
                'flavor_name': r.flavor_name, 'image_uuid': r.image_uuid,
                'image_name': r.image_name,
                'flavor_specs': json.loads(r.flavor_specs or '{}'),
                'image_props': json.loads(r.image_props or '{}')}
                for r in rows}

    # -- instances (the inventory) ---------------------------------------

    def get_instance(self, uuid):
        with self.engine.connect() as conn:
            return _row(conn.execute(models.instances.select().where(
                models.instances.c.uuid == uuid)).first())

    def list_instances(self, host=None, include_deleted=False):
        query = models.instances.select().order_by(models.instances.c.uuid)
        if host:
            query = query.where(models.instances.c.host == host)
        if not include_deleted:
            query = query.where(models.instances.c.deleted_at.is_(None))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query)]

    def put_instance(self, uuid, **values):
        values['updated_at'] = _now()
        self._upsert(models.instances, 'uuid', uuid, values)

    def _upsert(self, table, key, key_value, values):
        # Portable upsert: update, insert when absent, and update again if
        # another agent inserted in between.
        column = table.c[key]
        for _ in range(3):
            with self.engine.begin() as conn:
                n = conn.execute(table.update().where(
                    column == key_value).values(**values)).rowcount
                if n:
                    return
            try:
                with self.engine.begin() as conn:
                    conn.execute(table.insert().values(
                        **{key: key_value}, **values))
                return
            except sa_exc.IntegrityError:
                continue
        raise RuntimeError('could not write %s %s' % (table.name, key_value))


def _sqlite_pragmas(dbapi_connection, connection_record):
    cursor = dbapi_connection.cursor()
    cursor.execute('PRAGMA journal_mode=WAL')
    cursor.execute('PRAGMA synchronous=NORMAL')
    cursor.execute('PRAGMA foreign_keys=ON')
    cursor.close()
