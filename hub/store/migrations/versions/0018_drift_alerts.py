"""drift alerts per body; disclosures of an event about a body carry no person

Revision ID: 0018
Revises: 0019
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0018'
down_revision = '0019'  # re-chained after main's head when rebased (0004 -> 0017 -> 0019)
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('drift_alerts',
    sa.Column('body_org', sa.String(length=16), nullable=False),
    sa.Column('above', sa.Boolean(), nullable=False),
    sa.Column('snapshot_id', sa.String(length=36), nullable=True),
    sa.Column('event_id', sa.String(length=36), nullable=True),
    sa.Column('open_total', sa.Integer(), nullable=False),
    sa.Column('alerted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('body_org')
    )
    with op.batch_alter_table('disclosures', schema=None) as batch_op:
        batch_op.alter_column('person_id', existing_type=sa.String(length=36), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table('disclosures', schema=None) as batch_op:
        batch_op.alter_column('person_id', existing_type=sa.String(length=36), nullable=False)
    op.drop_table('drift_alerts')
