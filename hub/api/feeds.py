"""Pull feeds: a subscriber without an inbound endpoint fetches its messages.

GET /v1/feeds/{subscription_id}?after=<cursor> returns the next messages after
the cursor, oldest first, and acknowledges everything up to the cursor: the
subscriber passes back the last cursor it has durably handled, so a crash on
its side means the same messages again (at least once, in order), never a gap.
The cursor is the subscription's event number (hub.delivery.queue). A cursor
acknowledges only what the feed has handed out (`_next` counts an attempt on
each message it serves): one beyond the highest event number served is refused
(422) and acknowledges nothing: it would swallow the unread messages up to
it and, at the next reconnect, every later one numbered up to it.

The same URL with `Accept: text/event-stream` is a Server-Sent Events stream
for a council that can hold a connection open: each message is an event whose
`id` is its event number, `event` its event type and `data` the same JSON item
as the pull feed gives. The stream starts after `Last-Event-ID` (or `after`),
which acknowledges everything up to it, exactly like the cursor (and is
refused the same way, before the stream starts); a comment
line keeps the connection alive while there is nothing to send; the hub ends
a stream after `S117_SSE_MAX_SECONDS` and the client reconnects with its
`Last-Event-ID` (what EventSource does by itself).

Every page and stream carries `S117-Restore-Epoch` (hub/store/restores.py):
"0" until the store is restored from a backup, then that restore's id; so
does the body, as `restore_epoch` on the page and on each item (the stream's
`data` too: a browser's EventSource cannot read the response's headers). A
subscriber that sees it change moves its cursor back to the subscription's
`last_event_number_sent` (a cursor past what the restored feed has handed out
is refused, 422, as above) and de-duplicates what comes again by event id.

Handing a message out is disclosing it, so it rests on the data-sharing
agreements in force then, not when it was queued (hub.sharing.DisclosureCheck,
the dispatcher's own question asked again, as every push channel does: 
hub.delivery.leases). An organisation that no agreement in force names any
more gets 403 problem `no-agreement` for the whole feed (as a replay by event
number: hub/api/subscriptions.py), audited as a refused read, and nothing
changes: its messages stay queued, its cursor stays valid, and once an
agreement is in force again the feed goes on where it was. Under an agreement
that no longer covers a message's event type, or grants fewer field groups
than the message carries, that message is not handed out: it is `held` (a
`denied` disclosure says why; the delivery log shows it), never counted as
served, and the feed goes on past it, as a push channel goes on past a held or
dead delivery. Its event number is then the gap the subscriber sees (a
cursor past it acknowledges nothing of it: it was never served); an
operator's retry (`POST /v1/ops/deliveries/{id}/retry`) puts it back, and
the subscriber reads it by rewinding its cursor to before it, when it is
asked again. Stopping the feed at a held message instead would stop every
message after it, for as long as the narrower agreement lasts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.access import record_decision
from hub.api.deps import MAX_ID, ClientDep, HubDep, Cursor, Limit, require, whole_number
from hub.api.problems import ProblemError
from hub.delivery.leases import RELEASED, disclosed_again
from hub.delivery.queue import disclosed_under_another, hold_disallowed
from hub.domain.access import Rule
from hub.observability import metrics
from hub.observability.logging import bound_correlation_id, get_logger
from hub.sharing import DisclosureCheck
from hub.store.db import read_only
from hub.store.restores import EPOCH_HEADER
from hub.store.schema import deliveries, deliveries_with_messages, delivery_messages, subscriptions
from hub.domain.dates import england_day

router = APIRouter(prefix="/v1/feeds", tags=["subscriptions"])
log = get_logger("hub.feeds")
SSE = "text/event-stream"


# Handed out at least once: `_next` counts an attempt on each message it serves.
_SERVED = (deliveries.c.attempts > 0) | (deliveries.c.status == "delivered")


async def _acknowledge(conn: AsyncConnection, subscription_id: str, upto: int, field: str) -> int:
    """Acknowledge the feed's messages up to `upto` (the subscriber's cursor,
    given as `field`), or refuse a cursor beyond what the feed has handed out
    (422, nothing acknowledged). The check and the acknowledgement are one
    transaction, the caller's; and the acknowledgement itself takes only
    messages served, so none that was never handed out is marked delivered
    whatever happens alongside (an operator's replay puts messages back unserved)."""
    if upto > 0:
        await _within_served(conn, subscription_id, upto, field)
    acked = await conn.execute(
        deliveries.update()
        .where(deliveries.c.subscription_id == subscription_id, deliveries.c.status == "pending",
               deliveries.c.event_number <= upto, deliveries.c.attempts > 0)
        .values(status="delivered", delivered_at=datetime.now(UTC)))
    return acked.rowcount or 0


async def _within_served(conn: AsyncConnection, subscription_id: str, upto: int, field: str) -> None:
    # Some message numbered `upto` or more handed out: normally the one numbered `upto`
    # itself, the first the index range (subscription, event number) meets.
    reached = (await conn.execute(
        select(deliveries.c.event_number)
        .where(deliveries.c.subscription_id == subscription_id, deliveries.c.event_number >= upto, _SERVED)
        .order_by(deliveries.c.event_number).limit(1))).first()
    if reached is not None:
        return
    last = (await conn.execute(
        select(deliveries.c.event_number)
        .where(deliveries.c.subscription_id == subscription_id, deliveries.c.event_number < upto, _SERVED)
        .order_by(deliveries.c.event_number.desc()).limit(1))).scalar_one_or_none() or 0
    reason = f"beyond the last event number this feed has handed out ({last})"
    raise ProblemError(422, "invalid-request", "Request rejected", f"{field} is {reason}",
                       errors=[{"field": field, "reason": reason}])


async def _next(conn: AsyncConnection, sub: Any, after: int, limit: int,
                check: DisclosureCheck | None) -> tuple[list[Any], bool]:
    """The next pending messages after `after` that the agreements in force
    (`check`) let go, each counted as served; those they no longer allow are
    held (module docstring). Also whether `limit` were found (held or not):
    there may be more."""
    rows = (await conn.execute(
        select(deliveries.c.delivery_seq, deliveries.c.event_number, deliveries.c.delivery_id,
               deliveries.c.event_id, deliveries.c.message_id, deliveries.c.event_type, delivery_messages.c.payload,
               deliveries.c.attempts, deliveries.c.field_groups, deliveries.c.last_error, deliveries.c.created_at)
        .select_from(deliveries_with_messages)
        .where(deliveries.c.subscription_id == sub.subscription_id, deliveries.c.event_number > after,
               deliveries.c.status == "pending")
        .order_by(deliveries.c.event_number).limit(limit))).all()
    found = len(rows) == limit
    if check is not None and rows:
        withheld = await hold_disallowed(conn, check, rows, sub.org_code, "feed", sub.subscription_id)
        if withheld:
            metrics.DELIVERY.labels(channel="feed", outcome="held").inc(len(withheld))
            held = {r.delivery_seq for r, _ in withheld}
            rows = [r for r in rows if r.delivery_seq not in held]
    for r in rows:  # the delivery log shows how often each was fetched
        await conn.execute(deliveries.update().where(deliveries.c.delivery_seq == r.delivery_seq)
                           .values(attempts=r.attempts + 1))
    released = [r for r in rows if r.last_error is not None and r.last_error.startswith(RELEASED)]
    if check is not None and released:
        # Put back by an operator (hub/api/ops.py) after it was held: handed out now, so disclosed again,
        # recorded in this page's transaction as a push channel's send is (hub/delivery/leases.py).
        await disclosed_again(conn, check.sharing, "feed", sub.subscription_id, sub.org_code, released,
                              datetime.now(UTC))
    if check is not None and rows:  # handed out under an agreement other than the one queued under: recorded so
        await disclosed_under_another(conn, check, [r for r in rows if r not in released], sub.org_code, "feed",
                                      datetime.now(UTC))
    return rows, found


def _check(hub) -> DisclosureCheck:  # noqa: ANN001
    """The agreements in force now, for one page (or one turn of a stream)."""
    return DisclosureCheck(hub.sharing, england_day())


async def _require_agreement(hub, client, check: DisclosureCheck) -> None:  # noqa: ANN001
    """No agreement in force naming the organisation: the whole feed refused
    (403 `no-agreement`, as a replay by event number), the refused read audited."""
    if check.any_in_force(client.org_code):
        return
    async with hub.engine.begin() as conn:
        await record_decision(conn, client, channel="feed", action="read", allowed=False, rule=Rule.NO_AGREEMENT,
                              correlation_id=bound_correlation_id())
    metrics.DELIVERY.labels(channel="feed", outcome="refused").inc()
    raise ProblemError(403, "forbidden", "Not permitted",
                       "no data-sharing agreement in force names this organisation", rule="no-agreement")


def _item(hub, r) -> dict:  # noqa: ANN001
    # The messages are stored as JSON already: splice them in without re-parsing.
    return {"cursor": r.event_number, "event_number": r.event_number, "event_id": r.event_id,
            "message_id": r.message_id, "event_type": r.event_type, "restore_epoch": hub.restore_epoch,
            "message": orjson.Fragment(hub.protector.decrypt(r.payload))}


async def _feed(hub, client, subscription_id: str):  # noqa: ANN001, ANN202
    async with hub.engine.connect() as conn:
        sub = (await conn.execute(select(subscriptions).where(subscriptions.c.subscription_id == subscription_id))).first()
        await conn.rollback()
    if sub is None or sub.org_code != client.org_code or sub.channel != "feed":
        raise ProblemError(404, "not-found", "Not found", "no feed subscription with that id for this organisation")
    if not sub.active:  # stopped (DELETE /v1/subscriptions/{id}): nothing more is handed out
        raise ProblemError(410, "subscription-stopped", "Subscription stopped",
                           "this feed subscription was stopped; its delivery log stays readable at "
                           "/v1/subscriptions/{id}/deliveries; create a new subscription to receive again")
    return sub


@router.get("/{subscription_id}", summary="Pull the next FHIR messages of a feed subscription (JSON, or SSE)",
            responses={200: {"content": {"application/json": {}, SSE: {}}},
                       404: {"description": "No feed subscription with that id for this organisation"},
                       410: {"description": "The subscription was stopped; its delivery log stays readable"}})
async def pull(subscription_id: str, request: Request, hub: HubDep, client: ClientDep, after: Cursor = 0,
               limit: Limit = 50, accept: Annotated[str | None, Header()] = None,
               last_event_id: Annotated[str | None, Header()] = None) -> Response:
    require(client, "subscriptions:write")
    sub = await _feed(hub, client, subscription_id)
    check = _check(hub)
    await _require_agreement(hub, client, check)
    if accept and SSE in accept.lower():
        field = "after"
        if last_event_id is not None and last_event_id.strip():
            field = "Last-Event-ID"
            number = whole_number(last_event_id.strip())  # "5_0", "+5" and "5.0" are not event numbers
            after = -1 if number is None else number
            if not 0 <= after <= MAX_ID:
                raise ProblemError(422, "invalid-request", "Request rejected", "Last-Event-ID must be an event number",
                                   errors=[{"field": "Last-Event-ID", "reason": "must be a whole number from 0"}])
        # Acknowledged (or refused) before the stream starts: a refusal is a 422, not a broken stream.
        async with hub.engine.begin() as conn:
            acked = await _acknowledge(conn, subscription_id, after, field)
        if acked:
            log.info("feed acknowledged", subscription_id=subscription_id, count=acked)
        return StreamingResponse(_stream(hub, request, sub, after), media_type=SSE,
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no",
                                          EPOCH_HEADER: hub.restore_epoch})
    async with hub.engine.begin() as conn:
        acked = await _acknowledge(conn, subscription_id, after, "after")
        rows, more = await _next(conn, sub, after, limit, check)
    if acked:
        log.info("feed acknowledged", subscription_id=subscription_id, count=acked)
    body = {"items": [_item(hub, r) for r in rows], "next_cursor": rows[-1].event_number if rows else after,
            "more": more, "restore_epoch": hub.restore_epoch}
    return Response(orjson.dumps(body), media_type="application/json",
                    headers={"Cache-Control": "no-store", EPOCH_HEADER: hub.restore_epoch})


