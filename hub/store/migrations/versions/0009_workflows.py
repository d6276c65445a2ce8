"""transfer and dispute workflow cases, stages and transitions

Revision ID: 0009
Revises: 0013
Create Date: 2026-11-30 20:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0013'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        'workflow_cases',
        sa.Column('case_id', sa.String(length=36), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('person_id', sa.String(length=36), nullable=False),
        sa.Column('state', sa.String(length=32), nullable=False),
        sa.Column('parties', sa.JSON(), nullable=False),
        sa.Column('dispute_id', sa.String(length=100), nullable=True),
        sa.Column('due_on', sa.Date(), nullable=True),
        sa.Column('clock_owner', sa.String(length=64), nullable=True),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('opened_on', sa.Date(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('case_id'),
        sa.UniqueConstraint('dispute_id'),
    )
    op.create_index('ix_workflow_cases_kind_state', 'workflow_cases', ['kind', 'state'])
    op.create_index('ix_workflow_cases_person', 'workflow_cases', ['person_id'])
    op.create_table(
        'workflow_stages',
        sa.Column('case_id', sa.String(length=36), nullable=False),
        sa.Column('stage_index', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('owner', sa.String(length=64), nullable=False),
        sa.Column('started_on', sa.Date(), nullable=False),
        sa.Column('due_on', sa.Date(), nullable=False),
        sa.Column('ended_on', sa.Date(), nullable=True),
        sa.Column('outcome', sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(['case_id'], ['workflow_cases.case_id']),
        sa.PrimaryKeyConstraint('case_id', 'stage_index'),
    )
    op.create_table(
        'workflow_transitions',
        sa.Column('seq', Id, autoincrement=True, nullable=False),
        sa.Column('case_id', sa.String(length=36), nullable=False),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('from_state', sa.String(length=32), nullable=True),
        sa.Column('to_state', sa.String(length=32), nullable=False),
        sa.Column('actor', sa.String(length=64), nullable=False),
        sa.Column('on_date', sa.Date(), nullable=False),
        sa.Column('citation', sa.String(length=300), nullable=False),
        sa.Column('explanation', sa.String(length=500), nullable=False),
        sa.Column('event_id', sa.String(length=36), nullable=True),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['case_id'], ['workflow_cases.case_id']),
        sa.PrimaryKeyConstraint('seq'),
    )
    op.create_index('ix_workflow_transitions_case', 'workflow_transitions', ['case_id', 'seq'])


def downgrade() -> None:
    op.drop_index('ix_workflow_transitions_case', table_name='workflow_transitions')
    op.drop_table('workflow_transitions')
    op.drop_table('workflow_stages')
    op.drop_index('ix_workflow_cases_person', table_name='workflow_cases')
    op.drop_index('ix_workflow_cases_kind_state', table_name='workflow_cases')
    op.drop_table('workflow_cases')
