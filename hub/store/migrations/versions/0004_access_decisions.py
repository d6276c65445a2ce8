"""access decisions (the one access policy's audit)

Revision ID: 0004
Revises: 0007
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'access_decisions',
        sa.Column('decision_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
                  nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('client_id', sa.String(length=64), nullable=False),
        sa.Column('org_code', sa.String(length=16), nullable=False),
        sa.Column('channel', sa.String(length=32), nullable=False),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('change_type', sa.String(length=64), nullable=True),
        sa.Column('person_id', sa.String(length=36), nullable=True),
        sa.Column('decision', sa.String(length=16), nullable=False),
        sa.Column('rule', sa.String(length=64), nullable=False),
        sa.Column('role', sa.String(length=32), nullable=True),
        sa.Column('agreement_id', sa.String(length=100), nullable=True),
        sa.Column('field_groups', sa.JSON(), nullable=True),
        sa.Column('as_of', sa.Date(), nullable=True),
        sa.Column('correlation_id', sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint('decision_id'),
    )
    op.create_index('ix_access_decisions_person', 'access_decisions', ['person_id'])
    op.create_index('ix_access_decisions_at', 'access_decisions', ['at'])


def downgrade() -> None:
    op.drop_index('ix_access_decisions_at', table_name='access_decisions')
    op.drop_index('ix_access_decisions_person', table_name='access_decisions')
    op.drop_table('access_decisions')
