"""subscription topic

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 16:17:48.565548
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('topic', sa.String(length=249), nullable=True))
    # Kafka subscriptions made before this column kept their topic in url as "kafka:<topic>".
    op.execute("UPDATE subscriptions SET topic = substr(url, 7), url = NULL "
               "WHERE channel = 'kafka' AND url LIKE 'kafka:%'")



def downgrade() -> None:
    op.execute("UPDATE subscriptions SET url = 'kafka:' || topic WHERE channel = 'kafka' AND topic IS NOT NULL")
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_column('topic')

