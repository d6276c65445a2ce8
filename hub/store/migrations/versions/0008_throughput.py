"""throughput: the register summary's maintained counts; council files in the background

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 21:10:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Filled for people already on the register at the next start-up
    # (hub/register_counts.py ensure_register_status: it needs the rules).
    op.create_table(
        'register_status',
        sa.Column('person_id', sa.String(length=36), nullable=False),
        sa.Column('council_code', sa.String(length=16), nullable=True),
        sa.Column('council_name', sa.String(length=200), nullable=True),
        sa.Column('icb_code', sa.String(length=16), nullable=True),
        sa.Column('icb_name', sa.String(length=200), nullable=True),
        sa.Column('entitled', sa.Boolean(), nullable=False),
        sa.Column('on_cto', sa.Boolean(), nullable=False),
        sa.Column('in_hospital', sa.Boolean(), nullable=False),
        sa.Column('open_disputes', sa.Boolean(), nullable=False),
        sa.Column('entitlement_start', sa.Date(), nullable=True),
        sa.Column('entitlement_end', sa.Date(), nullable=True),
        sa.Column('next_review_due', sa.Date(), nullable=True),
        sa.Column('late_changes', sa.Integer(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['person_id'], ['persons.person_id']),
        sa.PrimaryKeyConstraint('person_id'),
    )
    op.create_index('ix_register_status_council', 'register_status', ['council_code'])
    op.create_index('ix_register_status_icb', 'register_status', ['icb_code'])
    with op.batch_alter_table('file_receipts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rows_done', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('content', sa.LargeBinary(), nullable=True))
    op.create_table(
        'file_rows',
        sa.Column('file_id', sa.String(length=36), nullable=False),
        sa.Column('row', sa.Integer(), nullable=False),
        sa.Column('entry', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['file_id'], ['file_receipts.file_id']),
        sa.PrimaryKeyConstraint('file_id', 'row'),
    )


def downgrade() -> None:
    op.drop_table('file_rows')
    with op.batch_alter_table('file_receipts', schema=None) as batch_op:
        batch_op.drop_column('content')
        batch_op.drop_column('rows_done')
    op.drop_index('ix_register_status_icb', table_name='register_status')
    op.drop_index('ix_register_status_council', table_name='register_status')
    op.drop_table('register_status')
