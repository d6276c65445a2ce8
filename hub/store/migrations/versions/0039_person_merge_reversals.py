"""person_merge_reversals: a merge of two NHS numbers made in error, reversed
(POST /v1/persons/merges/{merge_id}/reversal, hub/unmerges.py)

`person_merges` gains the superseded number encrypted (`superseded_number`,
null for a merge recorded before): a reversal gives it back to the person a
merge gave the retained number. `person_merge_reversals` keeps each merge
reversed (its `person_merges` row is taken off, so the superseded number
resolves to its own person again and the two numbers may be merged again),
what went back, what stayed, who, when, why (encrypted) and the events that
told it. Nothing personal in clear.

Revision ID: 0039
Revises: 0038
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0039'
down_revision = '0038'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('person_merges', sa.Column('superseded_number', sa.LargeBinary(), nullable=True))
    op.create_index('ix_person_merges_merge', 'person_merges', ['merge_id'], unique=True)
    op.create_table(
        'person_merge_reversals',
        sa.Column('merge_id', sa.String(length=36), nullable=False),
        sa.Column('superseded_index', sa.String(length=64), nullable=False),
        sa.Column('retained_index', sa.String(length=64), nullable=False),
        sa.Column('superseded_person_id', sa.String(length=36), nullable=True),
        sa.Column('retained_person_id', sa.String(length=36), nullable=True),
        sa.Column('merge_record', sa.JSON(), nullable=False),
        sa.Column('moved_back', sa.JSON(), nullable=False),
        sa.Column('unattributed', sa.JSON(), nullable=False),
        sa.Column('client_id', sa.String(length=64), nullable=False),
        sa.Column('org_code', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.LargeBinary(), nullable=False),
        sa.Column('correlation_id', sa.String(length=64), nullable=False),
        sa.Column('event_ids', sa.JSON(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('merge_id'),
    )


def downgrade() -> None:
    op.drop_table('person_merge_reversals')
    op.drop_index('ix_person_merges_merge', table_name='person_merges')
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), as 0033's downgrade.
    op.drop_column('person_merges', 'superseded_number')
