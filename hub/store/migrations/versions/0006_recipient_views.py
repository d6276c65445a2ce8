"""recipient views; dispatched events; payload hash of ingest results

Revision ID: 0006
Revises: 0009
Create Date: 2026-11-30 20:50:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'recipient_views',
        sa.Column('person_id', sa.String(length=36), nullable=False),
        sa.Column('org_code', sa.String(length=16), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('view', sa.JSON(), nullable=False),
        sa.Column('last_event_id', sa.String(length=36), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['person_id'], ['persons.person_id']),
        sa.PrimaryKeyConstraint('person_id', 'org_code'),
    )
    op.create_table(
        'dispatched_events',
        sa.Column('event_id', sa.String(length=36), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('event_id'),
    )
    with op.batch_alter_table('ingest_results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('payload_sha256', sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_table('dispatched_events')
    with op.batch_alter_table('ingest_results', schema=None) as batch_op:
        batch_op.drop_column('payload_sha256')
    op.drop_table('recipient_views')
