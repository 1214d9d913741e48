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

"""Secret hygiene: vTPM secrets and states whose instance is gone.

Three places can keep what a deleted (or moved) vTPM server left behind:

``barbican``
    secrets named ``vTPM secret for instance <uuid>`` (Nova's name) whose
    instance no longer exists. Barbican lists only the secrets of the
    project the service user's token is scoped to (``GET /v1/secrets``,
    paginated with ``limit``/``offset``; the ``name`` filter is an SQL LIKE
    in Barbican, so ``vTPM secret for instance %`` finds them all, and the
    exact name is checked here). ``deployment`` mode secrets are in Nova's
    service project and are seen when the nova-vtpm service user is a
    member there; ``user`` mode secrets are in each owner's project and are
    NOT visible to the service user: the audit says so, for each such
    instance it knows, and cannot remove them.
``libvirt``
    libvirt secrets of usage type ``vtpm`` (``virsh secret-list`` and
    ``secret-dumpxml``; Nova sets the usage name to the instance uuid) on
    this host without an instance on this host.
``state_dir``
    ``<state_root>/<uuid>`` directories without an instance on this host.

Whether an instance exists (and where) comes from Nova (all projects, with
the ``[nova_vtpm_service]`` credentials). When Nova is not configured or
cannot be reached, it comes from the journal's inventory, with a warning:
the inventory only knows the vTPM servers the agents saw, so only what it
records as DELETED counts as gone; anything it does not know is reported
as ``unknown`` and never removed.

Nothing is removed that is in use: a libvirt secret or state directory of
an instance with a libvirt domain defined on this host, a state directory
a running swtpm holds the lock of, or anything of an instance with a task
under way (migrating, resizing). ``fix`` removes orphans (Barbican
``DELETE``, ``virsh secret-undefine``, the directory) and reports each
action. Secret values are never read.
"""

import os
import re
import shutil
import stat as stat_mod
import time
from urllib import parse
import uuid as uuidlib
from xml.etree import ElementTree

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from oslo_log import log as logging

from nova_vtpm.conf import state as state_conf
from nova_vtpm import secrets as secrets_mod
from nova_vtpm.swtpm import state as state_mod

LOG = logging.getLogger(__name__)

BARBICAN = 'barbican'
LIBVIRT = 'libvirt'
STATE_DIR = 'state_dir'
SECTIONS = (BARBICAN, LIBVIRT, STATE_DIR)

# Finding statuses.
ORPHAN = 'orphan'            # the instance is gone (or elsewhere): remove
IN_USE = 'in-use'            # its instance lives (here)
IN_FLUX = 'in-flux'          # a task is under way: left alone
UNKNOWN = 'unknown'          # the source cannot tell: left alone
NOT_VISIBLE = 'not-visible'  # user mode: the service user cannot see it
NOT_NOVA = 'not-nova'        # not named after an instance

NOT_VISIBLE_TEXT = 'not visible to the service user (user mode secrets)'

_NAME_RE = re.compile(r'^vTPM secret for instance ([0-9a-fA-F-]{36})$')
_LIST_PATTERN = secrets_mod.BARBICAN_NAME_FMT % '%'
PAGE_SIZE = 100
MAX_PAGES = 10000
# Nova statuses during which files of an instance can sit on two hosts.
_MOVING_STATUSES = ('MIGRATING', 'RESIZE', 'VERIFY_RESIZE', 'REVERT_RESIZE')


def _is_uuid(value):
    try:
        return str(uuidlib.UUID(value)) == value.lower()
    except (ValueError, AttributeError, TypeError):
        return False


