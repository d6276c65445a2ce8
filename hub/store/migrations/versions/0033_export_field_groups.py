"""council exports: the field groups each file was built with, and who asked for it

A council file is a disclosure of every person it lists, made under the
agreement in force when it was written; a download later (`GET
/v1/exports/{id}`) sends that same file again. `field_groups` records the
groups its columns were filled under (those the layout can carry: a full
extract's, or the union of a delta file's rows'), so a download the
agreement in force no longer grants them all is refused
(`agreement-narrowed`) rather than sending, say, NHS numbers after
`identity` was withdrawn. `requested_by` is the client that asked for an
on-demand file (POST /v1/exports, or `s117hub export`), named in the audit
rows of the people it lists (a subscription's file names its subscriber).
Exports already in the table have neither (NULL): a download takes such a
file as built with every group its layout can carry (refused unless the
agreement in force grants all of them).

Revision ID: 0033
Revises: 0032
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0033'
down_revision = '0032'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('council_exports', sa.Column('field_groups', sa.JSON(none_as_null=True), nullable=True))
    op.add_column('council_exports', sa.Column('requested_by', sa.String(length=64), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), as 0032's downgrade: not batch mode's copy of the
    # table, which SQLite refuses for a table other tables' rows refer to (export_items).
    op.drop_column('council_exports', 'requested_by')
    op.drop_column('council_exports', 'field_groups')
