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

"""The keylime hook's record of each attested server.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'attestations',
        sa.Column('instance_uuid', sa.String(36), primary_key=True),
        sa.Column('mode', sa.String(16)),
        # waiting, enrolled, refused, failed, removed
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
