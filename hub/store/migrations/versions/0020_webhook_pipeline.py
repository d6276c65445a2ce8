"""webhook subscriptions: how many POSTs may be pipelined on the connection

Revision ID: 0020
Revises: 0018
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0020'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pipeline', sa.Integer(), nullable=False, server_default='1'))


def downgrade() -> None:
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_column('pipeline')
