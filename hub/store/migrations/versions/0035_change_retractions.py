"""change_retractions: a register change retracted as recorded in error

`POST /v1/register-changes/{change_id}/retraction` (hub/retraction.py): the
change stays in `register_changes`, and this row says it no longer counts
(every read of a person's history leaves it out: `hub.store.schema.not_retracted`).
Who (client and organisation), when, why (encrypted), the request's correlation
id and the event that told it; one row a change (a second retraction is
answered from it).

Revision ID: 0035
Revises: 0034
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0035'
down_revision = '0034'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'change_retractions',
        sa.Column('change_id', sa.String(length=36), nullable=False),
        sa.Column('person_id', sa.String(length=36), nullable=False),
        sa.Column('client_id', sa.String(length=64), nullable=False),
        sa.Column('org_code', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.LargeBinary(), nullable=False),
        sa.Column('correlation_id', sa.String(length=64), nullable=False),
        sa.Column('event_id', sa.String(length=36), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['change_id'], ['register_changes.change_id']),
        sa.ForeignKeyConstraint(['person_id'], ['persons.person_id']),
        sa.PrimaryKeyConstraint('change_id'),
    )
    op.create_index('ix_retractions_person', 'change_retractions', ['person_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_retractions_person', table_name='change_retractions')
    op.drop_table('change_retractions')
