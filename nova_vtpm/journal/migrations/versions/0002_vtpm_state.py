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

"""The vTPM state guard's record of each vTPM's identity.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'vtpm_identities',
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
        sa.Column('alarm_action', sa.String(16)),
        sa.Column('deleted_at', sa.Double),
        sa.Column('updated_at', sa.Double, nullable=False),
    )
    op.create_index('vtpm_identities_host_idx', 'vtpm_identities', ['host'])