class Finding:
    """One secret or directory and what the audit makes of it."""

    def __init__(self, kind, ident, instance_uuid, status, reason,
                 details=None):
        self.kind = kind
        self.ident = ident
        self.instance_uuid = instance_uuid
        self.status = status
        self.reason = reason
        self.details = details or {}
        self.action = None          # 'removed', 'already gone', 'failed: …'

    @property
    def fixed(self):
        return self.action in ('removed', 'already gone')

    def to_dict(self):
        return {'kind': self.kind, 'id': self.ident,
                'instance': self.instance_uuid, 'status': self.status,
                'reason': self.reason, 'action': self.action,
                'details': self.details}

    def __repr__(self):
        return '<Finding %s %s %s %s>' % (self.kind, self.ident, self.status,
                                          self.action)


class Instances:
    """Which instances exist, and on which host.

    :param source: ``nova`` (authoritative: not listed means gone) or
        ``journal`` (only recorded deletions mean gone).
    :param live: {uuid: host}.
    :param deleted: uuids known to be deleted.
    :param busy: {uuid: task state or status} of instances being moved.
    :param modes: {uuid: secret security mode} where known.
    """

    def __init__(self, source, live, deleted=(), busy=None, modes=None,
                 projects=None):
        self.source = source
        self.live = dict(live)
        self.deleted = set(deleted) - set(self.live)
        self.busy = dict(busy or {})
        self.modes = dict(modes or {})
        self.projects = dict(projects or {})

    @property
    def authoritative(self):
        return self.source == 'nova'

    def locate(self, uuid):
        """(state, host): state is live, gone, busy or unknown."""
        uuid = uuid.lower()
        if uuid in self.busy:
            return 'busy', self.live.get(uuid)
        if uuid in self.live:
            return 'live', self.live[uuid]
        if self.authoritative or uuid in self.deleted:
            return 'gone', None
        return 'unknown', None

    def classify(self, uuid, host):
        """(status, reason) of a local leftover of instance ``uuid``."""
        where, inst_host = self.locate(uuid)
        if where == 'busy':
            return IN_FLUX, 'instance %s is being moved (%s): left alone' % (
                uuid, self.busy[uuid.lower()])
        if where == 'live':
            if inst_host == host:
                return IN_USE, 'instance %s is on this host' % uuid
            return ORPHAN, 'instance %s lives on %s, not on this host %s ' \
                '(left behind by a migration)' % (uuid, inst_host or '-',
                                                  host)
        if where == 'gone':
            return ORPHAN, 'instance %s is gone (%s)' % (
                uuid, 'not in Nova' if self.authoritative else
                'deleted, per the journal inventory')
        return UNKNOWN, 'instance %s is not in the journal inventory: ' \
            'cannot tell whether it exists without Nova' % uuid


def instances_from_journal(journal):
    live, deleted, busy, modes, projects = {}, set(), {}, {}, {}
    for row in journal.list_instances(include_deleted=True):
        uuid = row['uuid'].lower()
        if row['secret_security']:
            modes[uuid] = row['secret_security']
        if row['project_id']:
            projects[uuid] = row['project_id']
        if row['deleted_at'] is not None:
            deleted.add(uuid)
            continue
        live[uuid] = row['host']
        if row['task_state']:
            busy[uuid] = row['task_state']
    return Instances('journal', live, deleted, busy, modes, projects)


def instances_from_nova(conf, clients, journal=None):
    """Every server of every project, from Nova (paginated)."""
    from nova_vtpm.agent import reconciler

    nova = clients.nova()
    page_size = conf.nova_vtpm_nova.page_size
    live, busy, modes, projects = {}, {}, {}, {}
    marker = None
    for _ in range(MAX_PAGES):
        page = nova.servers.list(detailed=True,
                                 search_opts={'all_tenants': True},
                                 limit=page_size, marker=marker)
        for server in page:
            view = reconciler.server_view(server)
            uuid = view.uuid.lower()
            live[uuid] = view.host
            if view.project_id:
                projects[uuid] = view.project_id
            if view.task_state or (view.status or '').upper() in \
                    _MOVING_STATUSES:
                busy[uuid] = view.task_state or view.status
            specs = view.flavor_specs
            if specs.get('hw:tpm_version') or specs.get(
                    'hw:tpm_secret_security'):
                modes[uuid] = specs.get('hw:tpm_secret_security') or 'user'
        if len(page) < page_size:
            break
        marker = page[-1].id
    deleted = set()
    if journal is not None:
        # The inventory remembers the modes of deleted servers, which Nova
        # no longer shows.
        for row in journal.list_instances(include_deleted=True):
            uuid = row['uuid'].lower()
            if uuid not in live:
                deleted.add(uuid)
                if row['secret_security']:
                    modes.setdefault(uuid, row['secret_security'])
                if row['project_id']:
                    projects.setdefault(uuid, row['project_id'])
    return Instances('nova', live, deleted, busy, modes, projects)


