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

"""Migration pre-flight: can this vTPM server move to that host?

The answer is yes only when every check passes; each check says why. The
checks (for the destination, against the source where it matters):

``facts``
    the destination's agent published its facts (:mod:`nova_vtpm.agent.facts`)
    no longer than ``[nova_vtpm_facts] max_age`` ago, and swtpm runs there;
``swtpm_enabled``
    Nova's ``[libvirt] swtpm_enabled`` is on there (else Nova does not
    schedule vTPM servers to it);
``tpm_version``
    its swtpm emulates the server's TPM version;
``secret_security``
    it supports the server's secret security mode (``[libvirt]
    supported_tpm_secret_security``), and the secret reaches it: a live
    migration is only possible in ``host`` mode (Nova refuses ``user`` and
    ``deployment`` with "Operation 'live-migration' not supported for
    vTPM-enabled instance"); a ``user`` mode server can only be resized or
    migrated by its owner (Barbican ACLs);
``libtpms``
    the destination's libtpms is not older than the source's: a state
    written by a newer libtpms cannot be read by an older one (the load
    fails, or the guest comes up on a fresh TPM);
``profile``
    the destination knows the libtpms profile the source writes states
    with (libtpms 0.10 profiles; older ones write the profile-less 'null'
    profile, which every libtpms reads);
``shared_storage``
    (live migration) when both state roots are on a network file system,
    both swtpm must have ``cmdarg-migration`` (swtpm >= 0.8, ``--migration
    release-lock-outgoing``): older ones keep the state's file lock and the
    destination's swtpm cannot take it (swtpm issue 724).

A check that cannot be made (no facts from the source, an unknown version)
is ``unknown`` and blocks like a failure: the pre-flight says yes only to
what it could verify.
"""

import time

from oslo_log import log as logging

from nova_vtpm.conf import facts as facts_conf
from nova_vtpm import exception
from nova_vtpm import secrets as secrets_mod
from nova_vtpm import tpm

LOG = logging.getLogger(__name__)

OK = 'ok'
WARN = 'warn'        # worth knowing, does not block
FAIL = 'fail'
UNKNOWN = 'unknown'  # could not be verified: blocks
BLOCKING = (FAIL, UNKNOWN)

LIVE = 'live'
COLD = 'cold'
MIGRATION_TYPES = (LIVE, COLD)

NOVA_LIVE_MIGRATION_ERROR = ("Operation 'live-migration' not supported for "
                             "vTPM-enabled instance (%s).")


class ServerNotFound(exception.NovaVTPMException):
    msg_fmt = '%(reason)s'


class Check:
    __slots__ = ('name', 'status', 'reason')

    def __init__(self, name, status, reason):
        self.name = name
        self.status = status
        self.reason = reason

    def to_dict(self):
        return {'check': self.name, 'status': self.status,
                'reason': self.reason}

    def __repr__(self):
        return '<Check %s %s: %s>' % (self.name, self.status, self.reason)


class Verdict:
    """The answer for one destination."""

    def __init__(self, destination, checks):
        self.destination = destination
        self.checks = checks

    @property
    def ok(self):
        return not any(c.status in BLOCKING for c in self.checks)

    @property
    def reasons(self):
        """The reasons of the blocking checks."""
        return [c.reason for c in self.checks if c.status in BLOCKING]

    def to_dict(self):
        return {'destination': self.destination, 'answer':
                'yes' if self.ok else 'no',
                'checks': [c.to_dict() for c in self.checks]}


class ServerInfo:
    """What the pre-flight needs of a server."""

    def __init__(self, uuid, host, vtpm, source, vm_state=None,
                 task_state=None, problems=()):
        self.uuid = uuid
        self.host = host
        self.vtpm = vtpm          # tpm.VTPM or None
        self.source = source      # 'nova' or 'journal'
        self.vm_state = vm_state
        self.task_state = task_state
        self.problems = list(problems)

    def to_dict(self):
        return {'uuid': self.uuid, 'host': self.host,
                'vtpm': self.vtpm.to_dict() if self.vtpm else None,
                'source': self.source, 'vm_state': self.vm_state,
                'task_state': self.task_state,
                'problems': self.problems}


