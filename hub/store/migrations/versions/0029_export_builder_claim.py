"""council exports: one builder at a time (a claim with a lease)

The hub's export worker and an operator's `s117hub export` beside it could
build the same file at once; a worker that had read the export while it was
queued started it again after the other had finished, setting a file already
ready (or acknowledged) back to `building`. A build now claims the export
first: `builder` names it, `builder_until` is when the claim lapses unless
renewed (it is, as the file is written). Exports already in the table have
no claim (NULL): the first builder takes them.

Revision ID: 0029
Revises: 0028
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0029'
down_revision = '0028'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('council_exports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('builder', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('builder_until', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('council_exports', schema=None) as batch_op:
        batch_op.drop_column('builder_until')
        batch_op.drop_column('builder')
