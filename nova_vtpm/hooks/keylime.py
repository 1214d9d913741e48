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

"""The ``keylime`` hook: every attested vTPM server enrolled with Keylime.

A controller hook, for servers whose vTPM request resolves to attestation
``required`` or ``optional`` (``keylime:attestation`` /
``keylime_attestation``, else ``[nova_vtpm_attestation] default_mode``).

Boot (``instance.create.end``):

1. wait, as deferred retries and never a sleep, until the guest's Keylime
   agent has registered with the registrar under the instance UUID, up to
   ``[nova_vtpm_keylime] registration_deadline`` seconds after the event.
   Past it, a ``required`` server gets ``failure_action`` and the event
   fails with the reason; an ``optional`` one is only recorded (the
   reconciliation still enrols it if its agent registers later);
2. check the EK (:func:`nova_vtpm.keylime.ek.verify_ek`): the certificate
   chains to a compute host's swtpm-localca in ``ek_trust_dir``, its CN is
   ``<domain name>:<instance uuid>``, and its key is the EK the TPM proved
   to the registrar (``ek_tpm``). Any mismatch: refused, never added,
   recorded with the reason (and the failure action for ``required``);
3. add the agent to the verifier with the TPM policy the flavor or image
   names (``keylime:tpm_policy``: a policy of ``[nova_vtpm_attestation]
   tpm_policy_file``; default ``default_tpm_policy``) and the runtime and
   measured boot policy names (stored in Keylime), metadata naming the
   instance, project, host and flavor, and the agent's address: the
   server's fixed address on ``agent_network`` (from Nova), else the one the
   agent registered. An agent the verifier has already is enrolled.

Delete (``instance.delete.end``): the agent is removed from the verifier and
the registrar (absent is fine); the record stays as ``removed`` (so a boot
event that arrives late enrols nothing).

Live migration (``live_migration_post_dest``, ``live_migration_rollback``),
``reboot`` and ``power_on``: the guest's agent was unreachable for a while
and the verifier may have given up (Failed, Invalid Quote, Tenant Quote
Failed): the hook makes sure the agent is back to Get Quote / PASS without
a manual step. While the agent is not reachable, or the verifier is still
retrying, it waits (deferred retries); once the agent answers, an agent the
verifier gave up on is deleted from the verifier and added again (a
``stop``/``reactivate`` does not resume polling; delete and add always
does). It does so once per event: if the agent fails again after that, it
is an attestation failure.

Reconciliation (periodic): the verifier's status of every agent (one bulk
call) is recorded; a failed attestation gets the failure action (once per
failure; a ``required`` server only) and is recorded; an agent that passes
again after one has the action undone where that is safe (the tag, and
nova-vtpm's own lock). A server that should be enrolled and is not is
enrolled (drift: lost notifications, an agent that registered after the
deadline, a verifier that was down); the enrolled agent of a server that is
gone is removed.

Every outcome is in the journal table ``attestations`` (``nova-vtpm
attestation list|show``); failures and refusals are also journal events
``nova_vtpm.attestation.failed`` (``nova-vtpm events list``).
"""

import dataclasses
import hashlib
import json
import os
import socket
import ssl
import time

from oslo_config import cfg
from oslo_log import log as logging

from nova_vtpm import actions
from nova_vtpm import exception
from nova_vtpm.hooks import base
from nova_vtpm import journal as journal_mod
from nova_vtpm.keylime import client as kl_client
from nova_vtpm.keylime import ek as ek_mod
from nova_vtpm.keylime import trust as trust_mod
from nova_vtpm import policy as policy_mod
from nova_vtpm import tpm

LOG = logging.getLogger(__name__)

NAME = 'keylime'
GROUP = 'nova_vtpm_hook_keylime'

# Enrolment states (attestations.state).
WAITING = 'waiting'
ENROLLED = 'enrolled'
REFUSED = 'refused'
FAILED = 'failed'
REMOVED = 'removed'
STATES = (WAITING, ENROLLED, REFUSED, FAILED, REMOVED)

ATTESTED_MODES = ('required', 'optional')

# The tag of the ``tag`` failure action.
ATTESTATION_TAG = 'keylime-attestation-failed'

EVENT_FAILED = 'nova_vtpm.attestation.failed'
EVENT_RECOVERED = 'nova_vtpm.attestation.recovered'

