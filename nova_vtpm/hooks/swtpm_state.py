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

"""The ``swtpm_state`` hook: no vTPM silently comes back empty.

A compute-host hook. After every lifecycle event that can lose or replace
a vTPM's state on this host (boot, reboot, power on, resize finish and
revert, live migration post_dest and rollback on the source) it:

1. inspects ``<state_root>/<uuid>/tpm2`` (no key needed);
2. gets the instance's secret the way its secret security mode allows
   (:mod:`nova_vtpm.secrets`);
3. reads the TPM's identity OFFLINE from a private copy of the state with
   a private swtpm (:meth:`nova_vtpm.swtpm.state.StateDir.read_identity`);
4. compares it with the identity recorded at first sight
   (``vtpm_identities`` in the journal);
5. after a good check, backs the state up as ciphertext (skipped when the
   newest backup holds the same files) and prunes to the retention.

A missing or empty state, one the secret cannot open, or one holding
another TPM is an ALARM: a journal event ``nova_vtpm.state.alarm`` (state
``failed``, reason = swtpm's own words and the way out, ``nova-vtpm state
restore``), an error in the log, and ``[nova_vtpm_state] alarm_action`` on
the Nova server (:mod:`nova_vtpm.actions`). A later good check clears it
(``nova_vtpm.state.alarm_cleared``; the lock or tag is undone).

In ``user`` mode the service cannot read the secret: the hook records what
can be recorded (state present, size, sha256) and says so
(``last_result = unverified``); a missing or empty state is still an alarm,
and the ciphertext is still backed up.

After a live migration away (``live_migration_post`` on the source) and a
rollback on the destination (``live_migration_rollback_dest``: the
instance stays on the source, the destination must be left clean), it
reports the state directory and libvirt ``vtpm`` secret Nova left behind
(``nova_vtpm.state.leftover``) and removes them when ``cleanup_source`` is
set and no domain of that uuid is defined here.

The periodic :meth:`SwtpmStateHook.reconcile` backs up states whose last
backup is older than ``backup_interval`` (after a full check), raises the
alarm for servers of this host whose state directory is missing or empty
(drift), records servers never seen, and forgets deleted servers after
``deleted_retention_days``.

Idempotency and order: alarms, notes and leftover reports are journal
events whose message id derives from the triggering notification, so a
redelivered event records nothing twice; backups of unchanged files are
skipped; a ``delete`` leaves a tombstone (``deleted_at``) so that a boot or
migration event that arrives after it is ignored. The identity and the
backups of a deleted server are kept ``deleted_retention_days``, then
removed by the reconciliation.

Identity across hosts: the record is in the journal. With a journal per
compute host, a server migrated in is "first seen" on the destination
unless the backup store is shared (the newest backup's fingerprint is
then the expectation); share the journal (a database server) or the
store to have every migration checked against the identity recorded at
boot.
"""

import dataclasses
import grp
import hashlib
import os
import pwd
import shutil
import stat
import time

from oslo_log import log as logging

from nova_vtpm import actions
from nova_vtpm.conf import state as state_conf
from nova_vtpm.hooks import base
from nova_vtpm import journal as journal_mod
from nova_vtpm import secrets as secrets_mod
from nova_vtpm.swtpm import backup as backup_mod
from nova_vtpm.swtpm import capabilities
from nova_vtpm.swtpm import exception as swtpm_exc
from nova_vtpm.swtpm import state as state_mod

LOG = logging.getLogger(__name__)

EVENT_ALARM = 'nova_vtpm.state.alarm'
EVENT_ALARM_CLEARED = 'nova_vtpm.state.alarm_cleared'
EVENT_LEFTOVER = 'nova_vtpm.state.leftover'
EVENT_UNVERIFIED = 'nova_vtpm.state.unverified'
EVENT_RESTORED = 'nova_vtpm.state.restored'

# vtpm_identities.last_result
OK = 'ok'
ALARM = 'alarm'
UNVERIFIED = 'unverified'
# CheckResult.result only
FIRST_SEEN = 'first_seen'
FAILED = 'failed'          # a check that raises no alarm (the CLI's)
IGNORED = 'ignored'        # a deleted instance

# The kind of an identity change (the others are StateUnreadable kinds).
IDENTITY_CHANGED = 'identity_changed'

RECONCILE = 'reconcile'
# How the guard's lock reasons begin: only such a lock is lifted by it.
LOCK_MARKER = 'vTPM state alarm'
# Servers in these states have a state dir to check.
_SETTLED_VM_STATES = frozenset(['active', 'stopped', 'paused', 'suspended'])
# Seconds before looking again at a state swtpm is writing.
_MID_WRITE_DELAY = 2.0


@dataclasses.dataclass
class CheckResult:
    """What one check of one instance's vTPM state found.

    ``result``: ok, first_seen, alarm, failed (no alarm raised: the CLI's
    checks), unverified (no secret), ignored (deleted instance).
    """

    instance_uuid: str
    result: str
    detail: str = ''
    kind: str = None
    identity: object = None
    facts: object = None
    backup_id: str = None
    expected: str = None

    @property
    def good(self):
        return self.result in (OK, FIRST_SEEN)


