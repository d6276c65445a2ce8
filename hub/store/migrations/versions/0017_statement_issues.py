"""statement issues: each distinct content of a closed month's recharge statement, so a restatement says so

Revision ID: 0017
Revises: 0004
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0017'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('statement_issues',
    sa.Column('council', sa.String(length=16), nullable=False),
    sa.Column('icb', sa.String(length=16), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('issue', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('totals', sa.JSON(), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('council', 'icb', 'month', 'issue')
    )


def downgrade() -> None:
    op.drop_table('statement_issues')
