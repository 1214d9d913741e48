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

"""Reconciliation: Nova's servers compared with what the hooks keep.

Notifications can be missed (agent down longer than the broker keeps
them), lost or reordered. The reconciler lists every server through Nova's
API (all projects, page by page), works out each one's vTPM request, and
offers the list to every hook's ``reconcile``.
"""

import time

from oslo_log import log as logging

from nova_vtpm.agent import events

LOG = logging.getLogger(__name__)


def server_view(server):
    """A novaclient server (microversion >= 2.47) -> ServerView."""
    info = server.to_dict() if hasattr(server, 'to_dict') else dict(server)
    flavor = info.get('flavor') or {}
    image = info.get('image') or {}
    return events.ServerView(
        uuid=info['id'],
        host=info.get('OS-EXT-SRV-ATTR:host'),
        vm_state=info.get('OS-EXT-STS:vm_state'),
        task_state=info.get('OS-EXT-STS:task_state'),
        project_id=info.get('tenant_id'),
        flavor_name=flavor.get('original_name'),
        flavor_specs={k: v for k, v in (flavor.get('extra_specs') or
                                        {}).items()
                      if isinstance(v, str)},
        image_uuid=image.get('id') if isinstance(image, dict) else None,
        status=info.get('status'))


class Reconciler:

    def __init__(self, conf, journal, manager, clients, resolver):
        self.conf = conf
        self.journal = journal
        self.manager = manager
        self.clients = clients
        self.resolver = resolver

    def list_servers(self):
        """Every server of every project, following Nova's pagination."""
        nova = self.clients.nova()
        page_size = self.conf.nova_vtpm_nova.page_size
        servers = []
        marker = None
        while True:
            page = nova.servers.list(
                detailed=True, search_opts={'all_tenants': True},
                limit=page_size, marker=marker)
            servers.extend(server_view(s) for s in page)
            if len(page) < page_size:
                return servers
            marker = page[-1].id

    def resolve(self, servers):
        """Attach each server's vTPM request (``server.request``).

        A server whose image properties could not be had (Glance down)
        gets ``server.unresolved = True``: hooks must leave it alone rather
        than conclude it has no vTPM.
        """
        specs = self.journal.all_request_specs()
        for server in servers:
            spec = specs.get(server.uuid)
            server.image_name, server.image_props, complete = (
                self.resolver.image_properties(server.uuid,
                                               server.image_uuid, spec))
            server.unresolved = not complete
            server.request = self.resolver.resolve_specs(
                server.flavor_specs, server.image_props,
                flavor_name=server.flavor_name,
                image_name=server.image_name)

    def run(self, servers=None):
        """One reconciliation; returns a report dict."""
        start = time.monotonic()
        if servers is None:
            servers = self.list_servers()
        listed = time.monotonic()
        group = self.conf.nova_vtpm_agent
        if group.role == 'compute':
            servers = [s for s in servers if s.host == group.host]
        self.resolve(servers)
        vtpm = sum(1 for s in servers if s.request.vtpm is not None)
        results = self.manager.reconcile(servers)
        report = {'servers': len(servers), 'vtpm_servers': vtpm,
                  'hooks': results,
                  'list_seconds': round(listed - start, 3),
                  'total_seconds': round(time.monotonic() - start, 3)}
        LOG.info('Reconciled %(servers)d servers (%(vtpm)d with a vTPM) in '
                 '%(t).1f s: %(hooks)s',
                 {'servers': len(servers), 'vtpm': vtpm,
                  't': report['total_seconds'], 'hooks': results})
        return report