def make_store(conf):
    """The configured backup store (``[nova_vtpm_state] backup_store``)."""
    group = conf[state_conf.GROUP_NAME]
    if group.backup_store == backup_mod.DEFAULT_STORE:
        return backup_mod.load_store(group.backup_store,
                                     root=group.backup_dir)
    return backup_mod.load_store(group.backup_store, conf=conf)


def swtpm_owner(conf):
    """(uid, gid) of ``swtpm_user``/``swtpm_group``; None for unknown."""
    group = conf[state_conf.GROUP_NAME]
    try:
        uid = pwd.getpwnam(group.swtpm_user).pw_uid
    except KeyError:
        LOG.warning('No user %s ([nova_vtpm_state] swtpm_user) on this '
                    'host', group.swtpm_user)
        uid = None
    try:
        gid = grp.getgrnam(group.swtpm_group).gr_gid
    except KeyError:
        LOG.warning('No group %s ([nova_vtpm_state] swtpm_group) on this '
                    'host', group.swtpm_group)
        gid = None
    return uid, gid


def _message_id(kind, *parts):
    """A journal message id (<= 64 characters) for a guard event."""
    digest = hashlib.sha256('\0'.join(str(p) for p in parts).encode(
        'utf-8')).hexdigest()
    return ('nova-vtpm:%s:%s' % (kind, digest))[:64]


def _permall_sha(manifest, permall_name):
    for entry in manifest.get('files') or ():
        if entry.get('name') == permall_name:
            return entry.get('sha256')
    return None


