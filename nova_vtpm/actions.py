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

"""What nova-vtpm does to a Nova server that something is wrong with.

The hooks that raise alarms (the vTPM state guard, attestation) share these
actions, applied through the Compute API with nova-vtpm's service user:

* ``none``: nothing (the alarm is recorded and logged by the caller);
* ``lock``: an admin lock, with ``locked_reason`` (microversion 2.73);
* ``pause``: pause the server;
* ``stop``: power the server off;
* ``tag``: add a server tag (microversion 2.26).

Each action is idempotent: a server already locked, stopped, paused or
tagged is left as it is, and a server that is gone needs nothing.
:func:`clear_action` undoes what can safely be undone once the alarm is
over: the tag, and a lock whose reason is still the one nova-vtpm set.
"""

from keystoneauth1 import exceptions as ks_exc
from oslo_log import log as logging

from nova_vtpm import exception

LOG = logging.getLogger(__name__)

NONE = 'none'
LOCK = 'lock'
PAUSE = 'pause'
STOP = 'stop'
TAG = 'tag'
ACTIONS = (NONE, LOCK, PAUSE, STOP, TAG)

LOCKED_REASON_MICROVERSION = '2.73'
TAGS_MICROVERSION = '2.26'
# Nova's limit for locked_reason.
MAX_LOCKED_REASON = 255
# Every lock reason nova-vtpm sets starts with this, so that clearing only
# ever removes nova-vtpm's own lock, never an operator's.
LOCK_REASON_PREFIX = 'nova-vtpm: '

# Applied, already so, nothing to do (server gone), or not applied.
APPLIED = 'applied'
ALREADY = 'already'
GONE = 'server gone'
SKIPPED = 'skipped'


class ActionFailed(exception.NovaVTPMException):
    """An action could not be applied.

    ``transient`` is True when trying again later may work (Nova or
    Keystone unreachable, a 5xx, a 409 on a server in a task).
    """
    msg_fmt = ('Cannot %(action)s server %(server)s: %(reason)s. Check the '
               '[nova_vtpm_service] credentials and the Compute API, then '
               'apply it by hand if needed.')

    def __init__(self, action, server, reason, transient=False):
        super().__init__(action=action, server=server, reason=reason)
        self.action = action
        self.transient = transient


def lock_reason(reason):
    """The ``locked_reason`` nova-vtpm sets: prefixed, within Nova's limit."""
    text = LOCK_REASON_PREFIX + ' '.join(str(reason).split())
    if len(text) > MAX_LOCKED_REASON:
        text = text[:MAX_LOCKED_REASON - 3] + '...'
    return text


def _supports(nova, version):
    from novaclient import api_versions
    current = getattr(nova, 'api_version', None)
    if not isinstance(current, api_versions.APIVersion):
        return True
    return current >= api_versions.APIVersion(version)


def _call(action, server_uuid, func, *args, **kwargs):
    """Run a novaclient call; map its errors. Returns APPLIED or GONE."""
    from novaclient import exceptions as nova_exc
    try:
        func(*args, **kwargs)
    except nova_exc.NotFound:
        return GONE
    except nova_exc.Conflict:
        # Stopping a stopped server, pausing a paused one: 409 with the
        # state in the message. The caller decides with the server state.
        raise
    except nova_exc.ClientException as e:
        code = getattr(e, 'code', None) or 0
        raise ActionFailed(action, server_uuid, e,
                           transient=code >= 500 or code in (401, 429))
    except ks_exc.Unauthorized as e:
        # Wrong credentials do not get better by themselves.
        raise ActionFailed(action, server_uuid, e)
    except ks_exc.ClientException as e:
        # Keystone or Nova unreachable, timeouts, catalog trouble.
        raise ActionFailed(action, server_uuid, e, transient=True)
    return APPLIED


