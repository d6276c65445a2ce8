"""store_keys: which data key the store was written under

One row (`name` "data") holding a fixed text encrypted under the data key
(hub/store/key_check.py). Every process that opens the store checks it can
open it before it reads or writes anything, and refuses to start if not: a
hub given another key (a second instance with its own generated key file, a
key file lost or moved, a restored database) would otherwise fail to read
the people it holds, miss them by NHS number (the look-up index is keyed
from the same key, so the same person would be recorded again), and write
rows the other instances cannot read. A store that predates the table gets
its row at the next start, once the key has opened a person's details.

Revision ID: 0031
Revises: 0030
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0031'
down_revision = '0030'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'store_keys',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('check_token', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('store_keys')