# -- versions -------------------------------------------------------------

def parse_version(value):
    """'0.9.6' -> (0, 9, 6); None when it is not a dotted version."""
    if not isinstance(value, str) or not value:
        return None
    parts = []
    for part in value.strip().split('.'):
        digits = ''
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None


def compare_versions(a, b):
    """-1, 0, 1 like cmp, or None when either is not a version."""
    va, vb = parse_version(a), parse_version(b)
    if va is None or vb is None:
        return None
    length = max(len(va), len(vb))
    va += (0,) * (length - len(va))
    vb += (0,) * (length - len(vb))
    return (va > vb) - (va < vb)


# -- the server -------------------------------------------------------------

def server_from_journal(journal, uuid):
    row = journal.get_instance(uuid)
    if row is None or row['deleted_at'] is not None:
        raise ServerNotFound(reason='the journal inventory has no live vTPM '
                             'server %s%s' % (uuid, ' (it is deleted)' if row
                                              else ''))
    vtpm = None
    if row['vtpm_version']:
        vtpm = tpm.VTPM(row['vtpm_version'], row['vtpm_model'],
                        row['secret_security'] or tpm.DEFAULT_SECRET_SECURITY)
    return ServerInfo(uuid, row['host'], vtpm, 'journal',
                      vm_state=row['vm_state'], task_state=row['task_state'])


def server_from_nova(conf, journal, clients, uuid):
    """The server as Nova has it now (host, flavor, image properties)."""
    from novaclient import exceptions as nova_exc

    from nova_vtpm.agent import reconciler
    from nova_vtpm.agent import request as request_mod
    try:
        server = clients.nova().servers.get(uuid)
    except nova_exc.NotFound:
        raise ServerNotFound(reason='Nova has no server %s' % uuid)
    view = reconciler.server_view(server)
    resolver = request_mod.RequestResolver(conf, journal, clients)
    # (name, properties[, complete]): complete is False when Glance
    # should have been asked and could not answer.
    result = resolver.image_properties(uuid, view.image_uuid)
    image_name, image_props = result[0], result[1]
    complete = result[2] if len(result) > 2 else True
    resolution = tpm.resolve(view.flavor_specs, image_props,
                             flavor_name=view.flavor_name,
                             image_name=image_name)
    vtpm = resolution.vtpm
    problems = [str(p) for p in resolution.errors]
    if vtpm is None and not complete:
        # The vTPM may come from image properties Glance did not give:
        # the inventory's record, if any, is better than "no vTPM".
        row = journal.get_instance(uuid)
        if row is not None and row['vtpm_version']:
            vtpm = tpm.VTPM(row['vtpm_version'], row['vtpm_model'],
                            row['secret_security'] or
                            tpm.DEFAULT_SECRET_SECURITY)
        problems.append('Glance did not answer: the image properties may '
                        'be incomplete%s' % (' (vTPM taken from the journal '
                                             'inventory)' if vtpm else ''))
    return ServerInfo(uuid, view.host, vtpm, 'nova',
                      vm_state=view.vm_state, task_state=view.task_state,
                      problems=problems)


def find_server(conf, journal, clients, uuid, source='auto'):
    """(ServerInfo, [warnings]) from Nova when configured, else the journal.

    :raises ServerNotFound:
    """
    warnings = []
    if source in ('auto', 'nova') and clients is not None and \
            clients.configured:
        try:
            return server_from_nova(conf, journal, clients, uuid), warnings
        except ServerNotFound:
            raise
        except Exception as e:
            if source == 'nova':
                raise ServerNotFound(reason='Nova cannot be asked: %s' % e)
            warnings.append('Nova is unreachable (%s: %s): the server comes '
                            'from the journal inventory, which may be out '
                            'of date' % (type(e).__name__, e))
    elif source == 'nova':
        raise ServerNotFound(reason='Nova is not configured '
                             '([nova_vtpm_service] credentials)')
    elif source == 'auto':
        warnings.append('Nova is not configured ([nova_vtpm_service]): the '
                        'server comes from the journal inventory')
    return server_from_journal(journal, uuid), warnings


