"""store_write_probe: one row the hub rewrites to see whether its store takes writes again

While a write has failed for want of space, a read-only file or database, or a lock
(hub/store/db.py `store_fault`), each hub process rewrites this row every few seconds;
the first that commits makes the process ready again (hub/store/writable.py). Never
written while writes succeed. No personal data.

Revision ID: 0037
Revises: 0036
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0037'
down_revision = '0036'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'store_write_probe',
        sa.Column('probe_id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('probed_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('probe_id'),
    )


def downgrade() -> None:
    op.drop_table('store_write_probe')
