"""council files: one claim per (source, sha256) on the receipt its rows are recorded under

hub/api/files.py looked for an earlier receipt of a byte-identical file and
then saved its own: two identical files arriving at once both passed the
look and both had their rows recorded (and their bad rows quarantined). The
receipt a file's rows are recorded under (processing, then processed) now
holds the file's sha256 in `claim`, unique per source; a second identical
file cannot insert its claim and is answered from the first. A receipt given
up (failed) releases it, so the file can be sent again.

Each (source, sha256)'s earliest processing or processed receipt takes the
claim here; any later such receipt (the race above, before this migration)
keeps its status and report, without a claim.

Revision ID: 0028
Revises: 0027
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0028'
down_revision = '0027'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('file_receipts', sa.Column('claim', sa.String(length=64), nullable=True))
    op.execute(
        "UPDATE file_receipts SET claim = sha256 WHERE status IN ('processing', 'processed') AND NOT EXISTS ("
        " SELECT 1 FROM file_receipts AS e WHERE e.source = file_receipts.source AND e.sha256 = file_receipts.sha256"
        " AND e.status IN ('processing', 'processed')"
        " AND (e.received_at < file_receipts.received_at"
        "      OR (e.received_at = file_receipts.received_at AND e.file_id < file_receipts.file_id)))")
    op.create_index('uq_file_receipts_source_claim', 'file_receipts', ['source', 'claim'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_file_receipts_source_claim', table_name='file_receipts')
    with op.batch_alter_table('file_receipts', schema=None) as batch_op:
        batch_op.drop_column('claim')