# -- the checks -------------------------------------------------------------

def _features(facts):
    return set(facts.get('swtpm_features') or []) | set(
        facts.get('swtpm_setup_features') or [])


def check_facts(dest, row, now, max_age):
    if row is None:
        return Check('facts', UNKNOWN, 'no facts from %s: its nova-vtpm '
                     'compute agent has never published any (is it running '
                     'there, with [nova_vtpm_agent] role = compute?)' % dest)
    age = now - (row['updated_at'] or 0)
    if age > max_age:
        return Check('facts', FAIL, 'the facts of %s are %d s old (more '
                     'than %d s): its agent may be down, or its packages '
                     'changed since' % (dest, age, max_age))
    facts = row['facts']
    if not facts.get('swtpm_available'):
        return Check('facts', FAIL, 'swtpm does not run on %s: %s' % (
            dest, facts.get('swtpm_error') or 'unknown error'))
    return Check('facts', OK, 'facts of %s are %d s old: swtpm %s, libtpms '
                 '%s' % (dest, age, facts.get('swtpm_version'),
                         facts.get('libtpms_version')))


def check_swtpm_enabled(dest, facts):
    if facts.get('swtpm_enabled'):
        return Check('swtpm_enabled', OK, '[libvirt] swtpm_enabled is True '
                     'on %s' % dest)
    return Check('swtpm_enabled', FAIL, '[libvirt] swtpm_enabled is False '
                 'on %s: Nova does not put vTPM servers there' % dest)


def check_tpm_version(dest, facts, vtpm):
    versions = facts.get('tpm_versions') or []
    if not versions:
        return Check('tpm_version', WARN, "swtpm %s on %s does not say "
                     'which TPM versions it emulates' % (
                         facts.get('swtpm_version'), dest))
    if vtpm.version in versions:
        return Check('tpm_version', OK, 'swtpm on %s emulates TPM %s' % (
            dest, vtpm.version))
    return Check('tpm_version', FAIL, 'swtpm on %s does not emulate TPM '
                 '%s (only %s)' % (dest, vtpm.version, ', '.join(versions)))


def check_secret_security(dest, facts, server, migration_type):
    mode = server.vtpm.secret_security or tpm.DEFAULT_SECRET_SECURITY
    supported = facts.get('supported_tpm_secret_security') or []
    if mode not in supported:
        return Check('secret_security', FAIL, '%s does not support secret '
                     "security '%s' ([libvirt] supported_tpm_secret_security"
                     ' = %s): the scheduler will not pick it' % (
                         dest, mode, ','.join(supported) or '(empty)'))
    if migration_type == LIVE:
        if mode != secrets_mod.HOST:
            return Check('secret_security', FAIL, "live migration needs "
                         "secret security 'host'; this server has '%s'. "
                         'Nova: "%s"' % (mode, NOVA_LIVE_MIGRATION_ERROR
                                         % server.uuid))
        return Check('secret_security', OK, "'host' mode: Nova sends the "
                     'libvirt secret to %s with the migration' % dest)
    if mode == secrets_mod.USER:
        return Check('secret_security', WARN, "'user' mode: the secret is in "
                     "the owner's Barbican project; only the server's owner "
                     'can resize or migrate it')
    if mode == secrets_mod.DEPLOYMENT:
        return Check('secret_security', OK, "'deployment' mode: Nova's "
                     'service user reads the secret from Barbican on %s'
                     % dest)
    return Check('secret_security', OK, "'%s' mode is supported on %s" % (
        mode, dest))


