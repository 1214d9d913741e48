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

"""Exceptions of the swtpm state library.

Each says what was found, where, what swtpm itself said, and what to do.
"""

from nova_vtpm import exception

# Why a state cannot be read. Each kind is one row of the hazard table in
# the design notes.
WRONG_KEY = 'wrong_key'
NO_KEY = 'no_key'
WRONG_KEY_OR_CORRUPT = 'wrong_key_or_corrupt'
TRUNCATED_OR_CORRUPT = 'truncated_or_corrupt'
MISSING_DIR = 'missing_dir'
EMPTY_STATE = 'empty_state'
UNSUPPORTED = 'unsupported'
NO_ACCESS = 'no_access'
SWTPM_FAILED = 'swtpm_failed'

KINDS = (WRONG_KEY, NO_KEY, WRONG_KEY_OR_CORRUPT, TRUNCATED_OR_CORRUPT,
         MISSING_DIR, EMPTY_STATE, UNSUPPORTED, NO_ACCESS, SWTPM_FAILED)

# What the operator should do, per kind.
_ADVICE = {
    WRONG_KEY: (
        'The state does not open with this secret. Check that the libvirt '
        'secret (usage type vtpm) given is the one the state was created '
        'with; a wrong key never modifies the state file.'),
    NO_KEY: (
        'The state is encrypted and no secret was given. Pass the '
        "instance's vTPM secret."),
    WRONG_KEY_OR_CORRUPT: (
        'Either the secret is wrong or the state file is corrupt; swtpm '
        'cannot tell which. Compare the sha256 of tpm2-00.permall with the '
        "last good backup and check the instance's secret."),
    TRUNCATED_OR_CORRUPT: (
        'The state file is truncated or corrupt. Do not start the '
        'instance: restore its vTPM state from a backup.'),
    MISSING_DIR: (
        'The state directory does not exist: libvirt would create a NEW '
        'TPM (new EK) at the next start and the guest would lose every '
        'key sealed to its TPM. Do not start the instance: restore its '
        'vTPM state from a backup.'),
    EMPTY_STATE: (
        'The state holds a fresh, unmanufactured TPM (no EK certificate, '
        'no NV index, no persistent key): the guest TPM identity is gone '
        'and swtpm would start it silently. Do not start the instance: '
        'restore its vTPM state from a backup.'),
    UNSUPPORTED: (
        'This swtpm/libtpms cannot read the state, probably written by a '
        'newer version. Read it on a host with the same or a newer swtpm '
        'and libtpms.'),
    NO_ACCESS: (
        'The state cannot be read by this process. Run as root or as the '
        'swtpm user (tss on Debian/Ubuntu, [libvirt] swtpm_user).'),
    SWTPM_FAILED: (
        'swtpm failed for another reason. See its log lines here and '
        'check that swtpm works on this host (nova-vtpm host facts).'),
}


class SwtpmError(exception.NovaVTPMException):
    """Base class of the swtpm state library's errors."""
    msg_fmt = 'swtpm state error: %(reason)s'


class StateUnreadable(SwtpmError):
    """A vTPM state cannot be opened, or holds no TPM identity.

    :param kind: one of :data:`KINDS`.
    :param path: the state directory.
    :param reason: what was found, in a few words.
    :param detail: swtpm's own log lines, if any (a string).
    :param client_error: the result the control channel or TPM gave,
        e.g. ``TPM result from PTM_INIT: 0x101``, or None.
    """
    msg_fmt = ('Cannot read the vTPM state in %(path)s (%(kind)s): '
               '%(reason)s. %(advice)s%(swtpm)s')

    def __init__(self, kind, path, reason, detail=None, client_error=None):
        if kind not in KINDS:
            raise ValueError('unknown kind %r' % kind)
        self.kind = kind
        self.path = path
        self.reason = reason
        self.detail = detail or ''
        self.client_error = client_error
        said = []
        if client_error:
            said.append(client_error)
        if self.detail:
            # swtpm logs most lines twice (it loads the state twice).
            lines = []
            for line in self.detail.splitlines():
                if line not in lines:
                    lines.append(line)
            said.append(' | '.join(lines))
        super().__init__(
            kind=kind, path=path, reason=reason, advice=_ADVICE[kind],
            swtpm=(' swtpm said: %s' % '; '.join(said)) if said else '')


class IdentityChanged(SwtpmError):
    """The TPM in a state is not the TPM that was expected."""
    msg_fmt = ('The vTPM in %(path)s is not the expected TPM: its identity '
               'fingerprint is %(actual)s, expected %(expected)s. The guest '
               'has lost every key sealed to its TPM (BitLocker, LUKS, '
               'attestation keys). Do not start the instance: restore its '
               'vTPM state from a backup with the expected identity.')

    def __init__(self, path, expected, actual):
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(path=path, expected=expected, actual=actual)


class SwtpmNotAvailable(SwtpmError):
    msg_fmt = ('Cannot run %(binary)s: %(reason)s. Install swtpm and '
               'swtpm-tools (Debian/Ubuntu) or swtpm and swtpm-tools '
               '(RHEL), or fix PATH.')


class StateInUse(SwtpmError):
    msg_fmt = ('The vTPM state in %(path)s is in use by a running swtpm '
               '(its lock file is held). Stop the instance before '
               'restoring its vTPM state.')


class BackupNotFound(SwtpmError):
    msg_fmt = ('No vTPM state backup %(backup_id)s for instance '
               '%(instance_uuid)s in %(store)s. List the backups of the '
               'instance and pick an existing one.')


class BackupCorrupt(SwtpmError):
    msg_fmt = ('The vTPM state backup %(backup_id)s of instance '
               '%(instance_uuid)s is damaged: %(reason)s. Do not restore '
               'it; use an older backup.')


class RestoreFailed(SwtpmError):
    """A restore did not happen; ``cause`` is the underlying error."""

    cause = None
    msg_fmt = ('Restoring vTPM state backup %(backup_id)s into %(path)s '
               'failed: %(reason)s. %(original)s')


class InvalidStoreName(SwtpmError):
    msg_fmt = 'Invalid name for a vTPM state store entry: %(name)r.'
