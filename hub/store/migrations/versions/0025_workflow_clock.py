"""the end-to-end tests' settable workflow clock kept in the store (workflow_clock)

`POST /v1/ops/workflows/clock` (only with S117_WORKFLOW_CLOCK_SETTABLE, never
in production) moves the workflows' "today" forward. Its offset used to live
in the front process's memory, which the clock scanner in a worker process
never saw; it is now one row here, read by every process of the hub
(hub/workflows/service.py, `WorkflowClock`). Production never writes or
reads it. The same table on SQLite and PostgreSQL.

Revision ID: 0025
Revises: 0024
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0025'
down_revision = '0024'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('workflow_clock',
    sa.Column('clock_id', sa.String(length=16), nullable=False),
    sa.Column('offset_days', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('clock_id')
    )


def downgrade() -> None:
    op.drop_table('workflow_clock')
