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

"""What the host's swtpm can do.

The guard records these facts in each backup manifest: a state written by
one libtpms can be read by the same or a newer one, never by an older one,
so where a backup may be restored depends on them.

swtpm 0.7.1 prints its features with ``swtpm socket --print-capabilities``
and ``swtpm_setup --print-capabilities`` (JSON), its version with
``--version``; the libtpms version comes from the library itself
(``TPMLIB_GetVersion``).
"""

import ctypes
import dataclasses
import json
import re
import subprocess
import threading
import time

from oslo_log import log as logging

from nova_vtpm.swtpm import exception

LOG = logging.getLogger(__name__)

SWTPM = 'swtpm'
SWTPM_SETUP = 'swtpm_setup'
LIBTPMS = 'libtpms.so.0'
CACHE_SECONDS = 300.0
TIMEOUT = 10.0

# swtpm feature names -> what they mean for the state guard.
FEATURE_NOTES = {
    'cmdarg-key-fd': 'state key through a file descriptor',
    'cmdarg-pwd-fd': 'state passphrase through a file descriptor',
    'cmdarg-migration': 'shared-storage migration (swtpm >= 0.8)',
    'tpmstate-opt-lock': 'optional state lock (swtpm >= 0.10)',
    'cmdarg-profile': 'libtpms profiles (swtpm >= 0.10)',
    'nvram-backend-dir': 'directory state backend',
    'nvram-backend-file': 'file state backend',
}

_VERSION_RE = re.compile(r'version\s+(\d+(?:\.\d+)+)')


@dataclasses.dataclass(frozen=True)
class HostFacts(object):
    swtpm_version: str
    swtpm_setup_version: str
    libtpms_version: str
    swtpm_features: tuple
    swtpm_setup_features: tuple

    def has(self, feature):
        return (feature in self.swtpm_features
                or feature in self.swtpm_setup_features)

    @property
    def missing_features(self):
        """{feature: meaning} of the notable features this host lacks."""
        return {name: note for name, note in sorted(FEATURE_NOTES.items())
                if not self.has(name)}

    def to_dict(self):
        return {'swtpm_version': self.swtpm_version,
                'swtpm_setup_version': self.swtpm_setup_version,
                'libtpms_version': self.libtpms_version,
                'swtpm_features': list(self.swtpm_features),
                'swtpm_setup_features': list(self.swtpm_setup_features),
                'missing_features': self.missing_features}


def _run(cmd, timeout):
    """stdout of ``cmd``; None if it cannot run or fails."""
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout)
    except FileNotFoundError:
        return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        LOG.warning('Cannot run %s: %s', ' '.join(cmd), exc)
        return None
    if proc.returncode:
        LOG.debug('%s exited with %d: %s', ' '.join(cmd), proc.returncode,
                  proc.stderr.decode('utf-8', 'replace').strip())
        return None
    return proc.stdout.decode('utf-8', 'replace')


def parse_version(text):
    """``0.7.1`` from ``TPM emulator version 0.7.1, Copyright ...``."""
    match = _VERSION_RE.search(text or '')
    return match.group(1) if match else None


def parse_capabilities(text):
    """(features, version) from a ``--print-capabilities`` JSON text."""
    try:
        caps = json.loads(text or '')
    except ValueError:
        return (), None
    if not isinstance(caps, dict):
        return (), None
    features = caps.get('features') or ()
    return tuple(str(f) for f in features), caps.get('version')


def libtpms_version(library=LIBTPMS):
    """The version of the libtpms the host has, or None."""
    try:
        lib = ctypes.CDLL(library)
        get_version = lib.TPMLIB_GetVersion
    except (OSError, AttributeError):
        return None
    get_version.restype = ctypes.c_uint32
    get_version.argtypes = []
    value = get_version()
    return '%d.%d.%d' % ((value >> 16) & 0xFF, (value >> 8) & 0xFF,
                         value & 0xFF)


def probe(swtpm=SWTPM, swtpm_setup=SWTPM_SETUP, timeout=TIMEOUT):
    """Ask the host's swtpm, swtpm_setup and libtpms what they are.

    :raises SwtpmNotAvailable: if swtpm cannot be run at all.
    """
    version_text = _run([swtpm, '--version'], timeout)
    if version_text is None:
        raise exception.SwtpmNotAvailable(
            binary=swtpm, reason='"%s --version" failed' % swtpm)
    features, caps_version = parse_capabilities(
        _run([swtpm, 'socket', '--print-capabilities'], timeout))
    setup_features, setup_caps_version = parse_capabilities(
        _run([swtpm_setup, '--print-capabilities'], timeout))
    setup_version = (parse_version(_run([swtpm_setup, '--version'], timeout))
                     or setup_caps_version)
    return HostFacts(
        swtpm_version=parse_version(version_text) or caps_version,
        swtpm_setup_version=setup_version,
        libtpms_version=libtpms_version(),
        swtpm_features=features, swtpm_setup_features=setup_features)


_cache = {}
_cache_lock = threading.Lock()


def host_facts(refresh=False, max_age=CACHE_SECONDS, **kwargs):
    """:func:`probe`, cached for ``max_age`` seconds per process.

    Packages do get upgraded under a running agent: the cache is short.
    """
    key = tuple(sorted(kwargs.items()))
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(key)
        if cached and not refresh and now - cached[0] < max_age:
            return cached[1]
    facts = probe(**kwargs)
    with _cache_lock:
        _cache[key] = (now, facts)
    return facts
