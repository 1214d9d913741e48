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

"""The vTPM state guard: the ``swtpm_state`` hook and ``nova-vtpm state``.

``[nova_vtpm_state]`` says where this compute host keeps vTPM state, where
backups go, and what happens when a state is lost or replaced.
``[nova_vtpm_barbican]`` holds the endpoint (adapter) options of the key
manager, where ``deployment`` mode secrets are read with the
``[nova_vtpm_service]`` credentials.
"""

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from nova_vtpm.conf import groups

GROUP_NAME = 'nova_vtpm_state'
BARBICAN_GROUP = 'nova_vtpm_barbican'

ALARM_TAG = 'vtpm-state-alarm'

state_group = cfg.OptGroup(
    GROUP_NAME,
    title='nova-vtpm vTPM state guard',
    help="""
The compute agent's ``swtpm_state`` hook reads each vTPM's identity (the EK
certificate, or the EK public key) offline from its encrypted state, checks
it after every lifecycle event that can lose or replace it (boot, reboot,
power on, resize, live migration and rollback), backs the state up as
ciphertext, and raises an alarm when the state is missing, empty, cannot be
opened with the instance's secret or holds another TPM. ``nova-vtpm state``
lists, verifies, backs up and restores the states of this host.

The agent must run as root (or as ``swtpm_user``) to read the state, and
have ``swtpm`` installed.
""")
barbican_group = cfg.OptGroup(
    BARBICAN_GROUP, title='Barbican (key manager) endpoint for nova-vtpm',
    help="""
How nova-vtpm finds the Key Manager API (service type ``key-manager``). It is
only called for servers whose flavor has ``hw:tpm_secret_security =
deployment``: their secret is stored by Nova's service user, and nova-vtpm's
service user (``[nova_vtpm_service]``) must be able to read it: the
``member`` role on the project of Nova's service user (Barbican 23's default
policy refuses the payload to ``reader``), or a Barbican ACL.
""")

STATE_OPTS = [
    cfg.StrOpt(
        'state_root',
        default='/var/lib/libvirt/swtpm',
        help="""
libvirt's swtpm state directory: each instance's state is in
``<state_root>/<instance uuid>/tpm2``. libvirt compiles this path in; change
it only for tests or a relocated libvirt.
"""),
    cfg.StrOpt(
        'swtpm_user',
        default='tss',
        help="""
The user owning restored state directories and files: the same as Nova's
``[libvirt] swtpm_user`` (``tss`` on Debian and Ubuntu, ``swtpm`` on some
other distributions).

Related options:

* ``swtpm_group``
"""),
    cfg.StrOpt(
        'swtpm_group',
        default='tss',
        help="""
The group owning restored state directories and files: the same as Nova's
``[libvirt] swtpm_group``.
"""),
    cfg.StrOpt(
        'backup_store',
        default='local',
        help="""
Where backups go: the name of a store in the ``nova_vtpm.state_stores``
namespace.

Possible values:

* ``local``: a directory of this host (``backup_dir``);
* the name of another installed store; it is created with ``conf=<the
  configuration>`` and reads its own options.
"""),
    cfg.StrOpt(
        'backup_dir',
        default='/var/lib/nova-vtpm/backups',
        help="""
The directory of the ``local`` backup store (created 0700). Backups are the
encrypted state files as they are on disk, with a manifest: useless without
the instance's secret. A directory on this host does not survive the loss of
the host: use a store off the host for that.
"""),
    cfg.IntOpt(
        'backup_retention',
        default=5, min=1,
        help="""
How many backups of each instance to keep. The newest backup that holds the
recorded TPM identity is always kept as well, so that a run of backups of a
state that could not be verified never pushes out the last good one.
"""),
    cfg.IntOpt(
        'backup_interval',
        default=86400, min=0,
        help="""
Seconds after which a vTPM state that has not been backed up (because no
lifecycle event happened) is checked and backed up by the periodic
reconciliation (``[nova_vtpm_agent] reconcile_interval``, which needs the
``[nova_vtpm_service]`` credentials, is how often that is looked at).
0 disables periodic backups; lifecycle events still make backups.
"""),
    cfg.StrOpt(
        'alarm_action',
        default='none',
        choices=[
            ('none', 'Only record the alarm in the journal and log it.'),
            ('lock', 'Lock the server, with a locked reason (Compute API '
                     '2.73) naming the alarm.'),
            ('stop', 'Stop (power off) the server, so that the guest does '
                     'not write into a new TPM.'),
            ('tag', 'Add the tag ``%s`` to the server (Compute API '
                    '2.26).' % ALARM_TAG),
        ],
        help="""
What nova-vtpm does to a server whose vTPM state is missing, empty,
unreadable with its secret, or holds another TPM. The alarm is always
recorded in the journal (``nova-vtpm events list --state failed``) and logged
at error level. The default does nothing to the server: a guard that stops
or locks servers should be switched on knowingly, once its alarms are
trusted on this cloud. ``lock`` keeps the owner from restarting a server
whose TPM would be re-created; ``stop`` also stops a guest that keeps
running on a fresh TPM. The action is undone (unlock, tag removed) when a
later check finds the recorded TPM again; a stopped server stays stopped.
Actions need the ``[nova_vtpm_service]`` credentials.
"""),
    cfg.BoolOpt(
        'cleanup_source',
        default=False,
        help="""
After a live migration away from this host (or a rollback on the
destination), remove what Nova left behind for the instance: its state
directory and its libvirt ``vtpm`` secret. Leftovers are always reported;
nothing is removed while a domain of that uuid is defined on this host or a
swtpm holds the state.
"""),
    cfg.StrOpt(
        'libvirt_uri',
        default='qemu:///system',
        help="""
The libvirt connection URI for ``virsh`` (``host`` mode secrets, leftover
secrets): the same as Nova's ``[libvirt] connection_uri``.
"""),
    cfg.FloatOpt(
        'check_timeout',
        default=10.0, min=1.0,
        help="""
Seconds allowed for each TPM command of an offline identity read, and for
``virsh``.
"""),
    cfg.StrOpt(
        'tmp_dir',
        help="""
Where the private (0700) copy of a state is made to read its identity.
Unset: the system's temporary directory. swtpm's AppArmor profile may only
allow paths under /tmp and /var/lib/libvirt/swtpm.
"""),
    cfg.StrOpt(
        'swtpm_transport',
        default='unix',
        choices=[
            ('unix', 'Socket pairs: nothing another process can reach.'),
            ('tcp', '127.0.0.1, for AppArmor-confined swtpm that may not '
                    'use unix streams with an unconfined peer.'),
        ],
        help='How nova-vtpm talks to the private swtpm of an identity '
             'read.'),
    cfg.IntOpt(
        'deleted_retention_days',
        default=7, min=0,
        help="""
Days the recorded identity and the backups of a deleted server are kept
before the periodic reconciliation removes them. Nova deletes the
server's secret with it, so its backups can only help if the key manager
itself has a backup of the secret. 0 removes them at the next
reconciliation.
"""),
]


def register_opts(conf):
    conf.register_group(groups.fresh(state_group))
    conf.register_opts(STATE_OPTS, group=GROUP_NAME)
    conf.register_group(groups.fresh(barbican_group))
    ks_loading.register_adapter_conf_options(conf, BARBICAN_GROUP)


def list_opts():
    return {
        state_group: STATE_OPTS,
        barbican_group: ks_loading.get_adapter_conf_options(
            include_deprecated=False),
    }
