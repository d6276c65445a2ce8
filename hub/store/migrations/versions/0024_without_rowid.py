"""service_levels WITHOUT ROWID on SQLite: one page a change, not two

Every register change writes a row of `service_levels` (its service level),
read only by its primary key (the change's id) or by a scan. In an ordinary
SQLite table the row goes into the table's rowid B-tree and its key into the
primary key's own index (`sqlite_autoindex_service_levels_1`): two pages of
the WAL a change, the index's on a random page (a change id is random). A
`WITHOUT ROWID` table keeps the row in its key's B-tree: one (bench/bench_pages.py:
2.1-2.8 frames a change to 1.2-1.8, the rest being that B-tree's splits).
The rows are about 90 bytes, well under the twentieth of a page beyond which
SQLite advises against WITHOUT ROWID, and no other index names them.

`ingest_results` was tried the same way and left as it is: its rows carry
the 202's body (several hundred bytes), a few to a page, and the B-tree's
splits wrote more pages than the index saved (3.5-5.7 frames a change against 2.3-3.3).

SQLite cannot alter that in place: the table is rebuilt (Alembic's batch
mode copies its rows into the new table). PostgreSQL has no rowid: nothing
to do there.

Revision ID: 0024
Revises: 0023
"""
from __future__ import annotations

from alembic import op

revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None


def _rebuild(with_rowid: bool) -> None:
    if op.get_context().dialect.name != 'sqlite':
        return
    with op.batch_alter_table('service_levels', recreate='always',
                              table_kwargs={'sqlite_with_rowid': with_rowid}):
        pass


def upgrade() -> None:
    _rebuild(False)


def downgrade() -> None:
    _rebuild(True)
