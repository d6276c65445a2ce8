"""audit sources' ids the chain read past unseen (audit_gaps)

On PostgreSQL a serial id is drawn at INSERT and visible at COMMIT: the
audit chain (hub/audit.py) could move its cursor past the id of a record
whose transaction had not committed yet, and never chain it. The chain now
keeps such ids as an open gap of the source, read again until the
transactions writing the table when it was seen have ended.

Revision ID: 0027
Revises: 0026
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0027'
down_revision = '0026'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_gaps',
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('first_id', sa.BigInteger(), nullable=False),
    sa.Column('last_id', sa.BigInteger(), nullable=False),
    sa.Column('writers', sa.JSON(), nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('source', 'first_id')
    )


def downgrade() -> None:
    op.drop_table('audit_gaps')