# Servers in these Nova states can be attested: a stopped or paused guest
# cannot answer the verifier, and that is not an attestation failure.
ATTESTABLE_VM_STATES = frozenset(['active'])

CONFIG_OPTS = [
    cfg.FloatOpt(
        'registration_poll_min',
        default=0.5, min=0.05,
        help="""
Seconds between two looks at the registrar while a booted server's agent has
not registered yet, at first. The delay grows with the time waited (a
sixtieth of it: 1 s after one minute), up to ``registration_poll_max``: an
agent that registers within a minute of the boot is enrolled within about a
second.
"""),
    cfg.FloatOpt(
        'registration_poll_max',
        default=10.0, min=0.1,
        help='The longest delay between two looks at the registrar while '
             'waiting for a registration.'),
    cfg.IntOpt(
        'recovery_deadline',
        default=300, min=1,
        help="""
Seconds after a live migration, a reboot or a power on within which the
server's agent must be back to Get Quote / PASS at the verifier. Past it,
the server is recorded as failed (and gets the failure action when its
attestation is required).
"""),
    cfg.IntOpt(
        'transient_window',
        default=900, min=0,
        help="""
Seconds after an event during which transient trouble (the registrar, the
verifier or Nova unreachable) is waited out with deferred retries that do
not use up the agent's retry budget. Past it, a failing call fails the
event; the periodic reconciliation repairs what is left.
"""),
    cfg.FloatOpt(
        'probe_timeout',
        default=1.0, min=0.05,
        help='Seconds to wait for a TCP connection to a guest\'s agent when '
             'checking that it is reachable again.'),
]


def _clamp(value, low, high):
    return max(low, min(high, value))


def _short(text, length=1000):
    text = ' '.join(str(text).split())
    return text if len(text) <= length else text[:length - 3] + '...'


def attestation_of(request):
    """The request's Attestation when the server is attested, else None."""
    att = getattr(request, 'attestation', None) if request else None
    if att is None or att.mode not in ATTESTED_MODES:
        return None
    return att


@dataclasses.dataclass
class Target:
    """The server being enrolled, from an event or from Nova's list."""

    uuid: str
    mode: str
    attestation: object
    request: object = None
    project_id: str = None
    host: str = None
    flavor_name: str = None

    @classmethod
    def from_event(cls, event, att):
        return cls(uuid=event.instance_uuid, mode=att.mode, attestation=att,
                   request=getattr(event, 'request', None),
                   project_id=event.project_id, host=event.host,
                   flavor_name=event.flavor_name)

    @classmethod
    def from_server(cls, server, att):
        return cls(uuid=server.uuid, mode=att.mode, attestation=att,
                   request=server.request, project_id=server.project_id,
                   host=server.host, flavor_name=server.flavor_name)

    @property
    def required(self):
        return self.mode == 'required'


