"""store_restores: each `s117hub restore` of the embedded store

When it was restored, the backup's schema revision and counts, where the
displaced store was moved, the position-version floor and what was advanced so
that no event number or version handed out before is handed out again; the
row's id is the restore epoch subscribers are shown (hub/restore_cli.py).

Revision ID: 0036
Revises: 0035
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0036'
down_revision = '0035'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'store_restores',
        sa.Column('restore_id', sa.String(length=36), nullable=False),
        sa.Column('restored_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('backup_revision', sa.String(length=32), nullable=True),
        sa.Column('backup', sa.JSON(), nullable=False),
        sa.Column('displaced', sa.JSON(), nullable=False),
        sa.Column('version_floor', sa.BigInteger(), nullable=False),
        sa.Column('advanced', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('restore_id'),
    )


def downgrade() -> None:
    op.drop_table('store_restores')
