"""change_retraction_reversals: a retraction made in error, reversed

`POST /v1/register-changes/{change_id}/retraction/reversal`
(hub/unretractions.py): the `change_retractions` row is taken off (the change
counts in its person's history again, under its own id and recorded time) and
kept here whole, with who reversed it, when, why (encrypted), the request's
correlation id and the event that told it. One row a retraction reversed (the
retraction's event id); the change may be retracted again. Nothing personal in
clear.

Revision ID: 0042
Revises: 0041
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0042'
down_revision = '0041'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'change_retraction_reversals',
        sa.Column('retraction_event_id', sa.String(length=36), nullable=False),
        sa.Column('change_id', sa.String(length=36), nullable=False),
        sa.Column('person_id', sa.String(length=36), nullable=False),
        sa.Column('retraction', sa.JSON(), nullable=False),
        sa.Column('retraction_reason', sa.LargeBinary(), nullable=False),
        sa.Column('client_id', sa.String(length=64), nullable=False),
        sa.Column('org_code', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.LargeBinary(), nullable=False),
        sa.Column('correlation_id', sa.String(length=64), nullable=False),
        sa.Column('event_id', sa.String(length=36), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['change_id'], ['register_changes.change_id']),
        sa.ForeignKeyConstraint(['person_id'], ['persons.person_id']),
        sa.PrimaryKeyConstraint('retraction_event_id'),
    )
    op.create_index('ix_retraction_reversals_change', 'change_retraction_reversals', ['change_id', 'at'],
                    unique=False)
    op.create_index('ix_retraction_reversals_person', 'change_retraction_reversals', ['person_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_retraction_reversals_person', table_name='change_retraction_reversals')
    op.drop_index('ix_retraction_reversals_change', table_name='change_retraction_reversals')
    op.drop_table('change_retraction_reversals')
