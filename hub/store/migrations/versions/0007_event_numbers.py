"""event numbers per subscription; FHIR topic-based subscriptions

Revision ID: 0007
Revises: 0010
Create Date: 2026-11-30 20:45:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('subscription_counters',
    sa.Column('subscription_id', sa.String(length=36), nullable=False),
    sa.Column('last_event_number', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.subscription_id'], ),
    sa.PrimaryKeyConstraint('subscription_id')
    )
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fhir', sa.JSON(), nullable=True))
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('event_number', sa.BigInteger(), nullable=True))
    # Number the deliveries queued before this revision in the order they were queued.
    op.execute("UPDATE deliveries SET event_number = (SELECT count(*) FROM deliveries d2 "
               "WHERE d2.subscription_id = deliveries.subscription_id AND d2.delivery_seq <= deliveries.delivery_seq)")
    op.execute("INSERT INTO subscription_counters (subscription_id, last_event_number) "
               "SELECT s.subscription_id, COALESCE((SELECT max(d.event_number) FROM deliveries d "
               "WHERE d.subscription_id = s.subscription_id), 0) FROM subscriptions s")
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ux_deliveries_subscription_number', ['subscription_id', 'event_number'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ux_deliveries_subscription_number')
        batch_op.drop_column('event_number')
    op.drop_table('subscription_counters')
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_column('fhir')
