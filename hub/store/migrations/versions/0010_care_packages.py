"""care packages and split decisions

Revision ID: 0010
Revises: 0015
Create Date: 2026-11-30 20:45:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0015'  # re-chained after main's head when rebased (0003 .. 0006 -> 0014 -> 0015)
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table('care_packages',
    sa.Column('line_id', Id, autoincrement=True, nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('package_id', sa.String(length=100), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.String(length=36), nullable=False),
    sa.Column('council', sa.String(length=16), nullable=False),
    sa.Column('icb', sa.String(length=16), nullable=False),
    sa.Column('paid_by', sa.String(length=8), nullable=False),
    sa.Column('service_type', sa.String(length=100), nullable=False),
    sa.Column('provider_kind', sa.String(length=8), nullable=False),
    sa.Column('provider_code', sa.String(length=40), nullable=False),
    sa.Column('need', sa.String(length=16), nullable=False),
    sa.Column('weekly_cost_pence', sa.BigInteger(), nullable=True),
    sa.Column('unit_cost_pence', sa.BigInteger(), nullable=True),
    sa.Column('units_per_week', sa.String(length=16), nullable=True),
    sa.Column('s117_eligible', sa.Boolean(), nullable=False),
    sa.Column('exclusion', sa.String(length=32), nullable=True),
    sa.Column('s17_leave', sa.Boolean(), nullable=False),
    sa.Column('cohort', sa.String(length=32), nullable=False),
    sa.Column('start_date', sa.Date(), nullable=False),
    sa.Column('end_date', sa.Date(), nullable=True),
    sa.Column('source_message_id', sa.String(length=200), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['person_id'], ['persons.person_id'], ),
    sa.PrimaryKeyConstraint('line_id'),
    sa.UniqueConstraint('source', 'package_id', 'version', name='uq_care_package_version')
    )
    with op.batch_alter_table('care_packages', schema=None) as batch_op:
        batch_op.create_index('ix_care_packages_pair', ['council', 'icb', 'start_date'], unique=False)
        batch_op.create_index('ix_care_packages_person', ['person_id'], unique=False)

    op.create_table('split_decisions',
    sa.Column('decision_id', sa.String(length=36), nullable=False),
    sa.Column('person_id', sa.String(length=36), nullable=False),
    sa.Column('council', sa.String(length=16), nullable=False),
    sa.Column('icb', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('council_share_bp', sa.Integer(), nullable=False),
    sa.Column('effective_from', sa.Date(), nullable=False),
    sa.Column('reference', sa.String(length=100), nullable=False),
    sa.Column('proposed_by', sa.String(length=16), nullable=False),
    sa.Column('proposed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('agreed_by', sa.String(length=16), nullable=True),
    sa.Column('agreed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['person_id'], ['persons.person_id'], ),
    sa.PrimaryKeyConstraint('decision_id')
    )
    with op.batch_alter_table('split_decisions', schema=None) as batch_op:
        batch_op.create_index('ix_split_decisions_person', ['person_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('split_decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_split_decisions_person')
    op.drop_table('split_decisions')
    with op.batch_alter_table('care_packages', schema=None) as batch_op:
        batch_op.drop_index('ix_care_packages_person')
        batch_op.drop_index('ix_care_packages_pair')
    op.drop_table('care_packages')
