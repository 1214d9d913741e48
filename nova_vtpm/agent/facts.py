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

"""Host facts: what this compute host's swtpm and libtpms can do.

A vTPM state written by one libtpms can be read by the same or a newer one,
never by an older one; libtpms profiles (0.10) are fixed when a state is
first written; swtpm before 0.8 cannot hand its state lock over on shared
storage (no ``cmdarg-migration``, ``--migration release-lock-outgoing``).
Whether a server can move from one host to another therefore depends on
facts of BOTH hosts, and ``nova-vtpm migration preflight`` runs wherever the
operator is. So:

* every compute agent publishes its host's facts (:func:`collect`) at start
  and every ``[nova_vtpm_facts] publish_interval`` seconds, as a
  notification: an ``oslo_messaging.Notifier`` (``messagingv2``) with
  publisher ``nova-vtpm-agent:<host>``, event type
  ``nova_vtpm.host.facts``, priority INFO, on the agent's own topic and
  exchange (``[nova_vtpm_agent] topic`` / ``exchange``: where every agent
  listens, each compute agent with a pool of its own);
* every agent records the latest facts of each host in the journal
  (:func:`record`, table ``host_facts``), and the notification as a
  ``done`` event.

The facts: swtpm, swtpm_setup and libtpms versions; the features of
``swtpm socket --print-capabilities`` and ``swtpm_setup
--print-capabilities``; the libtpms profiles when swtpm has them; Nova's
``[libvirt] swtpm_enabled`` and ``supported_tpm_secret_security`` as this
agent's configuration has them (run the compute agent on nova-compute's
configuration, e.g. ``--config-file /etc/nova/nova-cpu.conf``); and the
file system of the state root (``[nova_vtpm_state] state_root``), from
``/proc/self/mountinfo``, with whether it is a network or cluster file
system (NFS, CephFS, GlusterFS...).
"""

import json
import os
import threading
import time
import uuid as uuidlib

from oslo_config import cfg
from oslo_log import log as logging
import oslo_messaging

from nova_vtpm.conf import facts as facts_conf
from nova_vtpm.conf import state as state_conf
from nova_vtpm import exception
from nova_vtpm.swtpm import capabilities
from nova_vtpm.swtpm import exception as swtpm_exception

LOG = logging.getLogger(__name__)

FACTS_EVENT = 'nova_vtpm.host.facts'
PUBLISHER = 'nova-vtpm-agent'
# Bump when the meaning of a key changes (readers check it).
FORMAT = 1

# Nova's options this module reads, registered here only when Nova's own
# definitions are not (an agent reads nova-cpu.conf without importing Nova).
NOVA_LIBVIRT_GROUP = 'libvirt'
NOVA_LIBVIRT_OPTS = [
    cfg.BoolOpt('swtpm_enabled', default=False,
                help="Nova's [libvirt] swtpm_enabled (read by nova-vtpm)."),
    cfg.ListOpt('supported_tpm_secret_security',
                default=['user', 'host', 'deployment'],
                help="Nova's [libvirt] supported_tpm_secret_security (read "
                     'by nova-vtpm).'),
]

# File systems on which two hosts see the same state directory (statfs
# type names as /proc/self/mountinfo spells them).
SHARED_FS_TYPES = frozenset([
    'nfs', 'nfs4', 'cephfs', 'ceph', 'glusterfs', 'fuse.glusterfs',
    'fuse.cephfs', 'fuse.ceph-fuse', 'lustre', 'gpfs', 'cifs', 'smb3',
    'smbfs', 'ocfs2', 'gfs2', 'beegfs', 'fuse.beegfs', 'afs',
    'fuse.sshfs', 'fuse.s3fs', 'virtiofs', 'fuse.moosefs', 'fuse.lizardfs',
    'orangefs', 'pvfs2', 'fuse.juicefs', 'panfs', 'quobyte',
    'fuse.quobyte', 'vxfs'])

# Keys a facts payload must have, with their types.
_REQUIRED = {'format': int, 'host': str, 'collected_at': (int, float)}


class MalformedFacts(exception.NovaVTPMException):
    msg_fmt = 'Malformed host facts: %(reason)s'


# -- Nova's [libvirt] options ---------------------------------------------

