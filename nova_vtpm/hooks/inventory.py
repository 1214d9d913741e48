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

"""The ``inventory`` hook: what vTPM servers exist, where, and what they asked.

It records, per instance, the vTPM request (version, model, secret security,
attestation mode and policies), the host and the last lifecycle event; the
``nova-vtpm instances`` command reads it and other hooks rely on it.

Ordering: a record only moves forward in time (by the notification's
timestamp), and a deletion is final, so duplicated and reordered
notifications (a ``delete`` before the ``boot``) end in the right state.
"""

import time

from oslo_log import log as logging

from nova_vtpm.hooks import base

LOG = logging.getLogger(__name__)

# Events whose payload still names the source host after the instance has
# moved: the source sends live_migration_post.end after the destination's
# live_migration_post_dest.end, which carries the new host.
_STALE_HOST = frozenset(['live_migration_post'])


def _request_values(request):
    values = {'vtpm_version': None, 'vtpm_model': None,
              'secret_security': None, 'attestation_mode': None,
              'tpm_policy': None, 'runtime_policy': None, 'mb_policy': None}
    if request is not None and request.vtpm is not None:
        values.update(vtpm_version=request.vtpm.version,
                      vtpm_model=request.vtpm.model,
                      secret_security=request.vtpm.secret_security)
    if request is not None and request.attestation is not None:
        att = request.attestation
        values.update(attestation_mode=att.mode, tpm_policy=att.tpm_policy,
                      runtime_policy=att.runtime_policy,
                      mb_policy=att.mb_policy)
    return values


class InventoryHook(base.HookBase):
    """Keeps the journal's record of every vTPM server."""

    NAME = 'inventory'

    def _apply(self, event, deleted=False):
        journal = self.context.journal
        current = journal.get_instance(event.instance_uuid)
        stamp = event.timestamp or time.time()
        if current is not None:
            if current['deleted_at'] is not None and not deleted:
                LOG.debug('Instance %s is deleted; ignoring its older or '
                          'reordered %s event', event.instance_uuid,
                          event.lifecycle)
                return
            if (current['event_timestamp'] or 0) > stamp and not deleted:
                LOG.debug('Ignoring out-of-date %s event of instance %s',
                          event.lifecycle, event.instance_uuid)
                return
        values = dict(
            project_id=event.project_id,
            flavor_name=event.flavor_name, image_uuid=event.image_uuid,
            vm_state=event.vm_state, task_state=event.task_state,
            lifecycle=event.lifecycle, event_timestamp=stamp)
        if event.lifecycle not in _STALE_HOST or current is None:
            values.update(host=event.host, node=event.node)
        request = getattr(event, 'request', None)
        if request is not None and (request.vtpm is not None or
                                    current is None):
            values.update(_request_values(request))
        elif request is not None and request.vtpm is None and current:
            # Resized to a flavor without a vTPM: keep the record, say so.
            values.update(_request_values(None))
        if deleted:
            values['deleted_at'] = stamp
        journal.put_instance(event.instance_uuid, **values)
        LOG.info('Inventory: instance %(uuid)s %(event)s on %(host)s',
                 {'uuid': event.instance_uuid, 'event': event.lifecycle,
                  'host': event.host})

    def on_boot(self, event):
        self._apply(event)

    def on_delete(self, event):
        self._apply(event, deleted=True)

    def on_reboot(self, event):
        self._apply(event)

    def on_power_on(self, event):
        self._apply(event)

    def on_power_off(self, event):
        self._apply(event)

    def on_resize_finish(self, event):
        self._apply(event)

    def on_resize_confirm(self, event):
        self._apply(event)

    def on_resize_revert(self, event):
        self._apply(event)

    def on_live_migration_pre(self, event):
        self._apply(event)

    def on_live_migration_post(self, event):
        self._apply(event)

    def on_live_migration_post_dest(self, event):
        self._apply(event)

    def on_live_migration_rollback(self, event):
        self._apply(event)

    def on_live_migration_rollback_dest(self, event):
        self._apply(event)

    def on_live_migration_abort(self, event):
        self._apply(event)

    def reconcile(self, servers):
        journal = self.context.journal
        known = {row['uuid']: row for row in journal.list_instances()}
        seen = set()
        counts = {'added': 0, 'updated': 0, 'removed': 0}
        now = time.time()
        writes, added, removed = [], [], []
        for server in servers:
            if server.unresolved:
                # Its image properties are unknown right now: keep what we
                # know of it, neither add nor remove.
                seen.add(server.uuid)
                counts['unresolved'] = counts.get('unresolved', 0) + 1
                continue
            request = server.request
            if request is None or request.vtpm is None:
                continue
            seen.add(server.uuid)
            row = known.get(server.uuid)
            values = dict(host=server.host, project_id=server.project_id,
                          flavor_name=server.flavor_name,
                          image_uuid=server.image_uuid,
                          vm_state=server.vm_state,
                          task_state=server.task_state, deleted_at=None,
                          **_request_values(request))
            if row is None:
                values.update(lifecycle='reconciled', event_timestamp=now)
                writes.append((server.uuid, values))
                added.append(server.uuid)
            elif any(row.get(k) != v for k, v in values.items()):
                writes.append((server.uuid, values))
                counts['updated'] += 1
        for uuid in set(known) - seen:
            writes.append((uuid, dict(deleted_at=now,
                                      lifecycle='reconciled')))
            removed.append(uuid)
        # One transaction for all.
        journal.put_instances(writes)
        for uuid in added:
            LOG.warning('Inventory: instance %s was missing (a lost '
                        'notification?): added by reconciliation', uuid)
        for uuid in removed:
            LOG.warning('Inventory: instance %s is gone from Nova (a lost '
                        'delete notification?): marked deleted', uuid)
        counts['added'] += len(added)
        counts['removed'] += len(removed)
        return counts
