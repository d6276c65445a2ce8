"""audit sources' ids the chain read past unseen (audit_gaps)

On PostgreSQL a serial id is drawn at INSERT and visible at COMMIT: the
audit chain (hub/audit.py) could move its cursor past the id of a record
whose transaction had not committed yet, and never chain it. The chain now
keeps such ids as an open gap of the source, read again until the
transactions writing the table when it was seen have ended.

Records an older hub passed over are found once: while the chain has never
been purged (no anchor), every record of each source up to its cursor that
has no entry is read again as a gap no transaction holds (the first round
after the upgrade reads each source table once against the chain's
(source, source_id) index, then the gap closes). After a purge an entry's
absence no longer tells a record never chained from one whose entry was
purged, so nothing is read again.

Revision ID: 0027
Revises: 0026
"""
from __future__ import annotations

from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa

revision = '0027'
down_revision = '0026'
branch_labels = None
depends_on = None


def upgrade() -> None:
    gaps = op.create_table('audit_gaps',
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('first_id', sa.BigInteger(), nullable=False),
    sa.Column('last_id', sa.BigInteger(), nullable=False),
    sa.Column('writers', sa.JSON(), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('source', 'first_id')
    )
    bind = op.get_bind()
    cursors = sa.table('audit_cursors', sa.column('source', sa.String), sa.column('last_id', sa.BigInteger))
    if bind.execute(sa.select(cursors.c.source).where(cursors.c.source == '(anchor)')).first() is not None:
        return
    now = datetime.now(UTC)
    rows = [{'source': r.source, 'first_id': 1, 'last_id': r.last_id, 'writers': [], 'seen_at': now}
            for r in bind.execute(sa.select(cursors.c.source, cursors.c.last_id)
                                  .where(cursors.c.last_id > 0)).all()]
    if rows:
        op.bulk_insert(gaps, rows)


def downgrade() -> None:
    op.drop_table('audit_gaps')