def apply_action(clients, server_uuid, action, reason, tag=None):
    """Apply ``action`` to a Nova server.

    :param clients: a :class:`~nova_vtpm.clients.openstack.Clients`.
    :param server_uuid: the server.
    :param action: one of :data:`ACTIONS`.
    :param reason: why, in a sentence; it becomes the ``locked_reason`` of
        a lock (prefixed with ``nova-vtpm: ``, at most 255 characters).
    :param tag: the tag of the ``tag`` action.
    :returns: :data:`APPLIED`, :data:`ALREADY`, :data:`GONE` or
        :data:`SKIPPED` (``none``).
    :raises ActionFailed: (``transient`` says whether to try again).
    :raises ValueError: an unknown action, or ``tag`` without a tag.
    """
    if action not in ACTIONS:
        raise ValueError('unknown action %r (known: %s)'
                         % (action, ', '.join(ACTIONS)))
    if action == NONE:
        return SKIPPED
    if action == TAG and not tag:
        raise ValueError('the tag action needs a tag')
    if clients is None or not getattr(clients, 'configured', True):
        raise ActionFailed(action, server_uuid,
                           'no [nova_vtpm_service] credentials')
    from novaclient import exceptions as nova_exc
    try:
        nova = clients.nova()
    except exception.NovaVTPMException as e:
        raise ActionFailed(action, server_uuid, e)
    servers = nova.servers
    try:
        if action == LOCK:
            if _supports(nova, LOCKED_REASON_MICROVERSION):
                result = _call(action, server_uuid, servers.lock,
                               server_uuid, reason=lock_reason(reason))
            else:
                LOG.warning('Compute API microversion %s < %s: locking '
                            'server %s without a reason',
                            nova.api_version.get_string(),
                            LOCKED_REASON_MICROVERSION, server_uuid)
                result = _call(action, server_uuid, servers.lock,
                               server_uuid)
        elif action == STOP:
            result = _call(action, server_uuid, servers.stop, server_uuid)
        elif action == PAUSE:
            result = _call(action, server_uuid, servers.pause, server_uuid)
        else:
            if not _supports(nova, TAGS_MICROVERSION):
                raise ActionFailed(
                    action, server_uuid, 'server tags need Compute API '
                    'microversion %s; [nova_vtpm_nova] api_version is %s'
                    % (TAGS_MICROVERSION, nova.api_version.get_string()))
            result = _call(action, server_uuid, servers.add_tag,
                           server_uuid, tag)
    except nova_exc.Conflict as e:
        # Already stopped or paused, or busy in a task: which one?
        if _already(nova, server_uuid, action):
            result = ALREADY
        else:
            raise ActionFailed(action, server_uuid, e, transient=True)
    LOG.info('Alarm action %(action)s on server %(uuid)s: %(result)s',
             {'action': action, 'uuid': server_uuid, 'result': result})
    return result


def _already(nova, server_uuid, action):
    try:
        server = nova.servers.get(server_uuid)
    except Exception:
        return False
    status = getattr(server, 'status', None)
    return ((action == STOP and status == 'SHUTOFF') or
            (action == PAUSE and status == 'PAUSED'))


def clear_action(clients, server_uuid, action, tag=None, lock_marker=''):
    """Undo an alarm action once the alarm is over, where that is safe.

    ``tag``: the tag is removed. ``lock``: the server is unlocked only if
    its ``locked_reason`` is still one nova-vtpm set (an operator's own lock
    stays) and, with ``lock_marker``, only if that reason began with it
    (so that one hook does not lift another hook's lock). ``stop`` and
    ``pause`` are not undone: starting a guest is the operator's decision.

    :returns: :data:`APPLIED`, :data:`GONE` or :data:`SKIPPED`.
    :raises ActionFailed: as :func:`apply_action`.
    """
    if action not in (LOCK, TAG):
        return SKIPPED
    if clients is None or not getattr(clients, 'configured', True):
        raise ActionFailed('undo the ' + action, server_uuid,
                           'no [nova_vtpm_service] credentials')
    try:
        nova = clients.nova()
    except exception.NovaVTPMException as e:
        raise ActionFailed('undo the ' + action, server_uuid, e)
    if action == TAG:
        if not tag or not _supports(nova, TAGS_MICROVERSION):
            return SKIPPED
        result = _call('untag', server_uuid, nova.servers.delete_tag,
                       server_uuid, tag)
    else:
        from novaclient import exceptions as nova_exc
        try:
            server = nova.servers.get(server_uuid)
        except nova_exc.NotFound:
            return GONE
        except Exception as e:
            raise ActionFailed('unlock', server_uuid, e, transient=True)
        reason = getattr(server, 'locked_reason', None)
        if not getattr(server, 'locked', False) or not (
                reason or '').startswith(LOCK_REASON_PREFIX + lock_marker):
            return SKIPPED
        result = _call('unlock', server_uuid, nova.servers.unlock,
                       server_uuid)
    LOG.info('Alarm over: undid %(action)s on server %(uuid)s: %(result)s',
             {'action': action, 'uuid': server_uuid, 'result': result})
    return result
