"""file receipts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 15:28:00.977518
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('file_receipts',
    sa.Column('file_id', sa.String(length=36), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('format', sa.String(length=32), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('row_count', sa.Integer(), nullable=False),
    sa.Column('accepted', sa.Integer(), nullable=False),
    sa.Column('duplicates', sa.Integer(), nullable=False),
    sa.Column('rejected', sa.Integer(), nullable=False),
    sa.Column('problems', sa.JSON(), nullable=True),
    sa.Column('replay_of', sa.String(length=36), nullable=True),
    sa.Column('report', sa.JSON(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('file_id')
    )
    with op.batch_alter_table('file_receipts', schema=None) as batch_op:
        batch_op.create_index('ix_file_receipts_source_sha', ['source', 'sha256'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('file_receipts', schema=None) as batch_op:
        batch_op.drop_index('ix_file_receipts_source_sha')

    op.drop_table('file_receipts')