def register_nova_libvirt_opts(conf):
    """Register Nova's two vTPM options in ``[libvirt]`` unless known.

    When Nova's own options are registered (an in-process Nova), they are
    used as they are; registering a different definition of the same name
    would make Nova fail with DuplicateOptError.
    """
    for opt in NOVA_LIBVIRT_OPTS:
        try:
            conf[NOVA_LIBVIRT_GROUP][opt.dest]
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError, KeyError):
            conf.register_opt(opt, group=NOVA_LIBVIRT_GROUP)


def nova_libvirt_settings(conf):
    """(swtpm_enabled, [supported secret security modes]) from [libvirt]."""
    register_nova_libvirt_opts(conf)
    group = conf[NOVA_LIBVIRT_GROUP]
    modes = [m.strip() for m in (group.supported_tpm_secret_security or [])
             if m and m.strip()]
    return bool(group.swtpm_enabled), modes


# -- the state root's file system -------------------------------------------

def _unescape(field):
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        octal = field[i + 1:i + 4]
        if field[i] == '\\' and len(octal) == 3 and octal.isdigit():
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return ''.join(out)


def parse_mountinfo(text):
    """[(mount point, fstype, source)] from /proc/<pid>/mountinfo text."""
    mounts = []
    for line in text.splitlines():
        if ' - ' not in line:
            continue
        left, right = line.split(' - ', 1)
        fields = left.split()
        rest = right.split()
        if len(fields) < 5 or not rest:
            continue
        mounts.append((_unescape(fields[4]), rest[0],
                       _unescape(rest[1]) if len(rest) > 1 else None))
    return mounts


def filesystem_of(path, mountinfo='/proc/self/mountinfo'):
    """(fstype, mount point, source) of the file system holding ``path``.

    A missing ``path`` is looked up through its nearest existing parent.
    (None, None, None) when it cannot be told.
    """
    path = os.path.abspath(path)
    while not os.path.exists(path) and path != os.path.dirname(path):
        path = os.path.dirname(path)
    path = os.path.realpath(path)
    try:
        with open(mountinfo) as f:
            mounts = parse_mountinfo(f.read())
    except OSError as e:
        LOG.warning('Cannot read %s: %s', mountinfo, e)
        return None, None, None
    best = None
    for point, fstype, source in mounts:
        if path == point or path.startswith(point.rstrip('/') + '/') or \
                point == '/':
            # Later lines over-mount earlier ones: >= keeps the last.
            if best is None or len(point) >= len(best[0]):
                best = (point, fstype, source)
    if best is None:
        return None, None, None
    return best[1], best[0], best[2]


def is_shared_fstype(fstype):
    return bool(fstype) and (fstype in SHARED_FS_TYPES or
                             fstype.split('.')[0] in ('nfs', 'nfs4'))


# -- collecting -----------------------------------------------------------

def _tpm_versions(features):
    return [v for v in ('1.2', '2.0') if 'tpm-%s' % v in features]


def _profiles(swtpm, swtpm_features, timeout):
    """(available profile dicts, or None when swtpm has no profiles)."""
    if not any(f in swtpm_features for f in ('cmdarg-profile',
                                             'cmdarg-print-profiles')):
        return None
    text = capabilities._run([swtpm, 'socket', '--tpm2', '--print-profiles'],
                             timeout)
    found = []
    try:
        data = json.loads(text or '')
    except ValueError:
        return []
    # swtpm 0.10: {"AvailableProfiles": [{"Name": "default-v1",
    # "StateFormatLevel": 7, ...}, ...]}; be lenient about the shape.
    for key, value in (data.items() if isinstance(data, dict) else ()):
        if 'profile' in key.lower() and isinstance(value, list):
            for item in value:
                if isinstance(item, dict) and item.get('Name'):
                    found.append({
                        'name': str(item['Name']),
                        'state_format_level': item.get('StateFormatLevel')})
    return found


