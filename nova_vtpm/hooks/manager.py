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

"""Loads the enabled hooks and runs them, one isolated from another."""

import random
import time

from oslo_config import cfg
from oslo_log import log as logging
from stevedore import named

from nova_vtpm import exception
from nova_vtpm.hooks import base

LOG = logging.getLogger(__name__)

NAMESPACE = 'nova_vtpm.hooks'


class HookLoadError(exception.NovaVTPMException):
    msg_fmt = ('Cannot load the hook %(name)s enabled in [nova_vtpm_agent] '
               'enabled_hooks: %(reason)s. Fix the installation or remove it '
               'from enabled_hooks.')


def hook_group(name):
    """The configuration group of a hook's own options."""
    return 'nova_vtpm_hook_%s' % name


class HookContext:
    """What a hook gets to work with.

    :param conf: the oslo.config ConfigOpts.
    :param journal: the :class:`~nova_vtpm.journal.Journal`.
    :param host: this agent's host name.
    :param role: ``controller`` or ``compute``.
    :param clients: an object giving lazily built service clients.
    """

    def __init__(self, conf, journal, host, role, clients=None):
        self.conf = conf
        self.journal = journal
        self.host = host
        self.role = role
        self.clients = clients


class Outcome:
    """How one hook's work on one event ended."""

    __slots__ = ('state', 'reason', 'next_attempt_at')

    def __init__(self, state, reason=None, next_attempt_at=None):
        self.state = state
        self.reason = reason
        self.next_attempt_at = next_attempt_at

    def __repr__(self):
        return '<Outcome %s %s>' % (self.state, self.reason)


def backoff(attempt, base_delay, max_delay, rand=random.random):
    """Exponential backoff with jitter: in [d/2, d], d = base * 2**attempt.

    :param attempt: how many attempts were made already (0 for the first
        retry).
    """
    delay = min(max_delay, base_delay * (2 ** min(attempt, 32)))
    return delay * (0.5 + rand() / 2)


class HookManager:
    """The enabled hooks, loaded with stevedore.

    :param context: a :class:`HookContext`, given to each hook.
    :param names: the enabled hook names, in the order they run.
    :param extension_manager: a ready stevedore manager (tests use
        ``NamedExtensionManager.make_test_instance``).
    """

    def __init__(self, context, names, extension_manager=None,
                 max_attempts=10, base_delay=2.0, max_delay=300.0):
        self.context = context
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        if extension_manager is None:
            extension_manager = self._load(names)
        self._mgr = extension_manager
        self.hooks = {ext.name: ext.obj for ext in self._mgr}

    def _load(self, names):
        def on_failure(manager, entrypoint, error):
            raise HookLoadError(name=entrypoint.name, reason=error)

        def on_missing(missing):
            raise HookLoadError(
                name=', '.join(sorted(missing)),
                reason='no such hook is installed (known: %s)' % ', '.join(
                    sorted(available_hooks())))

        for name in names:
            register_hook_opts(self.context.conf, name)
        return named.NamedExtensionManager(
            NAMESPACE, names, invoke_on_load=True,
            invoke_args=(self.context,), name_order=True,
            on_load_failure_callback=on_failure,
            on_missing_entrypoints_callback=on_missing)

    @property
    def names(self):
        return list(self.hooks)

    def hooks_for(self, lifecycle):
        """Names of the hooks that handle this event in this agent's role."""
        return [name for name, hook in self.hooks.items()
                if self.context.role in hook.ROLES and hook.handles(lifecycle)]

    def run(self, name, event, attempts):
        """Run one hook on one event; never raises.

        :param attempts: how many attempts were made before this one.
        :returns: an :class:`Outcome`.
        """
        hook = self.hooks.get(name)
        if hook is None:
            return Outcome('retry', 'hook %s is not enabled in this agent'
                           % name, time.time() + self.max_delay)
        method = getattr(hook, 'on_' + event.lifecycle, None)
        if method is None:
            return Outcome('done', 'hook %s has nothing to do on %s' % (
                name, event.lifecycle))
        try:
            method(event)
        except base.PermanentFailure as e:
            LOG.error('Hook %(hook)s failed permanently on %(event)s of '
                      'instance %(uuid)s: %(reason)s',
                      {'hook': name, 'event': event.lifecycle,
                       'uuid': event.instance_uuid, 'reason': e})
            return Outcome('failed', str(e))
        except base.RetryLater as e:
            if getattr(e, 'waiting', False) and e.delay is not None:
                # A bounded wait the hook controls: not a failed attempt.
                return Outcome('retry', str(e), time.time() + e.delay)
            return self.retry(name, event, attempts, str(e), e.delay)
        except Exception as e:
            LOG.exception('Hook %(hook)s raised on %(event)s of instance '
                          '%(uuid)s', {'hook': name, 'event': event.lifecycle,
                                       'uuid': event.instance_uuid})
            return self.retry(name, event, attempts, 'unexpected error: %s: '
                              '%s' % (type(e).__name__, e), None)
        return Outcome('done')

    def retry(self, name, event, attempts, reason, delay=None):
        """The outcome of a transient failure: retry later, or give up."""
        if attempts + 1 >= self.max_attempts:
            LOG.error('Hook %(hook)s gave up on %(event)s of instance '
                      '%(uuid)s after %(n)d attempts: %(reason)s',
                      {'hook': name, 'event': event.lifecycle,
                       'uuid': event.instance_uuid, 'n': attempts + 1,
                       'reason': reason})
            return Outcome('failed', 'gave up after %d attempts: %s' % (
                attempts + 1, reason))
        if delay is None:
            delay = backoff(attempts, self.base_delay, self.max_delay)
        LOG.info('Hook %(hook)s will retry %(event)s of instance %(uuid)s '
                 'in %(delay).1f s: %(reason)s',
                 {'hook': name, 'event': event.lifecycle,
                  'uuid': event.instance_uuid, 'delay': delay,
                  'reason': reason})
        return Outcome('retry', reason, time.time() + delay)

    def reconcile(self, servers):
        """Offer every hook the servers; one hook's error spares the rest.

        :returns: {hook name: counters dict, or {'error': message}}.
        """
        results = {}
        for name, hook in self.hooks.items():
            if self.context.role not in hook.ROLES:
                continue
            try:
                results[name] = hook.reconcile(servers) or {}
            except Exception as e:
                LOG.exception('Hook %s failed to reconcile', name)
                results[name] = {'error': '%s: %s' % (type(e).__name__, e)}
        return results


def available_hooks():
    from stevedore import extension
    return sorted(ext.name for ext in extension.ExtensionManager(
        NAMESPACE, invoke_on_load=False))


def register_hook_opts(conf, name):
    """Register the CONFIG_OPTS of an installed hook under its group."""
    from stevedore import driver
    try:
        plugin = driver.DriverManager(NAMESPACE, name,
                                      invoke_on_load=False).driver
    except Exception:
        return
    opts = getattr(plugin, 'CONFIG_OPTS', None) or []
    if opts:
        conf.register_opts(opts, group=hook_group(name))


def list_hook_opts():
    """(group, opts) of every installed hook, for the sample config."""
    from stevedore import extension
    result = []
    for ext in extension.ExtensionManager(NAMESPACE, invoke_on_load=False):
        opts = getattr(ext.plugin, 'CONFIG_OPTS', None) or []
        if opts:
            group = cfg.OptGroup(
                hook_group(ext.name),
                title='Options of the %s hook' % ext.name,
                help=(ext.plugin.__doc__ or '').strip().split('\n')[0])
            result.append((group, opts))
    return result
