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

"""The hook contract.

A hook is a class registered in the ``nova_vtpm.hooks`` stevedore namespace
under a short, stable name, enabled by that name in
``[nova_vtpm_agent] enabled_hooks``. It subclasses :class:`HookBase` and
defines one method per lifecycle event it cares about (see
:data:`LIFECYCLE_EVENTS`); the manager only offers a hook the events whose
method it defines, plus :meth:`HookBase.reconcile`.

Each method receives an :class:`~nova_vtpm.agent.events.InstanceEvent` and
ends in one of three ways:

* it returns: done;
* it raises :class:`RetryLater`: transient trouble (a service is down, the
  guest's agent has not registered yet); the agent tries again later, with
  bounded exponential backoff, or at the time the hook asks for;
* it raises :class:`PermanentFailure`: the event cannot ever be handled
  (bad data); recorded with the reason, never retried by itself.

Any other exception counts as transient until the retry budget is spent.

Hooks must be idempotent: the same event can arrive twice, and events can
arrive out of order (``delete`` before ``boot``). They must not block: a
wait is a :class:`RetryLater`, never a sleep.
"""

import abc

from nova_vtpm import exception

# Lifecycle event name -> the versioned notification that carries it.
LIFECYCLE_EVENTS = {
    'boot': 'instance.create.end',
    'delete': 'instance.delete.end',
    'reboot': 'instance.reboot.end',
    'power_on': 'instance.power_on.end',
    'power_off': 'instance.power_off.end',
    'resize_finish': 'instance.resize_finish.end',
    'resize_confirm': 'instance.resize_confirm.end',
    'resize_revert': 'instance.resize_revert.end',
    'live_migration_pre': 'instance.live_migration_pre.end',
    'live_migration_post': 'instance.live_migration_post.end',
    'live_migration_post_dest': 'instance.live_migration_post_dest.end',
    'live_migration_rollback': 'instance.live_migration_rollback.end',
    'live_migration_rollback_dest':
        'instance.live_migration_rollback_dest.end',
    'live_migration_abort': 'instance.live_migration_abort.end',
}
EVENT_TYPE_TO_LIFECYCLE = {v: k for k, v in LIFECYCLE_EVENTS.items()}

ROLE_CONTROLLER = 'controller'
ROLE_COMPUTE = 'compute'
ROLES = (ROLE_CONTROLLER, ROLE_COMPUTE)


class RetryLater(exception.NovaVTPMException):
    """Transient trouble: try this event again later.

    :param reason: why, for the journal and the operator.
    :param delay: seconds until the next attempt, or None for the agent's
        backoff.
    :param waiting: True when this is a wait for something expected (a
        guest's agent that has not registered yet), not trouble: it does
        not use up the agent's retry budget (``max_attempts``). A hook
        that waits must bound the wait itself (e.g. with a deadline) and
        give a ``delay``.
    """
    msg_fmt = '%(reason)s'

    def __init__(self, reason, delay=None, waiting=False):
        super().__init__(reason=reason)
        self.delay = delay
        self.waiting = waiting


class PermanentFailure(exception.NovaVTPMException):
    """This event cannot be handled, ever; the reason says why."""
    msg_fmt = '%(reason)s'

    def __init__(self, reason):
        super().__init__(reason=reason)


class HookBase(abc.ABC):
    """Base class of every nova-vtpm hook.

    Class attributes:

    * ``NAME``: the entry-point name (for messages);
    * ``ROLES``: the agent roles the hook runs in; a ``compute`` hook is
      only offered events of instances on (or migrating through) the
      agent's own host;
    * ``CONFIG_OPTS``: the hook's oslo.config options, registered in the
      group ``nova_vtpm_hook_<NAME>``.

    Lifecycle methods are named ``on_<event>`` (``on_boot``, ``on_delete``,
    ... see :data:`LIFECYCLE_EVENTS`) and take ``(self, event)``.
    """

    NAME = None
    ROLES = ROLES
    CONFIG_OPTS = []

    def __init__(self, context):
        """Create the hook.

        :param context: the :class:`~nova_vtpm.hooks.manager.HookContext`
            (configuration, journal, clients, host name).
        """
        self.context = context

    @abc.abstractmethod
    def reconcile(self, servers):
        """Repair drift between Nova and what this hook keeps.

        Called periodically and by ``nova-vtpm reconcile --once`` with
        every server Nova has (all tenants), so that a hook can make up
        for missed, lost or reordered notifications.

        :param servers: a list of :class:`~nova_vtpm.agent.events.ServerView`.
        :returns: a dict of counters for the report (e.g. ``{'added': 2}``).
        :raises: RetryLater when a service it needs is unavailable.
        """

    @classmethod
    def handles(cls, lifecycle):
        """Whether the hook defines a method for this lifecycle event."""
        return callable(getattr(cls, 'on_' + lifecycle, None))