class Report:

    def __init__(self, host, fix):
        self.host = host
        self.fix = fix
        self.instance_source = None
        self.findings = []
        self.warnings = []
        self.notes = []
        self.errors = {}
        self.sections = []
        self.barbican_scope = None
        self.seconds = None

    @property
    def remaining_orphans(self):
        return [f for f in self.findings
                if f.status == ORPHAN and not f.fixed]

    @property
    def ok(self):
        return not self.errors and not self.remaining_orphans

    def counts(self):
        result = {}
        for f in self.findings:
            key = '%s:%s' % (f.kind, f.status)
            result[key] = result.get(key, 0) + 1
        return result

    def to_dict(self):
        return {'host': self.host, 'fix': self.fix,
                'instance_source': self.instance_source,
                'sections': self.sections,
                'barbican_scope': self.barbican_scope,
                'warnings': self.warnings, 'notes': self.notes,
                'errors': self.errors, 'counts': self.counts(),
                'findings': [f.to_dict() for f in self.findings],
                'remaining_orphans': len(self.remaining_orphans),
                'seconds': self.seconds}


class Auditor:
    """Finds (and with ``fix`` removes) vTPM secrets and states left over.

    :param conf: the ConfigOpts (``[nova_vtpm_state]``,
        ``[nova_vtpm_barbican]``, ``[nova_vtpm_service]``).
    :param journal: the journal (inventory).
    :param clients: a :class:`~nova_vtpm.clients.openstack.Clients`.
    :param host: this host's name, as Nova knows it.
    :param instances_from: ``auto`` (Nova if configured and reachable, else
        the journal), ``nova`` or ``journal``.
    """

    def __init__(self, conf, journal, clients, host, virsh=None,
                 instances_from='auto', sections=SECTIONS):
        self.conf = conf
        self.journal = journal
        self.clients = clients
        self.host = host
        group = conf[state_conf.GROUP_NAME]
        self.state_root = group.state_root
        self.virsh = virsh or secrets_mod.Virsh(group.libvirt_uri,
                                                timeout=group.check_timeout)
        self.instances_from = instances_from
        self.sections = [s for s in SECTIONS if s in sections]
        self._barbican = None

    # -- instances --------------------------------------------------------

    def instances(self, report):
        configured = self.clients is not None and self.clients.configured
        if self.instances_from in ('auto', 'nova') and configured:
            try:
                return instances_from_nova(self.conf, self.clients,
                                           self.journal)
            except Exception as e:
                if self.instances_from == 'nova':
                    raise
                reason = 'Nova is unreachable (%s: %s)' % (
                    type(e).__name__, str(e).splitlines()[0] if str(e)
                    else '')
        elif self.instances_from == 'nova':
            raise ValueError('Nova is not configured: set the '
                             '[nova_vtpm_service] credentials')
        elif self.instances_from == 'journal':
            reason = 'the journal inventory was asked for'
        else:
            reason = 'Nova is not configured ([nova_vtpm_service])'
        report.warnings.append(
            '%s: instance existence comes from the journal inventory, '
            'which knows only the vTPM servers the nova-vtpm agents saw. '
            'Only instances it records as deleted count as gone; secrets '
            'and directories of instances it does not know are reported as '
            'unknown and never removed.' % reason)
        return instances_from_journal(self.journal)

    # -- run ----------------------------------------------------------------

    def run(self, fix=False):
        t0 = time.monotonic()
        report = Report(self.host, fix)
        report.sections = list(self.sections)
        instances = self.instances(report)
        report.instance_source = instances.source
        for section in self.sections:
            method = getattr(self, '_audit_' + section)
            try:
                method(instances, report, fix)
            except (SectionError, secrets_mod.VirshError) as e:
                report.errors[section] = str(e)
                LOG.error('Secrets audit, %s: %s', section, e)
        report.seconds = round(time.monotonic() - t0, 3)
        return report

    # -- Barbican -------------------------------------------------------------

    def barbican(self):
        if self._barbican is None:
            self._barbican = ks_loading.load_adapter_from_conf_options(
                self.conf, state_conf.BARBICAN_GROUP,
                session=self.clients.session(), service_type='key-manager')
        return self._barbican

    def _barbican_call(self, method, url, **kwargs):
        try:
            return getattr(self.barbican(), method)(url, raise_exc=False,
                                                    **kwargs)
        except ks_exc.ClientException as e:
            raise SectionError('Barbican cannot be reached: %s' % e)

    def _barbican_scope(self, report):
        session = self.clients.session()
        scope = {'project_id': None, 'project_name': None, 'user': None}
        try:
            access = session.auth.get_access(session)
            scope.update(project_id=access.project_id,
                         project_name=access.project_name,
                         user=access.username)
        except Exception as e:   # the listing will say what is wrong
            LOG.debug('Cannot read the token scope: %s', e)
        report.barbican_scope = scope
        report.notes.append(
            'Barbican lists only the secrets of the project the service '
            'user %s is scoped to (%s, %s): vTPM secrets in other projects '
            '-- user mode secrets, which Nova stores in each owner\'s '
            'project -- are not visible to the service user and are not '
            'audited here.' % (scope['user'] or '-',
                               scope['project_name'] or '-',
                               scope['project_id'] or '-'))
        return scope

    def list_barbican(self):
        """Every vTPM secret the service user sees: [secret dicts].

        Barbican's ``name`` filter is an SQL LIKE: one pattern lists them
        all. Should it find nothing (a Barbican matching names exactly),
        every secret of the project is listed and filtered here instead.
        """
        found = self._list_barbican(_LIST_PATTERN)
        if not found:
            found = self._list_barbican(None)
        return [s for s in found if _NAME_RE.match(s.get('name') or '')]

    def _list_barbican(self, name):
        found = []
        offset = 0
        for _ in range(MAX_PAGES):
            params = {'limit': PAGE_SIZE, 'offset': offset}
            if name is not None:
                params['name'] = name
            resp = self._barbican_call(
                'get', '/v1/secrets?' + parse.urlencode(params),
                headers={'Accept': 'application/json'})
            if resp.status_code in (401, 403):
                raise SectionError(
                    'Barbican refuses to list secrets to the service user '
                    '(HTTP %d): it needs a reader or member role in the '
                    'project Nova stores deployment mode secrets in'
                    % resp.status_code)
            if resp.status_code >= 400:
                raise SectionError('listing Barbican secrets failed: HTTP '
                                   '%d' % resp.status_code)
            try:
                body = resp.json()
            except ValueError:
                raise SectionError('Barbican answered the listing with '
                                   'something that is not JSON')
            page = body.get('secrets') or []
            found.extend(page)
            offset += len(page)
            total = body.get('total')
            if not page or (isinstance(total, int) and offset >= total) or \
                    len(page) < PAGE_SIZE:
                break
        return found

    def _audit_barbican(self, instances, report, fix):
        if self.clients is None or not self.clients.configured:
            report.notes.append('Barbican not audited: no '
                                '[nova_vtpm_service] credentials.')
            return
        self._barbican_scope(report)
        listed = self.list_barbican()
        seen = set()
        for secret in listed:
            name = secret.get('name') or ''
            match = _NAME_RE.match(name)
            ref = secret.get('secret_ref') or ''
            secret_id = ref.rstrip('/').rsplit('/', 1)[-1]
            uuid = match.group(1).lower()
            seen.add(uuid)
            where, inst_host = instances.locate(uuid)
            details = {'secret_ref': ref, 'created': secret.get('created'),
                       'creator_id': secret.get('creator_id'),
                       'status': secret.get('status'), 'name': name}
            if where == 'live':
                status, reason = IN_USE, 'instance %s exists (on %s)' % (
                    uuid, inst_host or '-')
            elif where == 'busy':
                status, reason = IN_FLUX, 'instance %s is being moved' % uuid
            elif where == 'gone':
                status, reason = ORPHAN, 'instance %s is gone (%s)' % (
                    uuid, 'not in Nova' if instances.authoritative else
                    'deleted, per the journal inventory')
            else:
                status, reason = UNKNOWN, (
                    'instance %s is not in the journal inventory: cannot '
                    'tell whether it exists without Nova' % uuid)
            finding = Finding(BARBICAN, secret_id, uuid, status, reason,
                              details)
            report.findings.append(finding)
            if fix and status == ORPHAN:
                self._delete_barbican(finding)
        # User mode: the instances we know of whose secret is out of sight.
        live_user = 0
        for uuid, mode in sorted(instances.modes.items()):
            if mode != secrets_mod.USER or uuid in seen:
                continue
            where, _ = instances.locate(uuid)
            if where in ('live', 'busy'):
                live_user += 1
                continue
            project = instances.projects.get(uuid)
            report.findings.append(Finding(
                BARBICAN, secrets_mod.barbican_secret_name(uuid), uuid,
                NOT_VISIBLE, '%s: instance %s (deleted) had a user mode '
                "secret, stored in its owner's project %s; if Nova did not "
                'delete it, only the owner or an admin of that project can '
                '(openstack secret list --name "%s")' % (
                    NOT_VISIBLE_TEXT, uuid, project or '-',
                    secrets_mod.barbican_secret_name(uuid)),
                {'project_id': project, 'mode': mode}))
        if live_user:
            report.notes.append(
                '%d live server(s) in user mode: their secrets are %s.'
                % (live_user, NOT_VISIBLE_TEXT))

    def _delete_barbican(self, finding):
        try:
            resp = self._barbican_call(
                'delete', '/v1/secrets/%s' % parse.quote(finding.ident))
        except SectionError as e:
            finding.action = 'failed: %s' % e
            return
        if resp.status_code in (200, 204):
            finding.action = 'removed'
        elif resp.status_code == 404:
            finding.action = 'already gone'
        else:
            finding.action = 'failed: Barbican DELETE answered HTTP %d' % (
                resp.status_code)
        LOG.info('Secrets audit: Barbican secret %s of instance %s: %s',
                 finding.ident, finding.instance_uuid, finding.action)

    # -- libvirt ------------------------------------------------------------

    def _virsh(self, *args):
        try:
            return self.virsh.run(*args)
        except secrets_mod.VirshError as e:
            if e.connection:
                raise SectionError('libvirt cannot be reached: %s' % e)
            raise

    def _domain_defined(self, uuid):
        try:
            return self.virsh.domain_defined(uuid)
        except secrets_mod.VirshError as e:
            raise SectionError('libvirt cannot be reached: %s' % e)

    def list_libvirt_secrets(self):
        """[(secret uuid, usage type, usage name, ephemeral, private)]."""
        out = self._virsh('secret-list').decode('utf-8', 'replace')
        result = []
        for line in out.splitlines():
            parts = line.split()
            if not parts or not _is_uuid(parts[0]):
                continue
            try:
                xml = self._virsh('secret-dumpxml', parts[0])
            except secrets_mod.VirshError as e:
                LOG.warning('Cannot read libvirt secret %s: %s', parts[0], e)
                continue    # undefined in between
            try:
                root = ElementTree.fromstring(xml)
            except ElementTree.ParseError:
                continue
            usage = root.find('usage')
            usage_type = usage.get('type') if usage is not None else None
            name = None
            if usage is not None:
                for tag in ('name', 'volume', 'target'):
                    node = usage.find(tag)
                    if node is not None and node.text:
                        name = node.text.strip()
                        break
            result.append((parts[0], usage_type, name,
                           root.get('ephemeral'), root.get('private')))
        return result

    def _audit_libvirt(self, instances, report, fix):
        for secret_uuid, usage_type, name, ephemeral, private in \
                self.list_libvirt_secrets():
            if usage_type != secrets_mod.LIBVIRT_USAGE_TYPE:
                continue
            details = {'usage_name': name, 'ephemeral': ephemeral,
                       'private': private}
            if not _is_uuid(name or ''):
                report.findings.append(Finding(
                    LIBVIRT, secret_uuid, None, NOT_NOVA, 'usage name %r is '
                    'not an instance uuid: not defined by Nova' % name,
                    details))
                continue
            uuid = name.lower()
            status, reason = instances.classify(uuid, self.host)
            if status == ORPHAN and self._domain_defined(uuid):
                status, reason = IN_USE, ('a libvirt domain %s is defined on '
                                          'this host' % uuid)
            finding = Finding(LIBVIRT, secret_uuid, uuid, status, reason,
                              details)
            report.findings.append(finding)
            if fix and status == ORPHAN:
                try:
                    self._virsh('secret-undefine', secret_uuid)
                    finding.action = 'removed'
                except secrets_mod.VirshError as e:
                    finding.action = 'failed: %s' % e
                LOG.info('Secrets audit: libvirt secret %s of instance %s: '
                         '%s', secret_uuid, uuid, finding.action)

    # -- state directories --------------------------------------------------

    def _audit_state_dir(self, instances, report, fix):
        root = self.state_root
        try:
            names = sorted(os.listdir(root))
        except FileNotFoundError:
            report.notes.append('The state root %s does not exist: no state '
                                'directories.' % root)
            return
        except OSError as e:
            raise SectionError('cannot list the state root %s: %s'
                               % (root, e))
        libvirt_ok = True
        for name in names:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat_mod.S_ISDIR(st.st_mode) or not _is_uuid(name):
                continue
            uuid = name.lower()
            status, reason = instances.classify(uuid, self.host)
            details = {'path': path, 'files': _count_files(path)}
            if status == ORPHAN:
                held = [d for d in state_mod.VERSION_DIRS.values()
                        if state_mod.state_in_use(os.path.join(path, d))]
                if held:
                    status, reason = IN_USE, 'a swtpm holds the lock of %s' \
                        % os.path.join(path, held[0])
            if status == ORPHAN and libvirt_ok:
                try:
                    if self._domain_defined(uuid):
                        status, reason = IN_USE, (
                            'a libvirt domain %s is defined on this host'
                            % uuid)
                except SectionError as e:
                    libvirt_ok = False
                    report.warnings.append(
                        'state directories: %s; whether a domain is defined '
                        'could not be checked, so none is removed' % e)
            if status == ORPHAN and not libvirt_ok:
                status, reason = UNKNOWN, reason + '; libvirt unreachable'
            finding = Finding(STATE_DIR, path, uuid, status, reason, details)
            report.findings.append(finding)
            if fix and status == ORPHAN:
                try:
                    shutil.rmtree(path)
                    finding.action = 'removed'
                except FileNotFoundError:
                    finding.action = 'already gone'
                except OSError as e:
                    finding.action = 'failed: %s' % e
                LOG.info('Secrets audit: state directory %s: %s', path,
                         finding.action)


class SectionError(Exception):
    """One part of the audit could not be done."""


def _count_files(path):
    n = 0
    for _, _, files in os.walk(path):
        n += len(files)
        if n > 1000:
            break
    return n
