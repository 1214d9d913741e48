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

"""The journal's tables (SQLAlchemy Core).

The schema is owned by the alembic migrations in ``migrations/``; these
table objects describe the newest revision for the queries.
"""

import sqlalchemy as sa

metadata = sa.MetaData()

# One row per notification received (dedup by the message id Nova's
# notifier puts in every message), or per synthetic event of the reconciler.
events = sa.Table(
    'events', metadata,
    sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
    sa.Column('message_id', sa.String(64), nullable=False),
    sa.Column('event_type', sa.String(255), nullable=False),
    sa.Column('lifecycle', sa.String(64)),
    sa.Column('publisher_id', sa.String(255)),
    sa.Column('instance_uuid', sa.String(36)),
    sa.Column('host', sa.String(255)),
    sa.Column('timestamp', sa.Double),
    sa.Column('received_at', sa.Double, nullable=False),
    # received, pending, done, retry, failed, rejected, skipped
    sa.Column('state', sa.String(16), nullable=False),
    sa.Column('reason', sa.Text),
    sa.Column('payload', sa.Text),
    sa.UniqueConstraint('message_id', name='uniq_events0message_id'),
)

# One row per (event, hook): the hook's work on that event.
work = sa.Table(
    'work', metadata,
    sa.Column('id', sa.Integer, primary_key=True, autoincrement=True),
    sa.Column('event_id', sa.Integer,
              sa.ForeignKey('events.id', ondelete='CASCADE'),
              nullable=False),
    sa.Column('hook', sa.String(64), nullable=False),
    # pending, retry, done, failed
    sa.Column('state', sa.String(16), nullable=False),
    sa.Column('attempts', sa.Integer, nullable=False, default=0),
    sa.Column('next_attempt_at', sa.Double, nullable=False),
    sa.Column('claimed_by', sa.String(255)),
    sa.Column('claimed_until', sa.Double),
    sa.Column('reason', sa.Text),
    sa.Column('updated_at', sa.Double, nullable=False),
    sa.UniqueConstraint('event_id', 'hook', name='uniq_work0event_id0hook'),
)

# What the scheduler knew of a server at boot: the image properties the
# instance.* notifications do not carry.
request_specs = sa.Table(
    'request_specs', metadata,
    sa.Column('instance_uuid', sa.String(36), primary_key=True),
    sa.Column('flavor_name', sa.String(255)),
    sa.Column('flavor_specs', sa.Text),
    sa.Column('image_uuid', sa.String(36)),
    sa.Column('image_name', sa.String(255)),
    sa.Column('image_props', sa.Text),
    sa.Column('updated_at', sa.Double, nullable=False),
)

# The inventory hook's record of each vTPM server.
instances = sa.Table(
    'instances', metadata,
    sa.Column('uuid', sa.String(36), primary_key=True),
    sa.Column('host', sa.String(255)),
    sa.Column('node', sa.String(255)),
    sa.Column('project_id', sa.String(255)),
    sa.Column('flavor_name', sa.String(255)),
    sa.Column('image_uuid', sa.String(36)),
    sa.Column('vtpm_version', sa.String(8)),
    sa.Column('vtpm_model', sa.String(16)),
    sa.Column('secret_security', sa.String(16)),
    sa.Column('attestation_mode', sa.String(16)),
    sa.Column('tpm_policy', sa.String(255)),
    sa.Column('runtime_policy', sa.String(255)),
    sa.Column('mb_policy', sa.String(255)),
    sa.Column('vm_state', sa.String(32)),
    sa.Column('task_state', sa.String(64)),
    sa.Column('lifecycle', sa.String(64)),
    sa.Column('event_timestamp', sa.Double),
    sa.Column('deleted_at', sa.Double),
    sa.Column('updated_at', sa.Double, nullable=False),
)

# The swtpm_state hook's record of each vTPM's identity (migration 0002).
# last_result: ok, alarm, unverified (no secret: recorded what could be).
vtpm_identities = sa.Table(
    'vtpm_identities', metadata,
    sa.Column('instance_uuid', sa.String(36), primary_key=True),
    sa.Column('fingerprint', sa.String(64)),
    sa.Column('ek_cert_sha256', sa.String(64)),
    sa.Column('ek_pub_sha256', sa.String(64)),
    sa.Column('ek_cert_subject', sa.String(255)),
    sa.Column('tpm_version', sa.String(8)),
    sa.Column('host', sa.String(255)),
    sa.Column('secret_security', sa.String(16)),
    sa.Column('permall_size', sa.Integer),
    sa.Column('permall_sha256', sa.String(64)),
    sa.Column('first_seen', sa.Double),
    sa.Column('last_verified', sa.Double),
    sa.Column('last_result', sa.String(16)),
    sa.Column('last_detail', sa.Text),
    sa.Column('last_backup_at', sa.Double),
    sa.Column('last_backup_id', sa.String(64)),
    # The alarm action applied to the server (to undo when it clears).
    sa.Column('alarm_action', sa.String(16)),
    sa.Column('deleted_at', sa.Double),
    sa.Column('updated_at', sa.Double, nullable=False),
)

# The latest facts each compute agent published about its host's swtpm and
# libtpms (nova_vtpm.host.facts notifications; migration 0003), read by
# ``nova-vtpm migration preflight``. ``facts`` is JSON.
host_facts = sa.Table(
    'host_facts', metadata,
    sa.Column('host', sa.String(255), primary_key=True),
    sa.Column('facts', sa.Text, nullable=False),
    sa.Column('updated_at', sa.Double, nullable=False),
)

# The keylime hook's record of each attested server (migration 0004).
# state: waiting (for the guest's agent to register), enrolled (added to
# the verifier), refused (its EK is not this instance's vTPM), failed
# (never registered, or could not be enrolled), removed (unenrolled at
# deletion). operational_state and the attestation_* columns are the
# verifier's, as last seen. failure_key names the last failure an action
# was taken for (once per failure); action is the action applied (to undo).
attestations = sa.Table(
    'attestations', metadata,
    sa.Column('instance_uuid', sa.String(36), primary_key=True),
    sa.Column('mode', sa.String(16)),
    sa.Column('state', sa.String(16), nullable=False),
    sa.Column('host', sa.String(255)),
    sa.Column('project_id', sa.String(255)),
    sa.Column('tpm_policy', sa.String(255)),
    sa.Column('agent_ip', sa.String(255)),
    sa.Column('agent_port', sa.Integer),
    sa.Column('ek_subject', sa.String(255)),
    sa.Column('waiting_since', sa.Double),
    sa.Column('enrolled_at', sa.Double),
    sa.Column('operational_state', sa.Integer),
    sa.Column('operational_state_name', sa.String(32)),
    sa.Column('attestation_status', sa.String(16)),
    sa.Column('attestation_count', sa.Integer),
    sa.Column('last_success', sa.Double),
    sa.Column('last_failure_reason', sa.Text),
    sa.Column('last_failure_at', sa.Double),
    sa.Column('failure_key', sa.String(255)),
    sa.Column('action', sa.String(16)),
    sa.Column('action_at', sa.Double),
    sa.Column('updated_at', sa.Double, nullable=False),
)
