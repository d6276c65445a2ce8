"""reconciliation: snapshots, rows, items

Revision ID: 0012
Revises: 0003
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reconciliation_snapshots',
    sa.Column('snapshot_id', sa.String(length=36), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('body_org', sa.String(length=16), nullable=False),
    sa.Column('body_kind', sa.String(length=32), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('format', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('rows_read', sa.Integer(), nullable=False),
    sa.Column('rows_rejected', sa.Integer(), nullable=False),
    sa.Column('persons_compared', sa.Integer(), nullable=False),
    sa.Column('persons_total', sa.Integer(), nullable=True),
    sa.Column('differences', sa.Integer(), nullable=False),
    sa.Column('problems', sa.JSON(), nullable=True),
    sa.Column('summary', sa.JSON(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('snapshot_id')
    )
    with op.batch_alter_table('reconciliation_snapshots', schema=None) as batch_op:
        batch_op.create_index('ix_reconciliation_snapshots_body', ['body_org', 'received_at'], unique=False)
    op.create_table('reconciliation_rows',
    sa.Column('snapshot_id', sa.String(length=36), nullable=False),
    sa.Column('row_no', sa.Integer(), nullable=False),
    sa.Column('person_key', sa.String(length=64), nullable=False),
    sa.Column('local_id', sa.LargeBinary(), nullable=True),
    sa.Column('belief', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['snapshot_id'], ['reconciliation_snapshots.snapshot_id'], ),
    sa.PrimaryKeyConstraint('snapshot_id', 'row_no')
    )
    with op.batch_alter_table('reconciliation_rows', schema=None) as batch_op:
        batch_op.create_index('ix_reconciliation_rows_person', ['person_key'], unique=False)
    op.create_table('reconciliation_items',
    sa.Column('item_id', sa.String(length=36), nullable=False),
    sa.Column('body_org', sa.String(length=16), nullable=False),
    sa.Column('person_key', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('field', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('difference', sa.JSON(), nullable=False),
    sa.Column('person_id', sa.String(length=36), nullable=True),
    sa.Column('first_seen', sa.String(length=36), nullable=False),
    sa.Column('last_seen', sa.String(length=36), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('fixed_by', sa.String(length=16), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('item_id'),
    sa.UniqueConstraint('body_org', 'person_key', 'kind', 'field', name='uq_reconciliation_item')
    )
    with op.batch_alter_table('reconciliation_items', schema=None) as batch_op:
        batch_op.create_index('ix_reconciliation_items_person', ['person_key'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('reconciliation_items', schema=None) as batch_op:
        batch_op.drop_index('ix_reconciliation_items_person')
    op.drop_table('reconciliation_items')
    with op.batch_alter_table('reconciliation_rows', schema=None) as batch_op:
        batch_op.drop_index('ix_reconciliation_rows_person')
    op.drop_table('reconciliation_rows')
    with op.batch_alter_table('reconciliation_snapshots', schema=None) as batch_op:
        batch_op.drop_index('ix_reconciliation_snapshots_body')
    op.drop_table('reconciliation_snapshots')
