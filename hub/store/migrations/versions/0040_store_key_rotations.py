"""store_key_rotations: a data key rotation under way

One row (`name` "data") while `s117hub rotate-data-key` (hub/store/rekey.py)
re-encrypts the store under a new data key a chunk at a time: a fixed text
encrypted under the new key (the same key must finish it), both keys'
fingerprints (one-way, never a key), the table being rewritten and the last
row rewritten in it (its key's values), counts so far. While it exists the
store holds data under two keys, and every process that opens the store
refuses to start (hub/store/key_check.py); the rotation's last transaction
records the new key in `store_keys` and deletes the row. No personal data.

Revision ID: 0040
Revises: 0039
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0040'
down_revision = '0039'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'store_key_rotations',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('new_check_token', sa.LargeBinary(), nullable=False),
        sa.Column('old_fingerprint', sa.String(length=32), nullable=False),
        sa.Column('new_fingerprint', sa.String(length=32), nullable=False),
        sa.Column('phase', sa.String(length=32), nullable=False),
        sa.Column('cursor', sa.JSON(), nullable=True),
        sa.Column('counts', sa.JSON(), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('store_key_rotations')
