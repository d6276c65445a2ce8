"""Pull feeds: a subscriber without an inbound endpoint fetches its messages.

GET /v1/feeds/{subscription_id}?after=<cursor> returns the next messages after
the cursor, oldest first, and acknowledges everything up to the cursor: the
subscriber passes back the last cursor it has durably handled, so a crash on
its side means the same messages again (at least once, in order), never a gap.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from fastapi import APIRouter
from fastapi.responses import Response
from sqlalchemy import select

from hub.api.deps import ClientDep, HubDep, Cursor, Limit, require
from hub.api.problems import ProblemError
from hub.observability.logging import get_logger
from hub.store.schema import deliveries, subscriptions

router = APIRouter(prefix="/v1/feeds", tags=["subscriptions"])
log = get_logger("hub.feeds")


@router.get("/{subscription_id}", summary="Pull the next FHIR messages of a feed subscription")
async def pull(subscription_id: str, hub: HubDep, client: ClientDep, after: Cursor = 0, limit: Limit = 50) -> Response:
    require(client, "subscriptions:write")
    now = datetime.now(UTC)
    async with hub.engine.begin() as conn:
        sub = (await conn.execute(select(subscriptions).where(subscriptions.c.subscription_id == subscription_id))).first()
        if sub is None or sub.org_code != client.org_code or sub.channel != "feed":
            raise ProblemError(404, "not-found", "Not found", "no feed subscription with that id for this organisation")
        acked = await conn.execute(
            deliveries.update()
            .where(deliveries.c.subscription_id == subscription_id, deliveries.c.status == "pending",
                   deliveries.c.delivery_seq <= after)
            .values(status="delivered", delivered_at=now))
        rows = (await conn.execute(
            select(deliveries.c.delivery_seq, deliveries.c.delivery_id, deliveries.c.event_id, deliveries.c.message_id,
                   deliveries.c.event_type, deliveries.c.payload, deliveries.c.attempts)
            .where(deliveries.c.subscription_id == subscription_id, deliveries.c.delivery_seq > after,
                   deliveries.c.status == "pending")
            .order_by(deliveries.c.delivery_seq).limit(limit))).all()
        for r in rows:  # the delivery log shows how often each was fetched
            await conn.execute(deliveries.update().where(deliveries.c.delivery_seq == r.delivery_seq)
                               .values(attempts=r.attempts + 1))
    if acked.rowcount:
        log.info("feed acknowledged", subscription_id=subscription_id, count=acked.rowcount)
    items = [
        {"cursor": r.delivery_seq, "event_id": r.event_id, "message_id": r.message_id, "event_type": r.event_type,
         "message": orjson.Fragment(hub.protector.decrypt(r.payload))}
        for r in rows
    ]
    body = {"items": items, "next_cursor": rows[-1].delivery_seq if rows else after,
            "more": len(rows) == limit}
    # The messages are stored as JSON already: splice them in without re-parsing.
    return Response(orjson.dumps(body), media_type="application/json", headers={"Cache-Control": "no-store"})
