"""person_merges: NHS numbers merged by PDS (an HL7 A40, POST /v1/persons/merge)

The superseded number's keyed hash resolves to the retained number's
(hub/store/merged.py): a change, a look-up or a snapshot row under the
superseded number is the retained person's. One row a superseded number; the
persons each number held, the changes joined to the retained person, who,
when, why forced, the event that told it (hub/merges.py). Nothing personal in
clear (the retained number encrypted).

Revision ID: 0038
Revises: 0037
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0038'
down_revision = '0037'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'person_merges',
        sa.Column('superseded_index', sa.String(length=64), nullable=False),
        sa.Column('retained_index', sa.String(length=64), nullable=False),
        sa.Column('retained_number', sa.LargeBinary(), nullable=False),
        sa.Column('merge_id', sa.String(length=36), nullable=False),
        sa.Column('superseded_person_id', sa.String(length=36), nullable=True),
        sa.Column('retained_person_id', sa.String(length=36), nullable=True),
        sa.Column('moved', sa.JSON(), nullable=False),
        sa.Column('forced', sa.Boolean(), nullable=False),
        sa.Column('client_id', sa.String(length=64), nullable=False),
        sa.Column('org_code', sa.String(length=16), nullable=False),
        sa.Column('channel', sa.String(length=32), nullable=False),
        sa.Column('correlation_id', sa.String(length=64), nullable=False),
        sa.Column('event_id', sa.String(length=36), nullable=True),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('superseded_index'),
    )


def downgrade() -> None:
    op.drop_table('person_merges')
