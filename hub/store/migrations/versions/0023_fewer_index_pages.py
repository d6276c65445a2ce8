"""fewer index pages a change: the register status's mostly-NULL columns indexed where set, no index nothing reads

Every register change writes a row of `access_decisions` and its person's
row of `register_status`, and with them an entry in each of their indexes: a
page of the WAL each (bench/bench_pages.py). Of those:

- `ix_access_decisions_person` and `ix_access_decisions_at`: no query of the
  hub reads them. The audit chain reads the rows by their key, and holds
  each decision's person and time under its own indexes
  (`ix_audit_chain_person`).
- `ix_register_status_council`: a look-up by council alone uses
  `ix_register_status_pair` (council, ICB), whose first column it is.
- `ix_register_status_icb`, `_started`, `_ended`: NULL on most first writes
  (no responsible ICB yet, no entitlement begun or ended), and every query
  looks them up by value (`=`, `>=`), which only a set value meets: indexed
  where set (a partial index, which SQLite and PostgreSQL both use for such
  a comparison). A new row's NULL entry went into the middle of the index,
  splitting pages.

Revision ID: 0023
Revises: 0022
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None

_WHERE_SET = {'ix_register_status_icb': 'icb_code', 'ix_register_status_started': 'entitlement_start',
              'ix_register_status_ended': 'entitlement_end'}


def upgrade() -> None:
    op.drop_index('ix_access_decisions_person', table_name='access_decisions')
    op.drop_index('ix_access_decisions_at', table_name='access_decisions')
    op.drop_index('ix_register_status_council', table_name='register_status')
    for name, column in _WHERE_SET.items():
        where = sa.text(f'{column} IS NOT NULL')
        op.drop_index(name, table_name='register_status')
        op.create_index(name, 'register_status', [column], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, column in _WHERE_SET.items():
        op.drop_index(name, table_name='register_status')
        op.create_index(name, 'register_status', [column])
    op.create_index('ix_register_status_council', 'register_status', ['council_code'])
    op.create_index('ix_access_decisions_at', 'access_decisions', ['at'])
    op.create_index('ix_access_decisions_person', 'access_decisions', ['person_id'])