class SwtpmStateHook(base.HookBase):
    """Guards each vTPM state of this compute host.

    :param context: the :class:`~nova_vtpm.hooks.manager.HookContext`.
    :param store: a backup store (default: :func:`make_store`).
    :param secret_source: a :class:`~nova_vtpm.secrets.SecretSource`.
    """

    NAME = 'swtpm_state'
    ROLES = (base.ROLE_COMPUTE,)

    def __init__(self, context, store=None, secret_source=None):
        super().__init__(context)
        self.conf = context.conf
        self.group = context.conf[state_conf.GROUP_NAME]
        self._store = store
        self.secrets = secret_source or secrets_mod.SecretSource(
            context.conf, context.clients)

    @property
    def store(self):
        if self._store is None:
            self._store = make_store(self.conf)
        return self._store

    @property
    def journal(self):
        return self.context.journal

    @property
    def host(self):
        return self.context.host

    # -- lifecycle events --------------------------------------------------

    def on_boot(self, event):
        self._on_check_event(event)

    def on_reboot(self, event):
        self._on_check_event(event)

    def on_power_on(self, event):
        self._on_check_event(event)

    def on_resize_finish(self, event):
        self._on_check_event(event)

    def on_resize_revert(self, event):
        self._on_check_event(event)

    def on_live_migration_post_dest(self, event):
        self._on_check_event(event)

    def on_live_migration_rollback(self, event):
        # The source, where the instance stays.
        self._on_check_event(event)

    def on_live_migration_post(self, event):
        # The source, which the instance has left.
        if event.acting_host != self.host:
            return
        self.check_leftovers(event.instance_uuid, event.lifecycle,
                             event.message_id)

    def on_live_migration_rollback_dest(self, event):
        # The destination of a failed migration: the instance stays on the
        # source (event.host); nothing of it should remain here.
        if event.acting_host != self.host or event.host == self.host:
            return
        self.check_leftovers(event.instance_uuid, event.lifecycle,
                             event.message_id)

    def on_delete(self, event):
        if event.acting_host != self.host:
            return
        record = self.journal.get_identity(event.instance_uuid)
        if record is not None and record['deleted_at'] is not None:
            return
        # A tombstone even for an instance never seen: a boot event that
        # arrives after the delete must not record (or alarm) anything.
        self.journal.put_identity(event.instance_uuid,
                                  deleted_at=event.timestamp or time.time(),
                                  host=(record or {}).get('host') or
                                  self.host)
        LOG.info('vTPM state guard: instance %(uuid)s deleted; its identity '
                 'and backups are kept %(days)d days',
                 {'uuid': event.instance_uuid,
                  'days': self.group.deleted_retention_days})

    def _on_check_event(self, event):
        if event.acting_host != self.host:
            return
        version, mode = self._vtpm_of(event)
        if version is None:
            LOG.debug('Instance %s has no vTPM (any more): nothing to '
                      'guard', event.instance_uuid)
            return
        self.check(event.instance_uuid, version, mode,
                   trigger=event.lifecycle, trigger_id=event.message_id)

    def _vtpm_of(self, event):
        """(tpm version, secret security) of an event's instance."""
        request = getattr(event, 'request', None)
        vtpm = getattr(request, 'vtpm', None)
        if vtpm is not None:
            return vtpm.version, vtpm.secret_security
        if request is not None:
            # Resolved, without a vTPM: resized to a flavor without one.
            return None, None
        record = self.journal.get_identity(event.instance_uuid)
        if record is not None and record.get('tpm_version'):
            return record['tpm_version'], record['secret_security']
        return None, None

    # -- the check ---------------------------------------------------------

    def state_dir(self, instance_uuid, version='2.0'):
        return state_mod.StateDir(self.group.state_root, instance_uuid,
                                  version)

    def _read(self, sd, secret, known_good=None):
        return sd.read_identity(
            secret, known_good_sha256=known_good,
            timeout=self.group.check_timeout, tmp_dir=self.group.tmp_dir,
            transport=self.group.swtpm_transport)

    def _inspect(self, sd):
        try:
            return sd.inspect()
        except swtpm_exc.StateUnreadable as e:
            raise base.PermanentFailure(str(e))

    def check(self, instance_uuid, version, mode, trigger, trigger_id=None,
              alarm=True, backup=True, secret=None):
        """Check one instance's vTPM state; alarm, record and back up.

        :param version: the TPM version (``2.0``, ``1.2``).
        :param mode: the secret security mode.
        :param trigger: what asked (a lifecycle event, ``reconcile``,
            ``cli``), for the records.
        :param trigger_id: the triggering notification's message id: what
            makes the journal entries of a redelivered event not count
            twice.
        :param alarm: raise the alarm on a bad state (False: the CLI only
            reports).
        :param backup: back the state up after a good check.
        :param secret: the secret to use instead of looking it up.
        :returns: a :class:`CheckResult`.
        :raises RetryLater: libvirt or Barbican down, swtpm writing.
        :raises PermanentFailure: the state cannot be read by this process,
            swtpm is not installed.
        """
        record = self.journal.get_identity(instance_uuid)
        if record is not None and record['deleted_at'] is not None:
            LOG.debug('Instance %s is deleted: ignoring %s', instance_uuid,
                      trigger)
            return CheckResult(instance_uuid, IGNORED, 'deleted')
        sd = self.state_dir(instance_uuid, version)
        facts = self._inspect(sd)
        ctx = dict(instance_uuid=instance_uuid, version=version, mode=mode,
                   trigger=trigger, trigger_id=trigger_id, record=record,
                   facts=facts, sd=sd, alarm=alarm)

        if not facts.exists or facts.empty:
            return self._bad(self._missing_or_empty(sd, facts), **ctx)
        if facts.in_use and (facts.header is None or facts.header.problems):
            raise base.RetryLater(
                'the vTPM state of instance %s is being written by its '
                'swtpm (%s); looking again shortly' % (
                    instance_uuid, '; '.join(facts.header.problems)
                    if facts.header else 'no complete header yet'),
                delay=_MID_WRITE_DELAY)

        if secret is None:
            try:
                secret = self.secrets.get(instance_uuid, mode)
            except secrets_mod.SecretServiceUnavailable as e:
                raise base.RetryLater(str(e))
            except secrets_mod.SecretUnavailable as e:
                return self._unverified(e, backup=backup, **ctx)

        expected = self._expected_fingerprint(instance_uuid, record)
        known_good = self._known_good(instance_uuid, sd, facts)
        try:
            identity = self._read(sd, secret, known_good)
        except swtpm_exc.SwtpmNotAvailable as e:
            raise base.PermanentFailure(str(e))
        except swtpm_exc.StateUnreadable as e:
            if e.kind == swtpm_exc.NO_ACCESS:
                raise base.PermanentFailure(str(e))
            if e.kind == swtpm_exc.SWTPM_FAILED:
                raise base.RetryLater(str(e))
            if facts.in_use and self._changed_since(sd, facts):
                raise base.RetryLater(
                    'the vTPM state of instance %s changed while it was '
                    'read (its swtpm is writing); looking again shortly'
                    % instance_uuid, delay=_MID_WRITE_DELAY)
            return self._bad(e, expected=expected, **ctx)
        finally:
            secret = None

        if expected and identity.fingerprint != expected:
            changed = swtpm_exc.IdentityChanged(sd.path, expected,
                                                identity.fingerprint)
            return self._bad(changed, identity=identity, expected=expected,
                             **ctx)
        return self._good(identity, expected, backup=backup, **ctx)

    def _missing_or_empty(self, sd, facts):
        """swtpm's own words on a missing or empty state directory.

        No key is needed for that: swtpm fails on the lock file of a
        missing directory, and makes a fresh TPM in an empty one.
        """
        try:
            self._read(sd, None)
        except swtpm_exc.StateUnreadable as e:
            return e
        except swtpm_exc.SwtpmNotAvailable as e:
            raise base.PermanentFailure(str(e))
        # Not expected: an unencrypted TPM appeared in between.
        if not facts.exists:
            return swtpm_exc.StateUnreadable(
                swtpm_exc.MISSING_DIR, sd.path,
                'the state directory does not exist')
        return swtpm_exc.StateUnreadable(
            swtpm_exc.EMPTY_STATE, sd.path,
            'the directory holds no state file')

    def _changed_since(self, sd, facts):
        try:
            now = sd.inspect()
        except swtpm_exc.StateUnreadable:
            return False
        return now.permall_sha256 != facts.permall_sha256

    def _expected_fingerprint(self, instance_uuid, record):
        """The recorded identity; else the newest backup's (shared store)."""
        if record is not None and record.get('fingerprint'):
            return record['fingerprint']
        try:
            manifests = self.store.list(instance_uuid)
        except Exception:
            LOG.exception('Cannot list the vTPM state backups of instance '
                          '%s', instance_uuid)
            return None
        for manifest in reversed(manifests):
            if manifest.get('fingerprint'):
                LOG.info('No recorded vTPM identity of instance %(uuid)s in '
                         'this journal: expecting the one of backup '
                         '%(id)s (from %(host)s)',
                         {'uuid': instance_uuid,
                          'id': manifest.get('backup_id'),
                          'host': manifest.get('host')})
                return manifest['fingerprint']
        return None

    def _known_good(self, instance_uuid, sd, facts):
        """The permall sha256 if a backup of these very bytes exists.

        Only then does a failed integrity check certainly mean a wrong
        key; a state that changed since its last backup is ambiguous.
        """
        if not facts.permall_sha256:
            return None
        try:
            manifests = self.store.list(instance_uuid)
        except Exception:
            return None
        for manifest in manifests:
            if _permall_sha(manifest, sd.permall_name) == \
                    facts.permall_sha256:
                return facts.permall_sha256
        return None

    # -- outcomes ----------------------------------------------------------

    def _identity_values(self, identity, version, mode, facts):
        values = dict(host=self.host, tpm_version=version,
                      secret_security=mode,
                      permall_size=facts.permall_size if facts else None,
                      permall_sha256=facts.permall_sha256 if facts
                      else None)
        if identity is not None:
            values.update(
                fingerprint=identity.fingerprint,
                ek_cert_sha256=identity.ek_cert_sha256,
                ek_pub_sha256=identity.ek_pub_sha256,
                ek_cert_subject=(identity.ek_cert_subject or '')[:255]
                or None)
        return values

    def _good(self, identity, expected, instance_uuid, version, mode,
              trigger, trigger_id, record, facts, sd, alarm, backup):
        now = time.time()
        values = self._identity_values(identity, version, mode, facts)
        values.update(last_verified=now, last_result=OK)
        if expected is None:
            result = FIRST_SEEN
            detail = 'identity %s recorded at first sight (%s)' % (
                identity.fingerprint, trigger)
            if trigger != 'boot':
                detail += ('; a change of TPM before this first sight '
                           'cannot be detected')
            values.update(last_detail=detail)
            if record is None or not record.get('first_seen'):
                values['first_seen'] = now
            LOG.info('vTPM state guard: instance %(uuid)s: %(detail)s',
                     {'uuid': instance_uuid, 'detail': detail})
        else:
            result = OK
            detail = 'holds the recorded TPM %s' % identity.fingerprint
            values.update(last_detail=detail)
            if record is None or not record.get('first_seen'):
                values['first_seen'] = now
            LOG.debug('vTPM state guard: instance %s %s (%s)',
                      instance_uuid, detail, trigger)
        self.journal.put_identity(instance_uuid, **values)
        if record is not None and record.get('last_result') == ALARM:
            self._clear_alarm(instance_uuid, record, identity, trigger,
                              trigger_id)
        backup_id = None
        if backup:
            backup_id = self._backup(sd, instance_uuid, identity, trigger,
                                     facts, identity.fingerprint)
        return CheckResult(instance_uuid, result, detail, identity=identity,
                           facts=facts, backup_id=backup_id,
                           expected=expected)

    def _unverified(self, error, instance_uuid, version, mode, trigger,
                    trigger_id, record, facts, sd, alarm, backup):
        detail = ('recorded what could be recorded (state present, %s %d '
                  'bytes, sha256 %s) - identity not verifiable in %s mode: '
                  '%s' % (sd.permall_name, facts.permall_size or 0,
                          facts.permall_sha256, error.mode, error.reason))
        values = self._identity_values(None, version, mode, facts)
        values.update(last_verified=time.time(), last_result=UNVERIFIED,
                      last_detail=detail)
        if record is None or not record.get('first_seen'):
            values['first_seen'] = time.time()
        self.journal.put_identity(instance_uuid, **values)
        fresh = (record is None or record.get('last_result') != UNVERIFIED
                 or (record.get('last_detail') or '').split(' - ', 1)[-1]
                 != detail.split(' - ', 1)[-1])
        if fresh:
            log = LOG.info if error.mode == secrets_mod.USER else LOG.warning
            log('vTPM state guard: instance %(uuid)s: %(detail)s',
                {'uuid': instance_uuid, 'detail': detail})
            self.journal.record_event(
                message_id=_message_id('state-note', instance_uuid,
                                       trigger_id or time.time()),
                event_type=EVENT_UNVERIFIED, lifecycle=trigger,
                instance_uuid=instance_uuid, host=self.host,
                timestamp=time.time(), state=journal_mod.DONE,
                reason=detail, payload={
                    'instance_uuid': instance_uuid, 'mode': error.mode,
                    'facts': facts.to_dict(), 'trigger': trigger})
        backup_id = None
        if backup:
            backup_id = self._backup(sd, instance_uuid, None, trigger, facts,
                                     (record or {}).get('fingerprint'))
        return CheckResult(instance_uuid, UNVERIFIED, detail, kind=None,
                           facts=facts, backup_id=backup_id)

    def _bad(self, error, instance_uuid, version, mode, trigger, trigger_id,
             record, facts, sd, alarm, identity=None, expected=None):
        kind = getattr(error, 'kind', IDENTITY_CHANGED)
        if isinstance(error, swtpm_exc.IdentityChanged):
            kind = IDENTITY_CHANGED
        if not alarm:
            return CheckResult(instance_uuid, FAILED, str(error), kind=kind,
                               identity=identity, facts=facts,
                               expected=expected)
        if trigger == RECONCILE and record is not None and \
                record.get('last_result') == ALARM:
            # Already alarmed; the periodic look adds nothing new.
            return CheckResult(instance_uuid, ALARM, str(error), kind=kind,
                               identity=identity, facts=facts,
                               expected=expected)
        return self._raise_alarm(error, kind, instance_uuid, version, mode,
                                 trigger, trigger_id, record, facts,
                                 identity, expected)

    def recovery_text(self, instance_uuid, fingerprint=None):
        try:
            manifests = self.store.list(instance_uuid)
        except Exception:
            manifests = []
        good = [m for m in manifests
                if not fingerprint or m.get('fingerprint') == fingerprint]
        if not good:
            return ('No backup of this vTPM state %sexists in %s: the TPM '
                    'identity cannot be brought back by nova-vtpm.'
                    % ('with the recorded identity ' if fingerprint else '',
                       self.store))
        return ('To recover: stop the server, then on host %s run '
                '"nova-vtpm state restore %s" (newest good backup %s; '
                '"nova-vtpm state list --instance %s" lists them).'
                % (self.host, instance_uuid, good[-1].get('backup_id'),
                   instance_uuid))

    def _raise_alarm(self, error, kind, instance_uuid, version, mode,
                     trigger, trigger_id, record, facts, identity,
                     expected):
        now = time.time()
        action = self.group.alarm_action
        reason = '%s %s' % (error, self.recovery_text(instance_uuid,
                                                      expected))
        payload = {
            'instance_uuid': instance_uuid, 'host': self.host,
            'kind': kind, 'trigger': trigger, 'path': facts.path,
            'facts': facts.to_dict(), 'expected_fingerprint': expected,
            'actual_fingerprint': identity.fingerprint if identity
            else None,
            'swtpm_log': getattr(error, 'detail', None),
            'client_error': getattr(error, 'client_error', None),
            'action': action}
        _, created = self.journal.record_event(
            message_id=_message_id('state-alarm', instance_uuid,
                                   trigger_id or now, kind),
            event_type=EVENT_ALARM, lifecycle=trigger,
            instance_uuid=instance_uuid, host=self.host, timestamp=now,
            state=journal_mod.FAILED, reason=reason, payload=payload)
        values = self._identity_values(None, version, mode, facts)
        values.update(last_verified=now, last_result=ALARM,
                      last_detail=reason)
        if record is None or not record.get('first_seen'):
            values['first_seen'] = now
        if action != actions.NONE:
            values['alarm_action'] = action
        self.journal.put_identity(instance_uuid, **values)
        if created:
            LOG.error('vTPM STATE ALARM for instance %(uuid)s on host '
                      '%(host)s after %(trigger)s (%(kind)s): %(reason)s',
                      {'uuid': instance_uuid, 'host': self.host,
                       'trigger': trigger, 'kind': kind, 'reason': reason})
        if action != actions.NONE:
            self._apply_action(instance_uuid, action, kind)
        return CheckResult(instance_uuid, ALARM, reason, kind=kind,
                           identity=identity, facts=facts, expected=expected)

    def _apply_action(self, instance_uuid, action, kind):
        short = (LOCK_MARKER + ' (%s) on %s: see "nova-vtpm events list '
                 '--instance %s"; recover with "nova-vtpm state restore %s"'
                 % (kind, self.host, instance_uuid, instance_uuid))
        try:
            actions.apply_action(self.context.clients, instance_uuid,
                                 action, short, tag=state_conf.ALARM_TAG)
        except actions.ActionFailed as e:
            if e.transient:
                # The alarm is recorded (once: its message id); the retry
                # applies the action again.
                raise base.RetryLater(str(e))
            LOG.error('vTPM state alarm for instance %(uuid)s: the %(action)s'
                      ' action failed: %(error)s',
                      {'uuid': instance_uuid, 'action': action, 'error': e})

    def _clear_alarm(self, instance_uuid, record, identity, trigger,
                     trigger_id):
        now = time.time()
        reason = ('The vTPM state of instance %s holds the recorded TPM %s '
                  'again (checked after %s): the alarm is over.'
                  % (instance_uuid, identity.fingerprint, trigger))
        self.journal.record_event(
            message_id=_message_id('state-clear', instance_uuid,
                                   trigger_id or now),
            event_type=EVENT_ALARM_CLEARED, lifecycle=trigger,
            instance_uuid=instance_uuid, host=self.host, timestamp=now,
            state=journal_mod.DONE, reason=reason,
            payload={'instance_uuid': instance_uuid,
                     'fingerprint': identity.fingerprint,
                     'previous': record.get('last_detail')})
        LOG.warning('vTPM state guard: %s', reason)
        action = record.get('alarm_action')
        if action:
            try:
                actions.clear_action(self.context.clients, instance_uuid,
                                     action, tag=state_conf.ALARM_TAG,
                                     lock_marker=LOCK_MARKER)
            except actions.ActionFailed as e:
                LOG.warning('Cannot undo the %(action)s of instance '
                            '%(uuid)s: %(error)s; undo it by hand',
                            {'action': action, 'uuid': instance_uuid,
                             'error': e})
            self.journal.put_identity(instance_uuid, alarm_action=None)

    # -- backups -----------------------------------------------------------

    def _host_facts(self):
        try:
            return capabilities.host_facts()
        except swtpm_exc.SwtpmNotAvailable as e:
            raise base.PermanentFailure(str(e))

    def _backup(self, sd, instance_uuid, identity, reason, facts,
                protect_fingerprint, force=False):
        """Back up unless the newest backup has these very files."""
        manifests = self.store.list(instance_uuid)
        if manifests and not force:
            latest = manifests[-1]
            same = ({(f.get('name'), f.get('size'))
                     for f in latest.get('files') or ()} ==
                    set(facts.files) and
                    _permall_sha(latest, sd.permall_name) ==
                    facts.permall_sha256 and
                    (identity is None or
                     latest.get('fingerprint') == identity.fingerprint))
            if same:
                LOG.debug('vTPM state of instance %s unchanged since backup '
                          '%s', instance_uuid, latest.get('backup_id'))
                return latest.get('backup_id')
        try:
            manifest = backup_mod.backup(
                sd, self.store, identity=identity,
                instance_uuid=instance_uuid, reason=reason,
                host_facts=self._host_facts())
        except swtpm_exc.StateUnreadable as e:
            LOG.warning('Not backing up the vTPM state of instance '
                        '%(uuid)s: %(error)s',
                        {'uuid': instance_uuid, 'error': e})
            return None
        self.prune(instance_uuid, protect_fingerprint)
        self.journal.put_identity(instance_uuid, last_backup_at=time.time(),
                                  last_backup_id=manifest['backup_id'])
        return manifest['backup_id']

    def prune(self, instance_uuid, protect_fingerprint=None):
        """Keep ``backup_retention`` newest backups and the last good one.

        The newest backup holding ``protect_fingerprint`` (the recorded
        identity) is never pruned.

        :returns: the ids deleted.
        """
        manifests = self.store.list(instance_uuid)
        keep = self.group.backup_retention
        protected = None
        if protect_fingerprint:
            protected = next(
                (m.get('backup_id') for m in reversed(manifests)
                 if m.get('fingerprint') == protect_fingerprint), None)
        doomed = [m.get('backup_id') for m in manifests[:-keep]
                  if m.get('backup_id') != protected]
        for backup_id in doomed:
            self.store.delete(instance_uuid, backup_id)
        if doomed:
            LOG.info('Pruned %(n)d vTPM state backups of instance %(uuid)s',
                     {'n': len(doomed), 'uuid': instance_uuid})
        return doomed

    def backup_now(self, instance_uuid, version, mode, secret=None):
        """A check without alarm, and a backup even if nothing changed.

        :returns: a :class:`CheckResult`; ``backup_id`` is set when a
            backup was made (a failed check makes none).
        """
        result = self.check(instance_uuid, version, mode, trigger='cli',
                            alarm=False, backup=False, secret=secret)
        if result.result in (OK, FIRST_SEEN, UNVERIFIED):
            record = self.journal.get_identity(instance_uuid) or {}
            result.backup_id = self._backup(
                self.state_dir(instance_uuid, version), instance_uuid,
                result.identity, 'manual', result.facts,
                record.get('fingerprint'), force=True)
        return result

    # -- restore -----------------------------------------------------------

    def choose_backup(self, instance_uuid, fingerprint=None):
        """The newest backup with ``fingerprint`` (any if None), or None."""
        for manifest in reversed(self.store.list(instance_uuid)):
            if not fingerprint or manifest.get('fingerprint') == fingerprint:
                return manifest
        return None

    def restore(self, instance_uuid, version, mode, backup_id=None,
                secret=None):
        """Restore a backup into the state directory and prove the result.

        The server must be stopped (the caller asks Nova). The backup is
        checked against its manifest, written beside the state, proven to
        open with the current secret and to hold the recorded TPM, swapped
        in by rename with ``swtpm_user``/``swtpm_group`` and 0600 files,
        and read again in place.

        :returns: (identity, manifest).
        :raises SecretUnavailable, SecretServiceUnavailable: no secret.
        :raises BackupNotFound, BackupCorrupt, RestoreFailed, StateInUse:
            see :func:`nova_vtpm.swtpm.backup.restore`.
        :raises IdentityChanged: the result is not the recorded TPM.
        """
        record = self.journal.get_identity(instance_uuid) or {}
        expected = record.get('fingerprint')
        if backup_id is None:
            manifest = self.choose_backup(instance_uuid, expected)
            if manifest is None:
                raise swtpm_exc.BackupNotFound(
                    backup_id='with identity %s' % expected if expected
                    else '(any)', instance_uuid=instance_uuid,
                    store=self.store)
            backup_id = manifest['backup_id']
        manifest = backup_mod.verify(self.store, instance_uuid, backup_id)
        if secret is None:
            secret = self.secrets.get(instance_uuid, mode)
        sd = self.state_dir(instance_uuid, version)
        uid, gid = swtpm_owner(self.conf)
        try:
            identity = backup_mod.restore(
                self.store, backup_id, sd, secret,
                expected_fingerprint=expected, uid=uid, gid=gid,
                instance_uuid=instance_uuid,
                timeout=self.group.check_timeout)
            # The proof, on the state as libvirt will find it.
            proof = self._read(sd, secret)
        finally:
            secret = None
        if proof.fingerprint != identity.fingerprint:
            raise swtpm_exc.IdentityChanged(sd.path, identity.fingerprint,
                                            proof.fingerprint)
        problems = self._owner_problems(sd, uid, gid)
        if problems:
            raise swtpm_exc.RestoreFailed(
                backup_id=backup_id, path=sd.path,
                reason='; '.join(problems),
                original='The restored state is in place; fix it by hand.')
        facts = sd.inspect()
        now = time.time()
        values = self._identity_values(proof, version, mode, facts)
        values.update(last_verified=now, last_result=OK,
                      last_detail='restored from backup %s' % backup_id)
        if not record.get('first_seen'):
            values['first_seen'] = now
        self.journal.put_identity(instance_uuid, **values)
        self.journal.record_event(
            message_id=_message_id('state-restore', instance_uuid, now),
            event_type=EVENT_RESTORED, lifecycle='restore',
            instance_uuid=instance_uuid, host=self.host, timestamp=now,
            state=journal_mod.DONE,
            reason='vTPM state restored from backup %s (TPM %s)' % (
                backup_id, proof.fingerprint),
            payload={'instance_uuid': instance_uuid, 'backup_id': backup_id,
                     'fingerprint': proof.fingerprint})
        if record.get('last_result') == ALARM:
            self._clear_alarm(instance_uuid, record, proof, 'restore', now)
        LOG.warning('vTPM state of instance %(uuid)s restored from backup '
                    '%(id)s: TPM %(fp)s',
                    {'uuid': instance_uuid, 'id': backup_id,
                     'fp': proof.fingerprint})
        return proof, manifest

    @staticmethod
    def _owner_problems(sd, uid, gid):
        problems = []
        st = os.stat(sd.path)
        if stat.S_IMODE(st.st_mode) != 0o700:
            problems.append('%s has mode 0%o' % (sd.path,
                                                 stat.S_IMODE(st.st_mode)))
        for name in os.listdir(sd.path):
            path = os.path.join(sd.path, name)
            fst = os.stat(path)
            if stat.S_IMODE(fst.st_mode) != 0o600:
                problems.append('%s has mode 0%o' % (
                    name, stat.S_IMODE(fst.st_mode)))
            for want, have, what in ((uid, fst.st_uid, 'owner'),
                                     (gid, fst.st_gid, 'group')):
                if want is not None and want != have:
                    problems.append('%s has %s %d, not %d' % (
                        name, what, have, want))
        return problems

    # -- leftovers ---------------------------------------------------------

    def check_leftovers(self, instance_uuid, trigger, trigger_id=None):
        """Report (and, if configured, remove) what a departed vTPM left.

        :returns: (found, removed): lists of descriptions.
        :raises RetryLater: libvirt is unreachable.
        """
        path = os.path.join(self.group.state_root, instance_uuid)
        found, removed, notes = [], [], []
        if os.path.lexists(path):
            found.append('state directory %s' % path)
        virsh = self.secrets.virsh
        try:
            secret_uuids = virsh.instance_secrets(instance_uuid)
        except secrets_mod.VirshError as e:
            if e.connection:
                raise base.RetryLater('libvirt is unavailable: %s' % e)
            secret_uuids = []
            notes.append('libvirt secrets not checked: %s' % e)
        found += ['libvirt vtpm secret %s' % s for s in secret_uuids]
        if not found:
            LOG.info('vTPM state guard: instance %(uuid)s left nothing on '
                     '%(host)s after %(trigger)s',
                     {'uuid': instance_uuid, 'host': self.host,
                      'trigger': trigger})
            return found, removed
        if self.group.cleanup_source:
            keep = self._why_keep(instance_uuid, path)
            if keep:
                notes.append('not removed: %s' % keep)
            else:
                for secret_uuid in secret_uuids:
                    try:
                        virsh.undefine_secret(secret_uuid)
                        removed.append('libvirt vtpm secret %s'
                                       % secret_uuid)
                    except secrets_mod.VirshError as e:
                        notes.append('cannot undefine secret %s: %s'
                                     % (secret_uuid, e))
                if os.path.lexists(path):
                    try:
                        shutil.rmtree(path)
                        removed.append('state directory %s' % path)
                    except OSError as e:
                        notes.append('cannot remove %s: %s' % (path, e))
        else:
            notes.append('[nova_vtpm_state] cleanup_source is off: remove '
                         'them by hand (virsh secret-undefine; rm -r) once '
                         'the server runs well elsewhere')
        reason = ('After %s, instance %s left on host %s: %s.%s%s' % (
            trigger, instance_uuid, self.host, ', '.join(found),
            (' Removed: %s.' % ', '.join(removed)) if removed else '',
            (' %s.' % '; '.join(notes)) if notes else ''))
        now = time.time()
        self.journal.record_event(
            message_id=_message_id('state-leftover', instance_uuid,
                                   trigger_id or now),
            event_type=EVENT_LEFTOVER, lifecycle=trigger,
            instance_uuid=instance_uuid, host=self.host, timestamp=now,
            state=journal_mod.DONE, reason=reason,
            payload={'instance_uuid': instance_uuid, 'found': found,
                     'removed': removed, 'notes': notes})
        LOG.warning('vTPM state guard: %s', reason)
        return found, removed

    def _why_keep(self, instance_uuid, path):
        try:
            if self.secrets.virsh.domain_defined(instance_uuid):
                return ('a domain with uuid %s is defined on this host'
                        % instance_uuid)
        except secrets_mod.VirshError as e:
            return 'cannot ask libvirt about the domain: %s' % e
        for leaf in state_mod.VERSION_DIRS.values():
            if state_mod.state_in_use(os.path.join(path, leaf)):
                return 'a swtpm holds the state in %s' % os.path.join(
                    path, leaf)
        return None

    # -- periodic ------------------------------------------------------------

    def reconcile(self, servers):
        """Periodic backups, drift detection, first sight, forgetting.

        :param servers: Nova's servers (the reconciler gives a compute
            agent those of its host).
        :returns: counters.
        """
        counts = {'checked': 0, 'backed_up': 0, 'alarms': 0,
                  'first_seen': 0, 'unverified': 0, 'errors': 0,
                  'purged': 0}
        now = time.time()
        interval = self.group.backup_interval
        for server in servers:
            vtpm = getattr(server.request, 'vtpm', None)
            if server.host != self.host or vtpm is None:
                continue
            if server.task_state or server.vm_state not in \
                    _SETTLED_VM_STATES:
                continue
            uuid = server.uuid
            try:
                record = self.journal.get_identity(uuid)
                if record is not None and record['deleted_at'] is not None:
                    continue
                facts = self._inspect(self.state_dir(uuid, vtpm.version))
                drift = not facts.exists or facts.empty
                due = bool(interval) and (
                    record is None or not record.get('last_backup_at') or
                    now - record['last_backup_at'] >= interval)
                if not (drift or due or record is None):
                    continue
                result = self.check(uuid, vtpm.version,
                                    vtpm.secret_security, trigger=RECONCILE,
                                    backup=due or record is None)
            except (base.RetryLater, base.PermanentFailure) as e:
                counts['errors'] += 1
                LOG.warning('vTPM state guard: cannot check instance '
                            '%(uuid)s now: %(error)s',
                            {'uuid': uuid, 'error': e})
                continue
            counts['checked'] += 1
            if result.result == ALARM:
                counts['alarms'] += 1
            elif result.result == FIRST_SEEN:
                counts['first_seen'] += 1
            elif result.result == UNVERIFIED:
                counts['unverified'] += 1
            if result.backup_id and (record is None or result.backup_id !=
                                     record.get('last_backup_id')):
                counts['backed_up'] += 1
        counts['purged'] = self.purge_deleted(now)
        return counts

    def purge_deleted(self, now=None):
        """Forget the identity and backups of long-deleted servers."""
        now = now or time.time()
        horizon = now - self.group.deleted_retention_days * 86400
        purged = 0
        for record in self.journal.list_identities(host=self.host):
            deleted_at = record.get('deleted_at')
            if deleted_at is None or deleted_at > horizon:
                continue
            uuid = record['instance_uuid']
            for manifest in self.store.list(uuid):
                self.store.delete(uuid, manifest['backup_id'])
            self.journal.delete_identity(uuid)
            purged += 1
            LOG.info('vTPM state guard: forgot the identity and backups of '
                     'instance %s, deleted %.1f days ago', uuid,
                     (now - deleted_at) / 86400)
        return purged