def check_libtpms(dest, facts, source, source_facts):
    dv = facts.get('libtpms_version')
    if source_facts is None:
        return Check('libtpms', UNKNOWN, 'no facts from the source host %s: '
                     "cannot tell whether %s's libtpms (%s) can read the "
                     'state' % (source, dest, dv))
    sv = source_facts.get('libtpms_version')
    cmp = compare_versions(dv, sv)
    if cmp is None:
        return Check('libtpms', UNKNOWN, 'libtpms version unknown (source %s: '
                     '%s, destination %s: %s)' % (source, sv, dest, dv))
    if cmp < 0:
        return Check('libtpms', FAIL, 'libtpms on %s (%s) is older than on '
                     'the source %s (%s): a state written by a newer libtpms '
                     'cannot be read by an older one (the load fails, or the '
                     'guest comes up on a fresh TPM)' % (dest, dv, source,
                                                         sv))
    return Check('libtpms', OK, 'libtpms on %s (%s) is not older than on the '
                 'source %s (%s)' % (dest, dv, source, sv))


def _profile_names(facts):
    return {p.get('name') for p in facts.get('available_profiles') or []
            if isinstance(p, dict)} or {'null'}


def check_profile(dest, facts, source, source_facts):
    if source_facts is None:
        return Check('profile', UNKNOWN, 'no facts from the source host %s'
                     % source)
    if not source_facts.get('libtpms_profiles'):
        return Check('profile', OK, "the source's libtpms writes "
                     "profile-less ('null' profile) state, which every "
                     'libtpms reads')
    if not facts.get('libtpms_profiles'):
        return Check('profile', FAIL, "the source's libtpms (%s) writes "
                     'states with libtpms profiles; the libtpms on %s (%s) '
                     "has none and reads only the 'null' profile" % (
                         source_facts.get('libtpms_version'), dest,
                         facts.get('libtpms_version')))
    missing = _profile_names(source_facts) - _profile_names(facts)
    if missing:
        return Check('profile', FAIL, '%s does not know the profiles %s of '
                     'the source; a state written with one of them cannot '
                     'be loaded there' % (dest, ', '.join(sorted(missing))))
    return Check('profile', OK, '%s knows every profile of the source'
                 % dest)


def check_shared_storage(dest, facts, source, source_facts):
    if source_facts is None:
        return Check('shared_storage', UNKNOWN, 'no facts from the source '
                     'host %s: cannot tell whether the state is on shared '
                     'storage' % source)
    if not (facts.get('state_root_shared') and
            source_facts.get('state_root_shared')):
        return Check('shared_storage', OK, 'the state roots are not both on '
                     'shared storage (%s: %s, %s: %s): the state is copied '
                     'in the migration stream' % (
                         source, source_facts.get('state_root_fstype'),
                         dest, facts.get('state_root_fstype')))
    old = [(h, f.get('swtpm_version')) for h, f in
           ((source, source_facts), (dest, facts))
           if 'cmdarg-migration' not in _features(f)]
    if old:
        return Check('shared_storage', FAIL, 'the state root is on shared '
                     'storage (%s) and swtpm %s lacks cmdarg-migration '
                     '(--migration release-lock-outgoing, swtpm >= 0.8): the '
                     "destination's swtpm cannot take the state's lock "
                     '(swtpm issue 724)' % (
                         facts.get('state_root_fstype'), ', '.join(
                             '%s on %s' % (v, h) for h, v in old)))
    return Check('shared_storage', OK, 'shared storage (%s) and both swtpm '
                 'hand the state lock over (cmdarg-migration)'
                 % facts.get('state_root_fstype'))


