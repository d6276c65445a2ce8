"""subscriptions: suspended (the subscriber answered 410 Gone) until resumed

A webhook (or FHIR rest-hook) subscriber that answers `410 Gone` has said
its endpoint is gone for good: the hub stops sending to it, rather than
retrying every backoff cap for ever. `suspended_at` is when, and
`suspended_reason` why ("gone (HTTP 410)"); the delivery that was answered
410 stays pending with its event number, and those behind it wait. A
suspended subscription is still `active` (DELETE stops it); a resume (the
subscriber's `POST /v1/subscriptions/{id}/resume` or an operator's
`POST /v1/ops/subscriptions/{id}/resume`) clears both, and delivery goes on
from the oldest pending message. Subscriptions already in the table are not
suspended (NULL).

Revision ID: 0030
Revises: 0029
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0030'
down_revision = '0029'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('subscriptions', sa.Column('suspended_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('subscriptions', sa.Column('suspended_reason', sa.String(length=64), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not batch mode's copy of the table: `deliveries`
    # and others refer to `subscriptions`, and SQLite refuses to drop a table that rows refer to.
    op.drop_column('subscriptions', 'suspended_reason')
    op.drop_column('subscriptions', 'suspended_at')