def collect(conf, host=None, probe=None):
    """This host's facts, a JSON-serialisable dict.

    :param probe: a callable returning a
        :class:`~nova_vtpm.swtpm.capabilities.HostFacts` (default: the
        cached :func:`~nova_vtpm.swtpm.capabilities.host_facts`).
    """
    from nova_vtpm import version
    host = host or conf.nova_vtpm_agent.host
    probe = probe or capabilities.host_facts
    facts = {
        'format': FORMAT, 'host': host, 'collected_at': time.time(),
        'agent_version': version.version_info.version_string(),
        'swtpm_available': False, 'swtpm_error': None,
        'swtpm_version': None, 'swtpm_setup_version': None,
        'libtpms_version': None, 'swtpm_features': [],
        'swtpm_setup_features': [], 'tpm_versions': [],
    }
    try:
        hf = probe()
    except swtpm_exception.SwtpmNotAvailable as e:
        facts['swtpm_error'] = str(e)
        hf = None
    if hf is not None:
        facts.update(
            swtpm_available=True, swtpm_version=hf.swtpm_version,
            swtpm_setup_version=hf.swtpm_setup_version,
            libtpms_version=hf.libtpms_version,
            swtpm_features=sorted(hf.swtpm_features),
            swtpm_setup_features=sorted(hf.swtpm_setup_features),
            tpm_versions=_tpm_versions(set(hf.swtpm_features) |
                                       set(hf.swtpm_setup_features)))
    features = set(facts['swtpm_features']) | set(
        facts['swtpm_setup_features'])
    profiles = None
    if hf is not None:
        profiles = _profiles(capabilities.SWTPM, features,
                             capabilities.TIMEOUT)
    facts.update({
        # libtpms before 0.10 writes profile-less state: the 'null'
        # profile, which every libtpms reads.
        'libtpms_profiles': profiles is not None,
        'available_profiles': profiles if profiles is not None else [
            {'name': 'null', 'state_format_level': None}],
        'shared_storage_migration': 'cmdarg-migration' in features,
    })
    swtpm_enabled, modes = nova_libvirt_settings(conf)
    facts.update(swtpm_enabled=swtpm_enabled,
                 supported_tpm_secret_security=modes)
    root = conf[state_conf.GROUP_NAME].state_root
    fstype, mount_point, _ = filesystem_of(root)
    facts.update(state_root=root, state_root_fstype=fstype,
                 state_root_mount=mount_point,
                 state_root_shared=is_shared_fstype(fstype))
    return facts


# -- receiving ------------------------------------------------------------

def validate(payload, publisher_id=None):
    """Check a received facts payload; returns it.

    :raises MalformedFacts: naming what is wrong.
    """
    if not isinstance(payload, dict):
        raise MalformedFacts(reason='the payload is %s, not an object'
                             % type(payload).__name__)
    for key, types in _REQUIRED.items():
        value = payload.get(key)
        if value is None:
            raise MalformedFacts(reason='%s is missing' % key)
        if not isinstance(value, types) or isinstance(value, bool):
            raise MalformedFacts(reason='%s has the wrong type (%s)' % (
                key, type(value).__name__))
    host = payload['host']
    if not host or len(host) > 255 or '\x00' in host:
        raise MalformedFacts(reason='host %r is not a host name' % host[:64])
    if payload['format'] > FORMAT:
        # A newer agent: record anyway, readers use what they know.
        LOG.info('Host facts of %s have format %d (this agent knows %d)',
                 host, payload['format'], FORMAT)
    if isinstance(publisher_id, str) and ':' in publisher_id:
        sender = publisher_id.split(':', 1)[1]
        if sender and sender != host:
            raise MalformedFacts(reason='publisher %s sent the facts of '
                                 'another host (%s)' % (publisher_id, host))
    return payload


def record(journal, payload, publisher_id=None):
    """Validate and store received facts, unless newer ones are stored.

    :returns: (host, stored: bool).
    :raises MalformedFacts:
    """
    payload = validate(payload, publisher_id)
    host = payload['host']
    current = journal.get_host_facts(host)
    if current is not None and (current['facts'].get('collected_at') or 0) \
            > payload['collected_at']:
        return host, False
    journal.put_host_facts(host, payload)
    return host, True


# -- publishing -----------------------------------------------------------