async def _stream(hub, request: Request, sub: Any, after: int) -> AsyncIterator[bytes]:  # noqa: ANN001
    settings = hub.settings
    ends = time.monotonic() + settings.sse_max_seconds
    quiet_since = time.monotonic()
    yield b"retry: 1000\n\n"
    while time.monotonic() < ends:
        if await request.is_disconnected():
            return
        check = _check(hub)
        if not check.any_in_force(sub.org_code):
            return  # the agreement ended: the client reconnects and is refused (403 no-agreement)
        async with read_only(hub.engine) as conn:  # a read of its own, not ahead of the write below
            active = (await conn.execute(select(subscriptions.c.active).where(
                subscriptions.c.subscription_id == sub.subscription_id))).scalar()
        if not active:
            return  # stopped meanwhile: the client reconnects and is answered 410
        async with hub.engine.begin() as conn:
            rows, more = await _next(conn, sub, after, 100, check)
        for r in rows:
            data = orjson.dumps(_item(hub, r))
            yield b"id: %d\nevent: %s\ndata: %s\n\n" % (r.event_number, r.event_type.encode(), data)
            after = r.event_number
        if rows or more:
            quiet_since = time.monotonic()
            continue
        if time.monotonic() - quiet_since >= settings.sse_heartbeat_seconds:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        await asyncio.sleep(max(0.05, settings.worker_poll_seconds))
