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

import collections
import json
import os
import sqlite3
import threading
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


# The upgrade's PostgreSQL advisory lock (any constant bigint) and tries.
_UPGRADE_LOCK_KEY = 0x6e76746d   # 'nvtm'
_UPGRADE_ATTEMPTS = 5


def _now():
    return time.time()


def _row(row):
    return dict(row._mapping) if row is not None else None


# Request specs read on the agent's hot paths (every instance event, every
# hook run) are kept in memory: at most this many, for this long. A spec
# changes (for an instance uuid) only when Nova schedules the instance
# again (resize, migration, rebuild): this process' writes update the copy
# at once; another agent's (sharing the database) are seen when the copy
# expires.
REQUEST_SPEC_CACHE_SIZE = 4096
REQUEST_SPEC_CACHE_SECONDS = 60.0

# Dialects with INSERT ... ON CONFLICT (...) DO UPDATE (same syntax): an
# upsert in one statement. Others (MySQL...) update, then insert when the
# row is absent.
_ON_CONFLICT_DIALECTS = frozenset(
    ['postgresql'] + (['sqlite'] if sqlite3.sqlite_version_info >= (3, 24)
                      else []))


# The statements of the agent's hot paths, built once: their values are
# bound at execution (building a statement per call, with its bound
# parameters and its cache key, cost more than running it). Bound parameter
# names start with ``p_``: SQLAlchemy reserves the column names for the
# VALUES and SET clauses.
_b = sa.bindparam
_e = models.events.c
_w = models.work.c

_INSERT_EVENT = models.events.insert()
_INSERT_WORK = models.work.insert()
_EVENT_ID_BY_MESSAGE_ID = sa.select(_e.id).where(
    _e.message_id == _b('p_message_id'))
_SET_EVENT_STATE = models.events.update().where(
    _e.id == _b('p_id')).values(state=_b('p_state'))

# Work is due when it is open, its time has come, and nobody holds a live
# claim on it.
_DUE_WORK = sa.select(_w.id).where(
    _w.state.in_(_OPEN_WORK), _w.next_attempt_at <= _b('p_now'),
    sa.or_(_w.claimed_until.is_(None), _w.claimed_until < _b('p_now')),
).order_by(_w.event_id, _w.id).limit(_b('p_limit'))
# The same conditions again, for the claim itself: another agent may have
# taken some of the candidates in between.
_CLAIM_WORK = models.work.update().where(
    _w.id.in_(_b('p_ids', expanding=True)), _w.state.in_(_OPEN_WORK),
    sa.or_(_w.claimed_until.is_(None), _w.claimed_until < _b('p_now')),
).values(claimed_by=_b('p_owner'), claimed_until=_b('p_until'))
_CLAIMED_WORK = sa.select(
    models.work, _e.event_type, _e.lifecycle, _e.instance_uuid, _e.host,
    _e.publisher_id, _e.timestamp, _e.payload, _e.message_id,
).join(models.events, _e.id == _w.event_id).where(
    _w.id.in_(_b('p_ids', expanding=True)), _w.claimed_by == _b('p_owner'),
    _w.claimed_until == _b('p_until'),
).order_by(_w.event_id, _w.id)
_FINISH_WORK = models.work.update().where(
    _w.id == _b('p_id'), _w.claimed_by == _b('p_owner')).values(
    state=_b('p_state'), reason=_b('p_reason'), attempts=_w.attempts + 1,
    next_attempt_at=_b('p_next'), claimed_by=None, claimed_until=None,
    updated_at=_b('p_now'))
# When the next open work is due (see next_due).
_NEXT_DUE = sa.select(sa.func.min(sa.case(
    (_w.claimed_until > _w.next_attempt_at, _w.claimed_until),
    else_=_w.next_attempt_at))).where(_w.state.in_(_OPEN_WORK))
# The event of a work row, with the states of all of its work.
_SIBLING_WORK_STATES = sa.select(_w.event_id, _w.state).where(
    _w.event_id == sa.select(_w.event_id).where(
        _w.id == _b('p_id')).scalar_subquery())

# claim_work without a limit.
_MAX_LIMIT = 2 ** 31 - 1

_REQUEST_SPEC = models.request_specs.select().where(
    models.request_specs.c.instance_uuid == _b('p_key'))
