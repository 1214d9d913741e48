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

"""The latest swtpm/libtpms facts each compute agent published.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'host_facts',
        sa.Column('host', sa.String(255), primary_key=True),
        sa.Column('facts', sa.Text, nullable=False),
        sa.Column('updated_at', sa.Double, nullable=False),
    )
