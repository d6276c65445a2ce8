"""the Kafka relay's outbox rows not yet relayed: a partial index (PostgreSQL)

Revision ID: 0021
Revises: 0020
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":  # embedded mode has no relay (hub/store/schema.py)
        op.create_index('ix_bus_unrelayed', 'bus_messages', ['offset'], unique=False,
                        postgresql_where=sa.text('relayed_at IS NULL'))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index('ix_bus_unrelayed', table_name='bus_messages', postgresql_where=sa.text('relayed_at IS NULL'))
