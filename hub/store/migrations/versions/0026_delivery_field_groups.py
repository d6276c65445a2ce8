"""a delivery's field groups on its own row (deliveries.field_groups)

Every channel asks the agreements in force again before it sends a queued
message (hub.sharing.DisclosureCheck), with the field groups the message was
rendered with. Those were read per delivery from the message's `allowed`
disclosure (a correlated probe of `disclosures` in every lease, feed page and
replay); the dispatcher now writes them on the delivery when it queues it.
The rows queued before are filled from the same disclosure (the first
`allowed` one of the event to the subscription's organisation), so the check
of a message queued before the upgrade is the one it had; a row with no such
disclosure (queued by hand) stays NULL, as the probe found nothing for it.
The column is added in place (no table rebuild on SQLite).

Revision ID: 0026
Revises: 0025
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0026'
down_revision = '0025'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('field_groups', sa.JSON(none_as_null=True), nullable=True))
    op.execute(
        "UPDATE deliveries SET field_groups = ("
        "SELECT d.field_groups FROM disclosures d, subscriptions s"
        " WHERE s.subscription_id = deliveries.subscription_id AND d.event_id = deliveries.event_id"
        " AND d.recipient_org = s.org_code AND d.decision = 'allowed'"
        " ORDER BY d.disclosure_id LIMIT 1)")


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('field_groups')