_INSTANCE = models.instances.select().where(
    models.instances.c.uuid == _b('p_key'))


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
        self._on_conflict = self.engine.dialect.name in _ON_CONFLICT_DIALECTS
        self._upserts = {}
        # {instance uuid: (expiry, spec)}, least recently used first; the
        # generation counts this process' writes (see get_request_spec).
        self._specs = collections.OrderedDict()
        self._specs_lock = threading.Lock()
        self._specs_generation = 0

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
        for attempt in range(_UPGRADE_ATTEMPTS):
            try:
                with self.engine.begin() as conn:
                    if conn.dialect.name == 'postgresql':
                        # Agents (and CLIs) started together on a fresh
                        # database would all create the schema: the others
                        # fail on the tables the first one created. One at
                        # a time; the next ones find it up to date.
                        conn.execute(sa.text(
                            'SELECT pg_advisory_xact_lock(:key)'),
                            {'key': _UPGRADE_LOCK_KEY})
                    cfg.attributes['connection'] = conn
                    alembic_command.upgrade(cfg, 'head')
                return
            except sa_exc.DBAPIError:
                # Elsewhere (no lock): another process upgraded at the same
                # time; once it is done, the upgrade has nothing to do.
                if attempt + 1 >= _UPGRADE_ATTEMPTS:
                    raise
                LOG.warning('Journal schema upgrade failed, probably '
                            'racing another agent; trying again',
                            exc_info=True)
                time.sleep(1 + attempt)

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
                event_id = conn.execute(_INSERT_EVENT, {
                    'message_id': message_id, 'event_type': event_type,
                    'lifecycle': lifecycle, 'publisher_id': publisher_id,
                    'instance_uuid': instance_uuid, 'host': host,
                    'timestamp': timestamp, 'received_at': now,
                    'state': state, 'reason': reason,
                    'payload': payload}).inserted_primary_key[0]
                if hooks:
                    work = [{'event_id': event_id, 'hook': hook,
                             'state': PENDING, 'attempts': 0,
                             'next_attempt_at': now, 'updated_at': now}
                            for hook in hooks]
                    conn.execute(_INSERT_WORK,
                                 work[0] if len(work) == 1 else work)
            return event_id, True
        except sa_exc.IntegrityError:
            with self.engine.connect() as conn:
                existing = conn.execute(_EVENT_ID_BY_MESSAGE_ID, {
                    'p_message_id': message_id}).scalar()
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
        until = now + lease
        with self.engine.begin() as conn:
            ids = [r[0] for r in conn.execute(_DUE_WORK, {
                'p_now': now,
                'p_limit': _MAX_LIMIT if limit is None else limit})]
            if not ids:
                return []
            # One UPDATE for all: what it claimed carries this owner and
            # this lease's end (a candidate another agent took in between
            # carries theirs).
            claimed = {'p_ids': ids, 'p_owner': owner, 'p_until': until}
            if not conn.execute(_CLAIM_WORK, dict(claimed,
                                                  p_now=now)).rowcount:
                return []
            return [_row(r) for r in conn.execute(_CLAIMED_WORK, claimed)]

    def finish_work(self, work_id, owner, state, reason=None,
                    next_attempt_at=None):
        """Record the outcome of claimed work and update its event's state.

        :returns: False when the claim was lost (another agent took the
            work after this one's lease ran out): the outcome is dropped.
        """
        if state not in WORK_STATES:
            raise ValueError('unknown work state %r' % state)
        now = _now()
        with self.engine.begin() as conn:
            n = conn.execute(_FINISH_WORK, {
                'p_id': work_id, 'p_owner': owner, 'p_state': state,
                'p_reason': reason, 'p_next': next_attempt_at or now,
                'p_now': now}).rowcount
            if not n:
                return False
            siblings = conn.execute(_SIBLING_WORK_STATES,
                                    {'p_id': work_id}).all()
            event_id = siblings[0][0]
            states = {r[1] for r in siblings}
            if FAILED in states:
                event_state = FAILED
            elif PENDING in states:
                event_state = PENDING
            elif RETRY in states:
                event_state = RETRY
            else:
                event_state = DONE
            conn.execute(_SET_EVENT_STATE,
                         {'p_id': event_id, 'p_state': event_state})
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
        """The time the next open work is due, or None.

        Work another agent holds a claim on is due when the claim runs out:
        counting it due at once would have the worker poll in a tight loop
        as long as that claim lives.
        """
        with self.engine.connect() as conn:
            return conn.execute(_NEXT_DUE).scalar()

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
        try:
            self._upsert(models.request_specs, 'instance_uuid',
                         instance_uuid, values)
        except BaseException:
            self._remember_spec(instance_uuid, None)
            raise
        # What get_request_spec would read now.
        self._remember_spec(instance_uuid, _spec_row(dict(
            values, instance_uuid=instance_uuid)))

    def get_request_spec(self, instance_uuid):
        """The remembered request spec of an instance, or None.

        Kept in memory for a while (``REQUEST_SPEC_CACHE_SECONDS``): the
        agent looks it up for every event of the instance.
        """
        with self._specs_lock:
            cached = self._specs.get(instance_uuid)
            if cached is not None and cached[0] > time.monotonic():
                self._specs.move_to_end(instance_uuid)
                return _copy_spec(cached[1])
            generation = self._specs_generation
        with self.engine.connect() as conn:
            row = _row(conn.execute(_REQUEST_SPEC,
                                    {'p_key': instance_uuid}).first())
        if row is None:
            # Not cached: another agent may record it any time.
            return None
        row = _spec_row(row)
        self._remember_spec(instance_uuid, row, generation)
        return _copy_spec(row)

    def _remember_spec(self, instance_uuid, spec, generation=None):
        """Cache (or, spec None, forget) the spec of an instance.

        :param generation: for a spec read from the database, the writes
            counter before the read: a write of this process since then
            may have made the spec read out of date, it is not kept.
        """
        with self._specs_lock:
            if generation is None:
                self._specs_generation += 1
            elif generation != self._specs_generation:
                return
            if spec is None:
                self._specs.pop(instance_uuid, None)
                return
            self._specs[instance_uuid] = (
                time.monotonic() + REQUEST_SPEC_CACHE_SECONDS, spec)
            self._specs.move_to_end(instance_uuid)
            while len(self._specs) > REQUEST_SPEC_CACHE_SIZE:
                self._specs.popitem(last=False)

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
            return _row(conn.execute(_INSTANCE, {'p_key': uuid}).first())

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

    def put_instances(self, rows):
        """put_instance for many instances, in one transaction.

        :param rows: (uuid, {column: value}) pairs.
        """
        now = _now()
        self._upsert_many(models.instances, 'uuid', [
            (uuid, dict(values, updated_at=now)) for uuid, values in rows])

    # -- vTPM identities (the swtpm_state hook) ---------------------------

    def get_identity(self, instance_uuid):
        """The recorded identity of an instance's vTPM, or None."""
        table = models.vtpm_identities
        with self.engine.connect() as conn:
            return _row(conn.execute(table.select().where(
                table.c.instance_uuid == instance_uuid)).first())

    def put_identity(self, instance_uuid, **values):
        """Create or update the identity record of an instance's vTPM."""
        values['updated_at'] = _now()
        self._upsert(models.vtpm_identities, 'instance_uuid', instance_uuid,
                     values)

    def list_identities(self, host=None, include_deleted=True):
        """Identity records, by instance uuid; only ``host``'s if given."""
        table = models.vtpm_identities
        query = table.select().order_by(table.c.instance_uuid)
        if host:
            query = query.where(table.c.host == host)
        if not include_deleted:
            query = query.where(table.c.deleted_at.is_(None))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query)]

    def delete_identity(self, instance_uuid):
        """Forget an instance's vTPM identity; returns whether it existed."""
        table = models.vtpm_identities
        with self.engine.begin() as conn:
            return bool(conn.execute(table.delete().where(
                table.c.instance_uuid == instance_uuid)).rowcount)

    # -- host facts (nova_vtpm.host.facts notifications) -----------------

    def get_host_facts(self, host):
        """{'host', 'facts' (a dict), 'updated_at'} of a host, or None."""
        table = models.host_facts
        with self.engine.connect() as conn:
            row = _row(conn.execute(table.select().where(
                table.c.host == host)).first())
        return _facts_row(row)

    def list_host_facts(self):
        """The facts of every host, by host name."""
        table = models.host_facts
        with self.engine.connect() as conn:
            return [_facts_row(_row(r)) for r in conn.execute(
                table.select().order_by(table.c.host))]

    def put_host_facts(self, host, facts, updated_at=None):
        """Record the latest facts of a host (a JSON-serialisable dict)."""
        self._upsert(models.host_facts, 'host', host, {
            'facts': json.dumps(facts, default=str, sort_keys=True),
            'updated_at': updated_at or _now()})

    # -- attestations (the keylime hook) ----------------------------------

    def get_attestation(self, instance_uuid):
        """The keylime hook's record of a server, or None."""
        table = models.attestations
        with self.engine.connect() as conn:
            return _row(conn.execute(table.select().where(
                table.c.instance_uuid == instance_uuid)).first())

    def put_attestation(self, instance_uuid, **values):
        """Create or update the attestation record of a server.

        A new record needs ``state``.
        """
        values['updated_at'] = _now()
        self._upsert(models.attestations, 'instance_uuid', instance_uuid,
                     values)

    def list_attestations(self, state=None, include_removed=True):
        """Attestation records, by instance uuid."""
        table = models.attestations
        query = table.select().order_by(table.c.instance_uuid)
        if state:
            query = query.where(table.c.state == state)
        if not include_removed:
            query = query.where(table.c.state != 'removed')
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query)]

    def _upsert(self, table, key, key_value, values):
        self._upsert_many(table, key, [(key_value, values)])

    def _upsert_many(self, table, key, rows):
        """Create or update rows of ``table`` by ``key``, in one transaction.

        :param rows: (key value, {column: value}) pairs; a column not given
            keeps its value (or is NULL in a new row).
        """
        if not rows:
            return
        # Row locks taken in one order: two agents writing the same rows at
        # once wait for each other rather than deadlock.
        rows = sorted(rows, key=lambda r: r[0])
        if self._on_conflict and all(
                _insertable(table, key, values) for _, values in rows):
            with self.engine.begin() as conn:
                for columns, params in _batches(key, rows):
                    conn.execute(self._upsert_statement(table, key, columns),
                                 params if len(params) > 1 else params[0])
            return
        # Portable: update, insert what is absent; all again if another
        # agent inserted one of them in between.
        update = self._upserts.get((table.name, key))
        if update is None:
            update = self._upserts[table.name, key] = table.update().where(
                table.c[key] == _b('p_key'))
        insert = table.insert()
        for _ in range(3):
            try:
                with self.engine.begin() as conn:
                    for key_value, values in rows:
                        if not conn.execute(update, dict(
                                values, p_key=key_value)).rowcount:
                            conn.execute(insert, dict(
                                values, **{key: key_value}))
                return
            except sa_exc.IntegrityError:
                continue
        raise RuntimeError('could not write %s %s' % (
            table.name, ', '.join(str(r[0]) for r in rows[:10])))

    def _upsert_statement(self, table, key, columns):
        """INSERT ... ON CONFLICT (key) DO UPDATE SET the columns given.

        As text, built once: SQLAlchemy (2.0) does not cache the statements
        of its dialects' ``insert().on_conflict_do_update()``, it compiles
        them at every execution, which takes longer than running them.
        """
        cache_key = (table.name, key, columns)
        statement = self._upserts.get(cache_key)
        if statement is None:
            quote = self.engine.dialect.identifier_preparer.quote
            names = [key] + sorted(columns)
            statement = sa.text(
                'INSERT INTO %s (%s) VALUES (%s) ON CONFLICT (%s) DO %s' % (
                    quote(table.name), ', '.join(quote(n) for n in names),
                    ', '.join(':' + n for n in names), quote(key),
                    'UPDATE SET ' + ', '.join(
                        '%s = excluded.%s' % (quote(c), quote(c))
                        for c in sorted(columns)) if columns else 'NOTHING'))
            self._upserts[cache_key] = statement
        return statement


