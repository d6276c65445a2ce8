"""a delivery's message in a table of its own (delivery_messages), written once

The `deliveries` row is written again at every lease and outcome; with its
5 KB message in it, marking it delivered rewrote the whole record and its
overflow page (hub/store/schema.py, `delivery_messages`). Existing messages
are moved, the emptied ones (the retention purge's b"") included.

Revision ID: 0022
Revises: 0021
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table('delivery_messages',
    sa.Column('delivery_seq', Id, autoincrement=False, nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('delivery_seq')
    )
    op.execute("INSERT INTO delivery_messages (delivery_seq, payload) SELECT delivery_seq, payload FROM deliveries")
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('payload')


def downgrade() -> None:
    # Added empty (a NOT NULL column needs a value for the rows there), then filled.
    empty = sa.text("X''" if op.get_bind().dialect.name == "sqlite" else "'\\x'::bytea")
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('payload', sa.LargeBinary(), nullable=False, server_default=empty))
    op.execute("UPDATE deliveries SET payload = (SELECT m.payload FROM delivery_messages m"
               " WHERE m.delivery_seq = deliveries.delivery_seq) WHERE delivery_seq IN"
               " (SELECT delivery_seq FROM delivery_messages)")
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.alter_column('payload', server_default=None, existing_type=sa.LargeBinary(), existing_nullable=False)
    op.drop_table('delivery_messages')
