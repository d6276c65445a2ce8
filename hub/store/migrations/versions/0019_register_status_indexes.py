"""register_status indexes for the summary at scale: the (council, ICB) pair, entitlement start and end

Revision ID: 0019
Revises: 0017
"""
from __future__ import annotations

from alembic import op

revision = '0019'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_register_status_pair', 'register_status', ['council_code', 'icb_code'])
    op.create_index('ix_register_status_started', 'register_status', ['entitlement_start'])
    op.create_index('ix_register_status_ended', 'register_status', ['entitlement_end'])


def downgrade() -> None:
    op.drop_index('ix_register_status_ended', table_name='register_status')
    op.drop_index('ix_register_status_started', table_name='register_status')
    op.drop_index('ix_register_status_pair', table_name='register_status')
