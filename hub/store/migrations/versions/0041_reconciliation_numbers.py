"""reconciliation numbers: the NHS number kept encrypted beside its keyed hash

`reconciliation_rows` and `reconciliation_items` gain `person_number`: the NHS
number whose keyed hash `person_key` is, encrypted under the data key
(hub.crypto), so that `s117hub rotate-data-key` (hub/store/rekey.py) can
recompute the hash under a new key for someone not on the register. Null for
rows and differences kept before (the hash only). `store_key_rotations` gains
`forget_unmatched`: the rotation in progress replaces such hashes with values
that match no one (`--forget-unmatched-reconciliation`), and a resumed one
does the same. Nothing personal in clear.

Revision ID: 0041
Revises: 0040
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0041'
down_revision = '0040'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('reconciliation_rows', sa.Column('person_number', sa.LargeBinary(), nullable=True))
    op.add_column('reconciliation_items', sa.Column('person_number', sa.LargeBinary(), nullable=True))
    op.add_column('store_key_rotations', sa.Column('forget_unmatched', sa.Boolean(), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), as 0039's downgrade.
    op.drop_column('store_key_rotations', 'forget_unmatched')
    op.drop_column('reconciliation_items', 'person_number')
    op.drop_column('reconciliation_rows', 'person_number')
