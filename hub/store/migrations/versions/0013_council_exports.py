"""council exports: outbound council files, their subscriptions and items

Revision ID: 0013
Revises: 0012
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('council_file_subscriptions',
    sa.Column('subscription_id', sa.String(length=36), nullable=False),
    sa.Column('layout', sa.String(length=32), nullable=False),
    sa.Column('schedule', sa.String(length=32), nullable=False),
    sa.Column('mode', sa.String(length=8), nullable=False),
    sa.Column('last_run_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.subscription_id'], ),
    sa.PrimaryKeyConstraint('subscription_id')
    )
    op.create_table('council_exports',
    sa.Column('export_id', sa.String(length=36), nullable=False),
    sa.Column('org_code', sa.String(length=16), nullable=False),
    sa.Column('subscription_id', sa.String(length=36), nullable=True),
    sa.Column('layout', sa.String(length=32), nullable=False),
    sa.Column('mode', sa.String(length=8), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('file_name', sa.String(length=200), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('record_count', sa.Integer(), nullable=False),
    sa.Column('first_event_no', sa.BigInteger(), nullable=True),
    sa.Column('last_event_no', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ready_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ack_via', sa.String(length=16), nullable=True),
    sa.PrimaryKeyConstraint('export_id')
    )
    with op.batch_alter_table('council_exports', schema=None) as batch_op:
        batch_op.create_index('ix_council_exports_org', ['org_code', 'created_at'], unique=False)
    op.create_table('export_items',
    sa.Column('export_id', sa.String(length=36), nullable=False),
    sa.Column('delivery_id', sa.String(length=36), nullable=False),
    sa.Column('event_no', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['export_id'], ['council_exports.export_id'], ),
    sa.PrimaryKeyConstraint('export_id', 'delivery_id'),
    sa.UniqueConstraint('delivery_id', name='uq_export_items_delivery')
    )


def downgrade() -> None:
    op.drop_table('export_items')
    with op.batch_alter_table('council_exports', schema=None) as batch_op:
        batch_op.drop_index('ix_council_exports_org')
    op.drop_table('council_exports')
    op.drop_table('council_file_subscriptions')