def evaluate(server, dest, dest_row, source_row, migration_type=LIVE,
             now=None, max_age=1800):
    """The verdict for one destination.

    :param dest_row, source_row: journal host_facts rows (or None).
    """
    now = now or time.time()
    checks = []
    if dest == server.host:
        checks.append(Check('destination', FAIL, 'the server is already on '
                            '%s' % dest))
    if server.task_state:
        checks.append(Check('server_state', WARN, 'a task is under way on '
                            'the server (%s): Nova refuses a migration until '
                            'it ends' % server.task_state))
    checks.append(check_facts(dest, dest_row, now, max_age))
    facts = dest_row['facts'] if dest_row else None
    source_facts = source_row['facts'] if source_row else None
    if source_row is not None and now - (source_row['updated_at'] or 0) > \
            max_age:
        checks.append(Check('source_facts', WARN, 'the facts of the source '
                            '%s are %d s old' % (
                                server.host,
                                now - source_row['updated_at'])))
    if facts is not None and facts.get('swtpm_available'):
        checks.append(check_swtpm_enabled(dest, facts))
        checks.append(check_tpm_version(dest, facts, server.vtpm))
        checks.append(check_secret_security(dest, facts, server,
                                            migration_type))
        checks.append(check_libtpms(dest, facts, server.host, source_facts))
        checks.append(check_profile(dest, facts, server.host, source_facts))
        if migration_type == LIVE:
            checks.append(check_shared_storage(dest, facts, server.host,
                                               source_facts))
    elif server.vtpm and migration_type == LIVE and \
            server.vtpm.secret_security != secrets_mod.HOST:
        # Said even without facts: it does not depend on the destination.
        checks.append(check_secret_security(dest, {
            'supported_tpm_secret_security': [server.vtpm.secret_security]},
            server, migration_type))
    return Verdict(dest, checks)


class Report:

    def __init__(self, server, migration_type, verdicts, warnings,
                 destination=None):
        self.server = server
        self.migration_type = migration_type
        self.verdicts = verdicts
        self.warnings = warnings
        self.destination = destination

    @property
    def ok(self):
        if self.server.vtpm is None:
            return True
        return any(v.ok for v in self.verdicts)

    @property
    def accepting(self):
        return [v.destination for v in self.verdicts if v.ok]

    def to_dict(self):
        return {'server': self.server.to_dict(),
                'migration_type': self.migration_type,
                'destination': self.destination,
                'answer': 'yes' if self.ok else 'no',
                'accepting_hosts': self.accepting,
                'warnings': self.warnings,
                'verdicts': [v.to_dict() for v in self.verdicts]}


def preflight(conf, journal, uuid, destination=None, migration_type=LIVE,
              clients=None, source='auto', max_age=None, now=None):
    """Run the pre-flight for a server; returns a :class:`Report`.

    Without ``destination``: every host that published facts, but the
    server's own.

    :raises ServerNotFound:
    """
    if migration_type not in MIGRATION_TYPES:
        raise ValueError('migration type must be one of %s'
                         % ', '.join(MIGRATION_TYPES))
    if max_age is None:
        max_age = conf[facts_conf.GROUP_NAME].max_age
    server, warnings = find_server(conf, journal, clients, uuid, source)
    if server.problems:
        warnings.extend('the server\'s vTPM request: %s' % p
                        for p in server.problems)
    if server.vtpm is None:
        warnings.append('server %s has no vTPM: there is nothing for '
                        'nova-vtpm to check' % uuid)
        return Report(server, migration_type, [], warnings, destination)
    if not server.host:
        warnings.append('server %s has no host (never scheduled, or '
                        'shelved)' % uuid)
    rows = {r['host']: r for r in journal.list_host_facts()}
    source_row = rows.get(server.host)
    if destination:
        dests = [destination]
    else:
        dests = [h for h in sorted(rows) if h != server.host]
        if not dests:
            warnings.append('no host other than the source has published '
                            'its facts')
    verdicts = [evaluate(server, d, rows.get(d), source_row,
                         migration_type, now=now, max_age=max_age)
                for d in dests]
    return Report(server, migration_type, verdicts, warnings, destination)