def notifier_transport(conf, transport, exchange):
    """A notification transport that sends to ``exchange``.

    oslo.messaging's notifier sends to its transport's ``control_exchange``.
    The agent's own transport serves when that is already the agent's
    exchange (``control_exchange = nova`` in the agent's configuration);
    otherwise a second transport is built on the same configuration with
    ``control_exchange`` set to it. Returns (transport, built: bool).
    """
    if transport is not None and getattr(
            transport.conf, 'control_exchange', None) == exchange:
        return transport, False
    from oslo_messaging import transport as msg_transport
    conf.register_opts(msg_transport._transport_opts)
    conf.set_override('control_exchange', exchange)
    try:
        built = oslo_messaging.get_notification_transport(conf)
    finally:
        conf.clear_override('control_exchange')
    return built, True


class FactsPublisher:
    """Publishes this host's facts at start, periodically, and on demand.

    Each publication says why it was made (``trigger``): ``start``,
    ``periodic``, or ``answer``. An agent that just started knows no other
    host yet (its journal may be new), and the others would only publish
    again after ``publish_interval``: so every compute agent answers
    another host's ``start`` publication by publishing its own facts again
    (:meth:`nudge`), at most once every :attr:`MIN_GAP` seconds; answers
    are not answered.

    :param conf: the agent's ConfigOpts.
    :param transport: the agent's notification transport (or None: one
        is built from ``conf``).
    :param collect_fn: ``collect_fn(conf, host)`` -> facts dict.
    """

    MIN_GAP = 5.0
    START = 'start'
    PERIODIC = 'periodic'
    ANSWER = 'answer'

    def __init__(self, conf, transport=None, host=None, collect_fn=None,
                 retry=3):
        self.conf = conf
        group = conf.nova_vtpm_agent
        self.host = host or group.host
        self.topic = group.topic
        self.exchange = group.exchange
        self.interval = conf[facts_conf.GROUP_NAME].publish_interval
        self.collect_fn = collect_fn or collect
        self._transport, self._built = notifier_transport(
            conf, transport, self.exchange)
        self.notifier = oslo_messaging.Notifier(
            self._transport, publisher_id='%s:%s' % (PUBLISHER, self.host),
            driver='messagingv2', topics=[self.topic], retry=retry)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._nudged = False
        self._thread = None
        self.published = 0
        self.last_facts = None

    def publish(self, trigger=PERIODIC):
        """Collect and send the facts once; returns them."""
        facts = self.collect_fn(self.conf, self.host)
        facts['trigger'] = trigger
        # The notifier logs (and swallows) a failure to send.
        self.notifier.info({'request_id': 'req-%s' % uuidlib.uuid4()},
                           FACTS_EVENT, facts)
        self.published += 1
        self.last_facts = facts
        LOG.info('Published the host facts of %(host)s (%(trigger)s): '
                 'swtpm %(swtpm)s, libtpms %(libtpms)s, swtpm_enabled '
                 '%(enabled)s, secret security %(modes)s, state root on '
                 '%(fs)s',
                 {'host': self.host, 'trigger': trigger,
                  'swtpm': facts.get('swtpm_version'),
                  'libtpms': facts.get('libtpms_version'),
                  'enabled': facts.get('swtpm_enabled'),
                  'modes': ','.join(facts.get(
                      'supported_tpm_secret_security') or []) or '-',
                  'fs': facts.get('state_root_fstype')})
        return facts

    def nudge(self):
        """Publish again soon (another host started)."""
        self._nudged = True
        self._wake.set()

    def _loop(self):
        next_at, trigger, last = time.monotonic(), self.START, None
        while not self._stop.is_set():
            if self._nudged:
                self._nudged = False
                soon = time.monotonic() if last is None else max(
                    time.monotonic(), last + self.MIN_GAP)
                if next_at is None or soon < next_at:
                    next_at, trigger = soon, self.ANSWER
            now = time.monotonic()
            if next_at is not None and now >= next_at:
                try:
                    self.publish(trigger)
                    delay = self.interval or None
                except Exception:
                    delay = self.interval or 60
                    LOG.exception('Publishing the host facts failed; next '
                                  'try in %s s', delay)
                last = time.monotonic()
                next_at = None if delay is None else last + delay
                trigger = self.PERIODIC
                continue
            self._wake.wait(None if next_at is None else next_at - now)
            self._wake.clear()

    def start(self):
        self._thread = threading.Thread(target=self._loop,
                                        name='nova-vtpm-facts', daemon=True)
        self._thread.start()

    def stop(self, timeout=30):
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._built:
            self._transport.cleanup()
            self._built = False
