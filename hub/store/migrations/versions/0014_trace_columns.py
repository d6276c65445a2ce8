"""trace and triage: the channel of each register change; the correlation id and resolution of each quarantined input

Revision ID: 0014
Revises: 0006
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('register_changes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('channel', sa.String(length=32), nullable=True))
        batch_op.create_index('ix_changes_correlation', ['correlation_id'], unique=False)
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.add_column(sa.Column('correlation_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('resolved_by', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('resolution_reason', sa.String(length=500), nullable=True))
        batch_op.create_index('ix_quarantine_correlation', ['correlation_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.drop_index('ix_quarantine_correlation')
        batch_op.drop_column('resolution_reason')
        batch_op.drop_column('resolved_by')
        batch_op.drop_column('resolved_at')
        batch_op.drop_column('correlation_id')
    with op.batch_alter_table('register_changes', schema=None) as batch_op:
        batch_op.drop_index('ix_changes_correlation')
        batch_op.drop_column('channel')