def _insertable(table, key, values):
    """Whether INSERT ... ON CONFLICT of these values does what we mean.

    The database checks NOT NULL before it looks for a conflict: a column
    the row needs must be given even to update the row. And the statement
    (text) does not apply the columns' Python-side defaults.
    """
    for column in table.c:
        if column.name == key or column.name in values:
            continue
        if column.default is not None or (
                not column.nullable and column.server_default is None):
            return False
    return True


def _batches(key, rows):
    """Consecutive rows with the same columns: (columns, [parameters])."""
    columns, params = None, []
    for key_value, values in rows:
        these = frozenset(values)
        if these != columns and params:
            yield columns, params
            params = []
        columns = these
        params.append(dict(values, **{key: key_value}))
    if params:
        yield columns, params


def _spec_row(row):
    """A request_specs row as get_request_spec returns it."""
    row['flavor_specs'] = json.loads(row['flavor_specs'] or '{}')
    row['image_props'] = json.loads(row['image_props'] or '{}')
    return row


def _copy_spec(spec):
    """A copy of a cached spec that callers may change."""
    spec = dict(spec)
    for key in ('flavor_specs', 'image_props'):
        if isinstance(spec[key], dict):
            spec[key] = dict(spec[key])
    return spec


def _facts_row(row):
    if row is not None:
        try:
            row['facts'] = json.loads(row['facts'] or '{}')
        except ValueError:
            row['facts'] = {}
    return row


def _sqlite_pragmas(dbapi_connection, connection_record):
    cursor = dbapi_connection.cursor()
    cursor.execute('PRAGMA journal_mode=WAL')
    cursor.execute('PRAGMA synchronous=NORMAL')
    cursor.execute('PRAGMA foreign_keys=ON')
    cursor.close()