class KeylimeHook(base.HookBase):
    """Enrols attested vTPM servers with Keylime and keeps them attested."""

    NAME = NAME
    ROLES = (base.ROLE_CONTROLLER,)
    CONFIG_OPTS = CONFIG_OPTS

    def __init__(self, context, registrar=None, verifier=None,
                 trust_store=None, clock=time.time):
        super().__init__(context)
        self.conf = context.conf
        self.journal = context.journal
        # (The manager registers them; a hook built by hand too.)
        self.conf.register_opts(CONFIG_OPTS, group=GROUP)
        self._registrar = registrar
        self._verifier = verifier
        self._trust = trust_store
        self._now = clock
        self._policies = None
        self._policies_sig = None

    # -- configuration and clients ---------------------------------------

    @property
    def group(self):
        return self.conf.nova_vtpm_keylime

    @property
    def hook_group(self):
        return self.conf[GROUP]

    @property
    def configured(self):
        return bool(self._verifier is not None or (
            self.group.verifier_url and self.group.registrar_url))

    def _not_configured(self):
        return base.PermanentFailure(
            'Keylime is not configured: set [nova_vtpm_keylime] '
            'registrar_url and verifier_url (and the TLS files), or remove '
            'the keylime hook from [nova_vtpm_agent] enabled_hooks.')

    def registrar(self):
        if self._registrar is None:
            if not self.group.registrar_url:
                raise self._not_configured()
            self._registrar = kl_client.RegistrarClient.from_conf(self.conf)
        return self._registrar

    def verifier(self):
        if self._verifier is None:
            if not self.group.verifier_url:
                raise self._not_configured()
            self._verifier = kl_client.VerifierClient.from_conf(self.conf)
        return self._verifier

    def trust_store(self):
        """The EK trust store, reloaded when its directory changed."""
        if self._trust is None:
            self._trust = trust_mod.TrustStore(self.group.ek_trust_dir)
        else:
            self._trust.reload_if_changed()
        return self._trust

    def tpm_policies(self):
        """The TPM policy file's policies ({} without a file)."""
        path = self.conf.nova_vtpm_attestation.tpm_policy_file
        if not path:
            return {}
        try:
            st = os.stat(path)
            sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            sig = None
        if self._policies is None or sig != self._policies_sig:
            # Raises PolicyFileError: the caller refuses with it.
            self._policies = policy_mod.load_tpm_policies(path)
            self._policies_sig = sig
        return self._policies

    # -- the record ------------------------------------------------------

    def _put(self, target, **values):
        values.setdefault('mode', target.mode)
        if target.host:
            values.setdefault('host', target.host)
        if target.project_id:
            values.setdefault('project_id', target.project_id)
        self.journal.put_attestation(target.uuid, **values)

    def _record_status(self, target, status, **values):
        values.update(
            operational_state=status.operational_state,
            operational_state_name=status.state_name,
            attestation_status=status.attestation_status,
            attestation_count=status.attestation_count)
        if status.last_successful_attestation:
            values['last_success'] = float(
                status.last_successful_attestation)
        self._put(target, **values)

    def _event(self, target, event_type, state, reason, key, payload=None):
        now = self._now()
        message_id = 'sha256:' + hashlib.sha256(('%s|%s|%s|%r' % (
            event_type, target.uuid, key, now)).encode()).hexdigest()[:56]
        body = {'instance_uuid': target.uuid, 'mode': target.mode,
                'host': target.host, 'key': key}
        body.update(payload or {})
        self.journal.record_event(
            message_id=message_id, event_type=event_type,
            lifecycle=None, instance_uuid=target.uuid, host=target.host,
            timestamp=now, state=state, reason=reason, payload=body)

    def _fail(self, target, state, reason, key, row=None, action=True):
        """Record a failure; the failure action once per failure.

        :param state: the enrolment state to record.
        :param key: names this failure: the action is applied when it
            differs from the last failure's.
        :param action: False for failures that are not the server's (a
            configuration problem).
        :raises RetryLater: the action failed and may work later.
        """
        now = self._now()
        if row is None:
            row = self.journal.get_attestation(target.uuid) or {}
        values = dict(state=state, last_failure_reason=_short(reason),
                      last_failure_at=now)
        if row.get('failure_key') == key:
            self._put(target, **values)
            return None
        applied = None
        chosen = self.group.failure_action if (
            action and target.required) else actions.NONE
        LOG.error('Keylime attestation of instance %(uuid)s (%(mode)s): '
                  '%(reason)s%(action)s',
                  {'uuid': target.uuid, 'mode': target.mode,
                   'reason': reason,
                   'action': '' if chosen == actions.NONE else
                   '; action: %s' % chosen})
        if chosen != actions.NONE:
            try:
                applied = actions.apply_action(
                    self.context.clients, target.uuid, chosen,
                    'Keylime attestation: %s' % reason, tag=ATTESTATION_TAG)
            except actions.ActionFailed as e:
                if e.transient:
                    # Not recorded as handled: the next try applies it.
                    self._put(target, **values)
                    raise base.RetryLater(
                        '%s; the %s action failed, trying again: %s' % (
                            reason, chosen, e))
                LOG.error('Keylime attestation of instance %(uuid)s: the '
                          '%(action)s action failed: %(error)s',
                          {'uuid': target.uuid, 'action': chosen,
                           'error': e})
                reason = '%s (the %s action failed: %s)' % (reason, chosen,
                                                            e)
                values['last_failure_reason'] = _short(reason)
            else:
                if applied in (actions.APPLIED, actions.ALREADY):
                    values.update(action=chosen, action_at=now)
        values['failure_key'] = key[:255]
        self._put(target, **values)
        self._event(target, EVENT_FAILED, journal_mod.FAILED, _short(reason),
                    key, {'state': state, 'action': chosen,
                          'action_result': applied})
        return applied

    def _clear_failure(self, target, row, why):
        """The failure is over: forget its key, undo the action."""
        if not row or not (row.get('failure_key') or row.get('action')):
            return
        action = row.get('action')
        if action:
            try:
                actions.clear_action(self.context.clients, target.uuid,
                                     action, tag=ATTESTATION_TAG)
            except actions.ActionFailed as e:
                LOG.warning('Cannot undo the %(action)s of instance '
                            '%(uuid)s: %(error)s; undo it by hand',
                            {'action': action, 'uuid': target.uuid,
                             'error': e})
        self._put(target, failure_key=None, action=None, action_at=None)
        self._event(target, EVENT_RECOVERED, journal_mod.DONE, why,
                    'recovered', {'undone': action})
        LOG.warning('Keylime attestation of instance %s: %s', target.uuid,
                    why)

    # -- enrolment -------------------------------------------------------

    def _refuse(self, target, reason, key, row=None, state=REFUSED,
                action=True):
        self._fail(target, state, reason, key, row=row, action=action)
        raise base.PermanentFailure(reason)

    def _check_request(self, target, row):
        request = target.request
        errors = [p.message for p in getattr(request, 'problems', None) or ()
                  if p.source == tpm.SOURCE_NOVA_VTPM]
        if errors:
            self._refuse(target, 'The attestation request has errors: %s'
                         % ' '.join(errors), 'request', row=row,
                         state=FAILED)
        vtpm = getattr(request, 'vtpm', None)
        if request is not None and (vtpm is None or vtpm.version != '2.0'):
            self._refuse(
                target, 'Attestation is %s but the server has %s: Keylime '
                'attests TPM 2.0 only.' % (
                    target.mode, 'a TPM %s vTPM' % vtpm.version if vtpm
                    else 'no vTPM'), 'no-tpm2', row=row, state=FAILED)

    def _policies_for(self, target, row):
        """The verifier's add arguments for the policies."""
        att = target.attestation
        name = att.tpm_policy
        try:
            if name:
                policies = self.tpm_policies()
                if name not in policies:
                    self._refuse(
                        target, 'TPM policy %r is not defined in %s '
                        '(defined: %s).' % (
                            name,
                            self.conf.nova_vtpm_attestation.tpm_policy_file
                            or '[nova_vtpm_attestation] tpm_policy_file '
                            '(unset)', ', '.join(sorted(policies)) or
                            'none'), 'policy:%s' % name, row=row,
                        state=FAILED, action=False)
                tpm_policy = policies[name]
            else:
                tpm_policy = json.loads(self.group.default_tpm_policy or
                                        '{}')
                if tpm_policy:
                    tpm_policy = policy_mod.validate_tpm_policy(
                        'default', tpm_policy)
        except (ValueError, exception.PolicyFileError) as e:
            self._refuse(target, 'Cannot use the TPM policy: %s' % e,
                         'policy-file', row=row, state=FAILED, action=False)
        return dict(
            tpm_policy=kl_client.tpm_policy_with_mask(tpm_policy),
            runtime_policy_name=(att.runtime_policy or
                                 self.group.default_runtime_policy_name),
            mb_policy_name=(att.mb_policy or
                            self.group.default_mb_policy_name))

    def _metadata(self, target):
        return {'instance_uuid': target.uuid, 'project_id': target.project_id,
                'host': target.host, 'flavor': target.flavor_name,
                'enrolled_by': 'nova-vtpm'}

    def _address(self, target, agent):
        """(ip, port) where the verifier reaches the guest's agent."""
        port = agent.port or self.group.agent_port
        network = self.group.agent_network
        if not network:
            if not agent.ip:
                raise base.PermanentFailure(
                    'The agent of instance %s registered no address and '
                    '[nova_vtpm_keylime] agent_network is unset.'
                    % target.uuid)
            return agent.ip, port
        clients = self.context.clients
        if clients is None or not getattr(clients, 'configured', True):
            raise base.PermanentFailure(
                '[nova_vtpm_keylime] agent_network is set but nova-vtpm has '
                'no [nova_vtpm_service] credentials to read the server\'s '
                'addresses from Nova.')
        from novaclient import exceptions as nova_exc
        try:
            server = clients.nova().servers.get(target.uuid)
        except nova_exc.NotFound:
            raise base.PermanentFailure('Server %s is gone from Nova.'
                                        % target.uuid)
        except Exception as e:
            raise base.RetryLater('Cannot read the addresses of server %s '
                                  'from Nova: %s' % (target.uuid, e))
        ip = pick_address((getattr(server, 'addresses', None) or {}).get(
            network))
        if ip is None:
            raise base.PermanentFailure(
                'Server %s has no address on the network %r '
                '([nova_vtpm_keylime] agent_network); its addresses: %s'
                % (target.uuid, network,
                   json.dumps(getattr(server, 'addresses', None))))
        return ip, port

    def _wait_delay(self, elapsed, remaining):
        group = self.hook_group
        return max(0.05, min(_clamp(elapsed / 60.0,
                                    group.registration_poll_min,
                                    group.registration_poll_max),
                             remaining))

    def enrol(self, target, since, row=None):
        """Enrol ``target``; the heart of the boot event and of drift.

        :param since: when the wait for the registration began (epoch).
        :returns: 'enrolled', 'already' (the verifier had it) or
            'not registered' (optional, past the deadline).
        :raises RetryLater: waiting for the registration (``waiting``),
            Keylime unavailable.
        :raises PermanentFailure: refused or failed, with the reason.
        """
        if row is None:
            row = self.journal.get_attestation(target.uuid)
        row = row or {}
        self._check_request(target, row)
        add_args = self._policies_for(target, row)
        if not row or row.get('state') == REMOVED:
            self._put(target, state=WAITING, waiting_since=since,
                      tpm_policy=target.attestation.tpm_policy)
            row = {'state': WAITING, 'waiting_since': since}
        try:
            agent = self.registrar().get_agent(target.uuid)
        except kl_client.AgentNotRegistered:
            agent = None
        except kl_client.KeylimeUnavailable as e:
            raise base.RetryLater(str(e))
        if agent is None:
            return self._not_registered(target, since, row)
        verdict = ek_mod.verify_ek(agent.ekcert, agent.ek_tpm, target.uuid,
                                   self.trust_store())
        if not verdict.ok:
            reason = ('Refused to enrol: the agent registered under '
                      'instance %s is not this instance\'s vTPM. %s' % (
                          target.uuid, ' '.join(verdict.reasons)))
            self._put(target, ek_subject=verdict.subject)
            self._refuse(target, reason, 'refused:' + hashlib.sha256(
                ' '.join(verdict.reasons).encode()).hexdigest()[:16],
                row=row)
        ip, port = self._address(target, agent)
        group = self.group
        result = 'enrolled'
        try:
            self.verifier().add_agent(
                target.uuid, agent, cloudagent_ip=ip, cloudagent_port=port,
                metadata=self._metadata(target),
                accept_tpm_hash_algs=group.accept_tpm_hash_algs,
                accept_tpm_encryption_algs=group.accept_tpm_encryption_algs,
                accept_tpm_signing_algs=group.accept_tpm_signing_algs,
                agent_api_version=group.agent_api_version, **add_args)
        except kl_client.AgentAlreadyExists:
            result = 'already'
        except kl_client.KeylimeUnavailable as e:
            raise base.RetryLater(str(e))
        except kl_client.KeylimeForbidden:
            raise
        except kl_client.KeylimeRequestError as e:
            self._refuse(target, 'The verifier refused to add the agent: %s'
                         % e, 'add:%s' % e.status, row=row, state=FAILED)
        now = self._now()
        values = dict(state=ENROLLED, agent_ip=ip, agent_port=port,
                      ek_subject=verdict.subject,
                      tpm_policy=target.attestation.tpm_policy,
                      last_failure_reason=None)
        if result == 'enrolled' or not row.get('enrolled_at'):
            values['enrolled_at'] = now
        self._put(target, **values)
        LOG.info('Keylime: instance %(uuid)s %(result)s (%(mode)s, agent '
                 '%(ip)s:%(port)s, %(ek)s, %(t).2f s after boot)',
                 {'uuid': target.uuid, 'mode': target.mode, 'ip': ip,
                  'port': port, 'ek': verdict,
                  'result': 'enrolled' if result == 'enrolled' else
                  'was enrolled already',
                  't': now - since if since else 0.0})
        key = row.get('failure_key') or ''
        if key and not key.startswith(('attestation:', 'recovery')):
            # An enrolment failure is over (an attestation failure is over
            # when the agent passes again).
            self._clear_failure(target, row, 'Enrolled after all%s.' % (
                ': its agent registered after the deadline'
                if key == 'unregistered' else ''))
        return result

    def _not_registered(self, target, since, row):
        now = self._now()
        elapsed = now - since
        remaining = self.group.registration_deadline - elapsed
        if remaining > 0:
            if row.get('state') not in (WAITING,):
                self._put(target, state=WAITING)
            raise base.RetryLater(
                'The Keylime agent of instance %s has not registered yet '
                '(%.0f s of %d s)' % (target.uuid, elapsed,
                                      self.group.registration_deadline),
                delay=self._wait_delay(elapsed, remaining), waiting=True)
        reason = ('The guest\'s Keylime agent did not register with the '
                  'registrar under instance %s within %d s '
                  '([nova_vtpm_keylime] registration_deadline): the server '
                  'is not attested.' % (target.uuid,
                                        self.group.registration_deadline))
        if target.required:
            self._refuse(target, reason, 'unregistered', row=row,
                         state=FAILED)
        self._fail(target, FAILED, reason + ' (attestation is optional: no '
                   'action)', 'unregistered', row=row)
        return 'not registered'

    # -- lifecycle -------------------------------------------------------

    def _within_window(self, since, call, *args):
        """Run ``call``; transient trouble soon after ``since`` is a wait.

        A hook that waits (for a registration, for PASS) is retried many
        times: each is an attempt in the agent's budget. A transient error
        then (Keylime restarting) must not end the event at once; within
        ``transient_window`` it is waited out with a growing delay.
        """
        try:
            return call(*args)
        except base.RetryLater as e:
            if getattr(e, 'waiting', False):
                raise
            elapsed = self._now() - since
            remaining = self.hook_group.transient_window - elapsed
            if remaining <= 0:
                raise
            raise base.RetryLater(
                str(e), delay=max(0.5, min(_clamp(elapsed / 10.0, 1.0, 30.0),
                                           remaining)), waiting=True)

    def on_boot(self, event):
        att = attestation_of(getattr(event, 'request', None))
        if att is None:
            return
        target = Target.from_event(event, att)
        row = self.journal.get_attestation(target.uuid)
        if row is not None and row['state'] == REMOVED:
            LOG.info('Keylime: instance %s was deleted; not enrolling it on '
                     'a late boot event', target.uuid)
            return
        since = ((row or {}).get('waiting_since') or event.timestamp or
                 self._now())
        self._within_window(since, self.enrol, target, since, row)

    def on_delete(self, event):
        att = attestation_of(getattr(event, 'request', None))
        row = self.journal.get_attestation(event.instance_uuid)
        if att is None and row is None:
            return
        target = Target.from_event(event, att) if att else Target(
            uuid=event.instance_uuid, mode=row['mode'], attestation=None,
            project_id=event.project_id, host=event.host)
        self._within_window(event.timestamp or self._now(), self.unenrol,
                            target)

    def unenrol(self, target):
        try:
            in_verifier = self.verifier().delete_agent(target.uuid,
                                                       missing_ok=True)
            in_registrar = self.registrar().delete_agent(target.uuid,
                                                         missing_ok=True)
        except kl_client.KeylimeUnavailable as e:
            raise base.RetryLater(str(e))
        except kl_client.AgentNotFound:
            in_verifier = in_registrar = False
        self._put(target, state=REMOVED)
        LOG.info('Keylime: instance %(uuid)s deleted: removed from the '
                 'verifier (%(v)s) and the registrar (%(r)s)',
                 {'uuid': target.uuid, 'v': 'was there' if in_verifier
                  else 'absent', 'r': 'was there' if in_registrar
                  else 'absent'})

    def _reachable(self, ip, port):
        """Whether the guest's agent answers at all.

        A TCP connection is not enough (a paused guest's host, or a
        stopped process, may still accept it): the agent must answer a TLS
        ClientHello. Any answer counts, a refused handshake too (the agent
        wants a client certificate, or speaks plain HTTP).
        """
        if not ip or not port:
            return True
        timeout = self.hook_group.probe_timeout
        try:
            sock = socket.create_connection((ip, int(port)), timeout=timeout)
        except OSError:
            return False
        # Verification stays on: nothing is sent nor trusted over this
        # connection, and the agent's self-signed certificate failing
        # verification is an answer like any other.
        context = ssl.create_default_context()
        try:
            sock.settimeout(timeout)
            with context.wrap_socket(sock, server_hostname=ip) as tls:
                tls.settimeout(timeout)
            return True
        except ssl.SSLError:
            return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except OSError:
            # Timed out: nobody is answering.
            return False
        finally:
            sock.close()

    def recover(self, target, since):
        """Bring an enrolled agent back to Get Quote / PASS.

        :returns: the final AgentStatus.
        :raises RetryLater: not there yet (``waiting``).
        :raises PermanentFailure: not back within ``recovery_deadline``.
        """
        row = self.journal.get_attestation(target.uuid) or {}
        if row.get('state') == REMOVED:
            return None
        elapsed = self._now() - since
        remaining = self.hook_group.recovery_deadline - elapsed
        if row.get('state') != ENROLLED:
            # Not enrolled: deleted below to be added again, a boot that
            # is still waiting, or drift.
            result = self.enrol(target, row.get('waiting_since') or since,
                                row)
            if result == 'not registered':
                return None
            row = self.journal.get_attestation(target.uuid) or {}
            if result == 'enrolled':
                raise base.RetryLater(
                    'added to the verifier again; waiting for PASS',
                    delay=min(1.0, max(remaining, 0.1)), waiting=True)

        def wait(why, delay=1.0):
            if remaining <= 0:
                self._refuse(
                    target, 'Not back to Get Quote / PASS within %d s after '
                    '%s: %s' % (self.hook_group.recovery_deadline,
                                'the migration', why), 'recovery',
                    row=row, state=ENROLLED)
            raise base.RetryLater(why, delay=min(delay, max(remaining, 0.1)),
                                  waiting=True)

        verifier = self.verifier()
        try:
            status = verifier.get_agent(target.uuid)
        except kl_client.AgentNotFound:
            status = None
        except kl_client.KeylimeUnavailable as e:
            raise base.RetryLater(str(e))
        if status is None:
            # Gone from the verifier (deleted below, or lost): add again.
            self._put(target, state=WAITING)
            self.enrol(target, since)
            wait('added to the verifier again; waiting for PASS')
        self._record_status(target, status)
        if status.passed:
            LOG.info('Keylime: instance %s attested again (%s, %s)',
                     target.uuid, status.state_name,
                     status.attestation_status)
            self._clear_failure(target, row, 'Attestation passes again.')
            return status
        if status.operational_state == kl_client.TERMINATED:
            wait('the verifier is removing the agent')
        if status.failed:
            readded = (row.get('enrolled_at') or 0) >= since
            if readded:
                # Added again after the event and failed again: that is an
                # attestation failure, not the blackout.
                self._fail(target, ENROLLED, self._failure_reason(status),
                           self._failure_key(status), row=row)
                raise base.PermanentFailure(self._failure_reason(status))
            if not self._reachable(row.get('agent_ip'),
                                   row.get('agent_port')):
                wait('the verifier gave up (%s) and the agent at %s:%s is '
                     'not reachable yet' % (status.state_name,
                                            row.get('agent_ip'),
                                            row.get('agent_port')))
            LOG.warning('Keylime: the verifier gave up on instance %s (%s) '
                        'during its blackout: deleting and adding it again',
                        target.uuid, status.state_name)
            try:
                verifier.delete_agent(target.uuid, missing_ok=True)
            except kl_client.KeylimeUnavailable as e:
                raise base.RetryLater(str(e))
            self._put(target, state=WAITING)
            wait('deleted from the verifier to be added again', 0.2)
        wait('the verifier reports %s, attestation %s' % (
            status.state_name, status.attestation_status or 'pending'))

    def _recover_event(self, event):
        att = attestation_of(getattr(event, 'request', None))
        if att is None:
            return
        target = Target.from_event(event, att)
        since = event.timestamp or self._now()
        self._within_window(since, self.recover, target, since)

    def on_live_migration_post_dest(self, event):
        self._recover_event(event)

    def on_live_migration_rollback(self, event):
        self._recover_event(event)

    def on_reboot(self, event):
        self._recover_event(event)

    def on_power_on(self, event):
        self._recover_event(event)

    # -- reconciliation --------------------------------------------------

    @staticmethod
    def _failure_key(status):
        return 'attestation:%s:%s' % (status.operational_state,
                                      status.last_event_id or '')

    @staticmethod
    def _failure_reason(status):
        return ('The verifier reports a failed attestation: state %s, '
                'attestation status %s%s.' % (
                    status.state_name, status.attestation_status or '-',
                    ', event %s' % status.last_event_id
                    if status.last_event_id else ''))

    def observe(self, target, status, row=None):
        """Record the verifier's status; act on a failure.

        :returns: 'failed', 'passed' or 'pending'.
        """
        if row is None:
            row = self.journal.get_attestation(target.uuid)
        row = row or {}
        values = {}
        if row.get('state') in (None, WAITING, FAILED, REMOVED):
            values['state'] = ENROLLED
            values.setdefault('enrolled_at', self._now())
        self._record_status(target, status, **values)
        if status.failed:
            self._fail(target, ENROLLED, self._failure_reason(status),
                       self._failure_key(status), row=row)
            return 'failed'
        if status.passed:
            if (row.get('failure_key') or '').startswith(
                    ('attestation:', 'recovery')):
                self._clear_failure(target, row, 'Attestation passes again '
                                    '(%s).' % status.state_name)
            return 'passed'
        return 'pending'

    def reconcile(self, servers):
        counts = {'passed': 0, 'failed': 0, 'pending': 0, 'enrolled': 0,
                  'waiting': 0, 'refused': 0, 'removed': 0, 'errors': 0}
        if not self.configured:
            LOG.warning('The keylime hook is enabled but Keylime is not '
                        'configured ([nova_vtpm_keylime] registrar_url, '
                        'verifier_url)')
            return {'not configured': 1}
        try:
            statuses = self.verifier().list_agents(bulk=True)
        except kl_client.KeylimeUnavailable as e:
            raise base.RetryLater(str(e))
        rows = {r['instance_uuid']: r
                for r in self.journal.list_attestations()}
        listed = set()
        now = self._now()
        for server in servers:
            listed.add(server.uuid)
            att = attestation_of(server.request)
            if att is None:
                continue
            if server.vm_state not in ATTESTABLE_VM_STATES or (
                    server.task_state):
                # Stopped, paused, or in a task (migrating, rebooting):
                # the guest may not answer; its event's hook call copes.
                continue
            target = Target.from_server(server, att)
            row = rows.get(server.uuid)
            status = statuses.get(server.uuid)
            try:
                if status is not None:
                    counts[self.observe(target, status, row)] += 1
                    continue
                if row is not None and row['state'] == REMOVED:
                    continue
                since = (row or {}).get('waiting_since') or now
                self.enrol(target, since, row)
                counts['enrolled'] += 1
                if row is None or row['state'] == ENROLLED:
                    LOG.warning('Keylime: instance %s should have been '
                                'attested and was not (drift): enrolled by '
                                'reconciliation', server.uuid)
            except base.RetryLater as e:
                counts['waiting' if getattr(e, 'waiting', False)
                       else 'errors'] += 1
            except base.PermanentFailure:
                counts['refused'] += 1
            except Exception:
                LOG.exception('Keylime reconciliation of instance %s',
                              server.uuid)
                counts['errors'] += 1
        for uuid, row in rows.items():
            if uuid in listed or row['state'] == REMOVED:
                continue
            target = Target(uuid=uuid, mode=row['mode'], attestation=None,
                            project_id=row['project_id'], host=row['host'])
            try:
                self.unenrol(target)
                counts['removed'] += 1
                LOG.warning('Keylime: instance %s is gone from Nova (a lost '
                            'delete notification?): removed from Keylime',
                            uuid)
            except base.RetryLater:
                counts['errors'] += 1
        return counts


def pick_address(entries):
    """The address to reach a guest on one network of Nova's addresses.

    Fixed IPv4 first, then any fixed address, then anything.
    """
    entries = [e for e in entries or () if isinstance(e, dict)
               and e.get('addr')]

    def rank(entry):
        fixed = entry.get('OS-EXT-IPS:type', 'fixed') == 'fixed'
        return (not fixed, entry.get('version', 4) != 4)

    entries.sort(key=rank)
    return entries[0]['addr'] if entries else None
