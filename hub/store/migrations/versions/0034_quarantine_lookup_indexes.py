"""quarantine: one look-up for an input sent again, and the operator's newest-first list

`IngestService._held_copy` (a quarantined input sent again byte for byte under
the same source message id is answered with the first one's quarantine id)
asked `ix_quarantine_source (source, received_at)` and so read every row its
source had ever had quarantined; `ix_quarantine_message (source,
source_message_id, received_at)` makes it one look-up, already in the order
it reads them (oldest first). The console's quarantine panel asks
`GET /v1/quarantine` (every source's inputs, newest first, for an operator)
every few seconds and the ops summary counts the last day's by
`received_at`: `ix_quarantine_received (received_at)` serves both without a
sort of the whole table.

Revision ID: 0034
Revises: 0033
"""
from __future__ import annotations

from alembic import op

revision = '0034'
down_revision = '0033'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_quarantine_message', 'quarantine', ['source', 'source_message_id', 'received_at'], unique=False)
    op.create_index('ix_quarantine_received', 'quarantine', ['received_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_quarantine_received', table_name='quarantine')
    op.drop_index('ix_quarantine_message', table_name='quarantine')
