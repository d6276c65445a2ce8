"""subscriptions: suspension_epoch, how many times it has been resumed

A FHIR heartbeat or a delivery batch can be in flight while its
subscription is suspended (by another request's `410 Gone`) and resumed by
the subscriber. Each resume adds one to `suspension_epoch`; a heartbeat or
a batch reads it when it starts, and its 410 suspends the subscription only
if no resume came since (compare-and-set in the suspending UPDATE): a 410
answering a request sent before the latest resume is stale and suspends
nothing. A batch leased before a resume records its outcomes against the
fresh retry budget the resume gave (hub/delivery/leases.py, "Suspension").
Subscriptions already in the table start at 0.

Revision ID: 0032
Revises: 0031
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0032'
down_revision = '0031'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('subscriptions', sa.Column('suspension_epoch', sa.Integer(), nullable=False,
                                             server_default='0'))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), as 0030's downgrade: not batch mode's copy of the
    # table, which SQLite refuses for a table other tables' rows refer to.
    op.drop_column('subscriptions', 'suspension_epoch')
