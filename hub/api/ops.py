"""Operations API for integration engineers (scope hub:admin): flows, lag,
deliveries, dead letters and replay, register service-level breaches.

Nothing here returns personal data: ids, codes, counts and timestamps only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter
from sqlalchemy import case, exists, func, select

from hub.api.deps import ClientDep, HubDep, Days, Hours, QueryInstant, RowId, require
from hub.api.problems import ProblemError
from hub.api.subscriptions import resume, suspension_view, wake_deliverers
from hub.audit import record_operator_action
from hub.bus.port import EVENTS_TOPIC, BusMessage
from hub.delivery.dispatcher import GROUP as DISPATCHER_GROUP
from hub.delivery.leases import RELEASED
from hub.observability.logging import get_logger
from hub.store.schema import (
    bus_messages,
    dead_letters,
    deliveries,
    delivery_messages,
    quarantine,
    register_changes,
    service_levels,
    subscriptions,
)
from hub.domain.dates import england_day

router = APIRouter(prefix="/v1/ops", tags=["operations"])
log = get_logger("hub.ops")


@router.get("/flows", summary="Ingest, lag, deliveries and dead letters at a glance")
async def flows(hub: HubDep, client: ClientDep, hours: Hours = 24) -> dict:
    require(client, "hub:admin")
    since = datetime.now(UTC) - timedelta(hours=hours)
    async with hub.engine.connect() as conn:
        accepted = (await conn.execute(
            select(register_changes.c.source, func.count()).where(register_changes.c.received_at >= since)
            .group_by(register_changes.c.source))).all()
        held = (await conn.execute(
            select(quarantine.c.source, quarantine.c.channel, func.count()).where(quarantine.c.received_at >= since)
            .group_by(quarantine.c.source, quarantine.c.channel))).all()
        by_sub = (await conn.execute(
            select(subscriptions.c.subscription_id, subscriptions.c.org_code, subscriptions.c.channel,
                   subscriptions.c.active, deliveries.c.status, func.count(), func.min(deliveries.c.created_at),
                   func.max(deliveries.c.attempts), subscriptions.c.suspended_at, subscriptions.c.suspended_reason)
            .join(deliveries, deliveries.c.subscription_id == subscriptions.c.subscription_id, isouter=True)
            .group_by(subscriptions.c.subscription_id, subscriptions.c.org_code, subscriptions.c.channel,
                      subscriptions.c.active, deliveries.c.status, subscriptions.c.suspended_at,
                      subscriptions.c.suspended_reason))).all()
        # Why each subscription's queue waits: its oldest pending message's last error and next attempt
        # (a subscriber failing is retried until it is back, by default: nothing is given up to list).
        head = (select(func.min(deliveries.c.delivery_seq)).where(deliveries.c.status == "pending")
                .group_by(deliveries.c.subscription_id))
        waiting = {r.subscription_id: r for r in (await conn.execute(
            select(deliveries.c.subscription_id, deliveries.c.attempts, deliveries.c.last_error,
                   deliveries.c.next_attempt_at).where(deliveries.c.delivery_seq.in_(head)))).all()}
        dead = (await conn.execute(select(func.count()).select_from(dead_letters)
                                   .where(dead_letters.c.replayed_at.is_(None)))).scalar_one()
        last_offset = (await conn.execute(select(func.max(bus_messages.c.offset)))).scalar_one()
        await conn.rollback()
    subs: dict[str, dict] = {}
    now = datetime.now(UTC)
    for row in by_sub:
        sid, org, channel, active, status, n, oldest, max_attempts = row[:8]
        entry = subs.get(sid)
        if entry is None:
            entry = subs[sid] = {"subscription_id": sid, "org_code": org, "channel": channel, "active": active,
                                 **suspension_view(row),
                                 "delivered": 0, "pending": 0, "dead": 0, "held": 0,
                                 "oldest_pending_seconds": None,
                                 "max_attempts_pending": 0, "oldest_pending_error": None,
                                 "next_attempt_at": None}
            first = waiting.get(sid)
            if first is not None:  # the error's kind ("HTTP 503", "Timeout", "ConnectError"), never a body
                entry["oldest_pending_error"] = first.last_error if first.attempts else None
                at = first.next_attempt_at
                entry["next_attempt_at"] = (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()
        if status:
            entry[status] = n
        if status == "pending" and oldest is not None:
            oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
            entry["oldest_pending_seconds"] = round((now - oldest).total_seconds(), 1)
            entry["max_attempts_pending"] = max_attempts or 0
    return {
        "window_hours": hours,
        "ingest": {
            "accepted": [{"source": s, "count": n} for s, n in accepted],
            "quarantined": [{"source": s, "channel": c, "count": n} for s, c, n in held],
        },
        "bus": {"topic": EVENTS_TOPIC, "last_offset": last_offset,
                "consumers": [{"group": DISPATCHER_GROUP, "lag": await hub.bus.lag(DISPATCHER_GROUP, EVENTS_TOPIC)}],
                "backend": "kafka" if hub.relay is not None else "sql",
                # Kafka mode: events in the outbox not yet relayed to Kafka.
                "relay_pending": await hub.relay.pending() if hub.relay is not None else None},
        "subscriptions": list(subs.values()),
        "dead_letters_open": dead,
        # Deliveries given up: dead letters too, the deliverers' (s117_dead_letters_total{handler="webhook"}),
        # counted apart from the handlers' so a console total is not "0" beside a list of them.
        "dead_deliveries": sum(s["dead"] for s in subs.values()),
    }


@router.get("/dead-letters", summary="Messages and deliveries that could not be handled")
async def list_dead_letters(hub: HubDep, client: ClientDep) -> dict:
    require(client, "hub:admin")
    async with hub.engine.connect() as conn:
        handler_rows = (await conn.execute(select(dead_letters).order_by(dead_letters.c.at.desc()).limit(500))).all()
        # Each given-up delivery with the organisation and channel it was for (an engineer on call asks
        # "for whom?" before anything else), its event number and correlation id (to trace it).
        delivery_rows = (await conn.execute(
            select(deliveries.c.delivery_id, deliveries.c.subscription_id, subscriptions.c.org_code,
                   subscriptions.c.channel, deliveries.c.event_id, deliveries.c.event_number,
                   deliveries.c.event_type, deliveries.c.attempts, deliveries.c.last_error,
                   deliveries.c.correlation_id, deliveries.c.created_at)
            .join(subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id)
            .where(deliveries.c.status == "dead").order_by(deliveries.c.delivery_seq.desc()).limit(500))).all()
        await conn.rollback()
    return {
        "handlers": [{"dead_letter_id": r.dead_letter_id, "topic": r.topic, "group": r.group_id, "offset": r.offset,
                      "event_id": r.event_id, "handler": r.handler, "reason": r.reason, "at": r.at.isoformat(),
                      "replayed_at": r.replayed_at.isoformat() if r.replayed_at else None} for r in handler_rows],
        "deliveries": [{"delivery_id": r.delivery_id, "subscription_id": r.subscription_id, "org_code": r.org_code,
                        "channel": r.channel, "event_id": r.event_id, "event_number": r.event_number,
                        "event_type": r.event_type, "attempts": r.attempts, "last_error": r.last_error,
                        "correlation_id": r.correlation_id,
                        "created_at": r.created_at.isoformat()} for r in delivery_rows],
    }


@router.post("/dead-letters/{dead_letter_id}/replay", summary="Run the handler again for a dead-lettered message",
             responses={404: {"description": "No dead letter with that id"},
                        409: {"description": "Not replayable, or replayed already"}})
async def replay_dead_letter(dead_letter_id: RowId, hub: HubDep, client: ClientDep) -> dict:
    require(client, "hub:admin")
    async with hub.engine.connect() as conn:
        dl = (await conn.execute(select(dead_letters).where(dead_letters.c.dead_letter_id == dead_letter_id))).first()
        msg = None
        if dl is not None:
            # By event id: a Kafka offset is per partition, the event id is global.
            msg = (await conn.execute(select(bus_messages).where(bus_messages.c.event_id == dl.event_id))).first()
        await conn.rollback()
    if dl is None or msg is None:
        raise ProblemError(404, "not-found", "Not found", "no dead letter with that id")
    if dl.replayed_at is not None:
        raise _already_replayed()
    handlers = _replay_handlers(hub, dl.handler)
    if not handlers:
        raise ProblemError(409, "not-replayable", "Not replayable",
                           f"handler: no handler in this hub replays '{dl.handler}' dead letters",
                           rule="not-replayable", errors=[{"field": "handler", "reason": "not replayable here"}])
    message = BusMessage(topic=msg.topic, key=msg.key, event_id=msg.event_id, payload=msg.payload,
                         headers=msg.headers, offset=int(msg.offset))
    try:
        async with hub.engine.begin() as conn:
            # Taken first, in the transaction that replays it: of two replays at once one runs the handler, the
            # other finds it taken (on PostgreSQL it waits for the first's row lock, then sees it replayed).
            taken = await conn.execute(dead_letters.update().where(dead_letters.c.dead_letter_id == dead_letter_id,
                                                                   dead_letters.c.replayed_at.is_(None))
                                       .values(replayed_at=datetime.now(UTC)))
            if taken.rowcount != 1:
                raise _AlreadyReplayed
            for handle in handlers:
                await handle(conn, message)
            await record_operator_action(conn, client.client_id, "replay-dead-letter", str(dead_letter_id),
                                         {"event_id": dl.event_id, "handler": dl.handler})
    except _AlreadyReplayed:
        raise _already_replayed() from None
    except Exception as exc:  # noqa: BLE001 - report, keep the dead letter
        raise ProblemError(422, "replay-failed", "Replay failed",
                           f"the handler failed again ({type(exc).__name__}); the dead letter is kept") from exc
    log.info("dead letter replayed", offset=dl.offset, event_id=dl.event_id, source=client.client_id,
             group=dl.group_id)
    return {"dead_letter_id": dead_letter_id, "replayed": True, "handler": dl.handler}


class _AlreadyReplayed(Exception):
    """Another replay took the dead letter first."""


def _already_replayed() -> ProblemError:
    return ProblemError(409, "already-replayed", "Already replayed", "this dead letter was replayed already")


def _replay_handlers(hub, handler: str) -> list:  # noqa: ANN001
    """Who runs a dead letter again: the consumer that dead-lettered it (the
    dispatcher, the workflows' consumer); a message the Kafka relay could not
    send never reached either, so both (each skips what it handled before)."""
    found = []
    if handler in ("dispatcher", "kafka-relay"):
        found.append(hub.dispatcher.handle)
    if handler in ("workflows", "kafka-relay") and hub.workflow_consumer is not None:
        found.append(hub.workflow_consumer.handle)
    return found


# The channels where a delivery an operator released is asked again when sent, and its disclosure
# recorded: those sent through hub/delivery/leases.py's claim, and a pull feed's page when it hands it
# out (hub/api/feeds.py); not a council file (its file records the people it lists: hub/exports.py).
_MARKED = ("webhook", "fhir", "kafka", "file", "feed")


def _released_by(client: Any) -> str:
    return (RELEASED + client.client_id)[:200]


def _message_kept() -> Any:
    """Whether a delivery's message is still there to send (the retention
    purge empties it: hub/retention.py)."""
    return exists().where(delivery_messages.c.delivery_seq == deliveries.c.delivery_seq,
                          func.length(delivery_messages.c.payload) > 0)


@router.get("/council-splits", summary="People awaiting the successor of a council split between several")
async def council_splits(hub: HubDep, client: ClientDep) -> dict:
    """Per council with no addressable successor (its GSS code: split between several successors, or
    succeeded by one without a GSS code yet), how many people await what resolves it (`awaiting`,
    `resolve_with`: a register change naming the successor covering their address, or the operator's newer
    register): no council is responsible for them meanwhile and the hospital's council coordinates (hazard
    H-03). Counted afresh at each request; the gauge
    `s117_council_split_awaiting_successor{council,awaiting}` is the back workers' (hub/refdata_retell.py
    `run_council_split_count`), not set here: with the workers apart, a count this process set would outlive
    the workers' newer ones (the gauge's processes combine by their maximum). Codes and counts only: nothing
    personal. The console's overview shows it."""
    require(client, "hub:admin")
    from hub.refdata_retell import AWAITING, awaiting_successor

    rules: dict[str, str] = {}
    counts = await awaiting_successor(hub.engine, hub.ref, hub.agreements, england_day(), rules=rules)
    return {"awaiting_successor": [{"council": code, "people": n, "awaiting": AWAITING[rules[code]][0],
                                    "resolve_with": AWAITING[rules[code]][1]} for code, n in counts.items()]}


@router.get("/deliveries/held", summary="Deliveries held because the recipient's agreement no longer allows them")
async def list_held(hub: HubDep, client: ClientDep) -> dict:
    """Messages queued while an agreement allowed them and held at sending
    because the agreement in force then did not (hub/delivery/leases.py): the
    subscription, the event, the kind (no agreement, event type, field groups).
    Once an agreement allows them, `POST /v1/ops/deliveries/{id}/retry` releases
    one (checked again when it is sent). Ids and codes only: nothing personal."""
    require(client, "hub:admin")
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(
            select(deliveries.c.delivery_id, deliveries.c.subscription_id, subscriptions.c.org_code,
                   subscriptions.c.channel, deliveries.c.event_id, deliveries.c.event_number,
                   deliveries.c.event_type, deliveries.c.last_error, deliveries.c.created_at)
            .join(subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id)
            .where(deliveries.c.status == "held").order_by(deliveries.c.delivery_seq.desc()).limit(500))).all()
        await conn.rollback()
    return {"deliveries": [{"delivery_id": r.delivery_id, "subscription_id": r.subscription_id,
                            "org_code": r.org_code, "channel": r.channel, "event_id": r.event_id,
                            "event_number": r.event_number, "event_type": r.event_type, "why": r.last_error,
                            "queued_at": r.created_at.isoformat()} for r in rows]}


@router.get("/deliveries/{delivery_id}", summary="One delivery's state (what became of a released or retried one)",
            responses={404: {"description": "No delivery with that id"}})
async def delivery_state(delivery_id: str, hub: HubDep, client: ClientDep) -> dict:
    """Where one delivery stands: `pending`, `delivered`, `held` (again: `why`
    says why), `dead`. The console follows a delivery it released with this.
    Ids, codes, counts and the error's kind only: nothing personal."""
    require(client, "hub:admin")
    async with hub.engine.connect() as conn:
        r = (await conn.execute(
            select(deliveries.c.delivery_id, deliveries.c.subscription_id, subscriptions.c.org_code,
                   subscriptions.c.channel, deliveries.c.event_id, deliveries.c.event_number,
                   deliveries.c.event_type, deliveries.c.status, deliveries.c.attempts, deliveries.c.last_error)
            .join(subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id)
            .where(deliveries.c.delivery_id == delivery_id))).first()
        await conn.rollback()
    if r is None:
        raise ProblemError(404, "not-found", "Not found", "no delivery with that id")
    return {"delivery_id": r.delivery_id, "subscription_id": r.subscription_id, "org_code": r.org_code,
            "channel": r.channel, "event_id": r.event_id, "event_number": r.event_number,
            "event_type": r.event_type, "status": r.status, "attempts": r.attempts, "why": r.last_error}


@router.post("/deliveries/{delivery_id}/retry", summary="Send a dead (or waiting) webhook delivery again now",
             responses={404: {"description": "No delivery with that id"},
                        409: {"description": "Delivered already, or its message purged"}})
async def retry_delivery(delivery_id: str, hub: HubDep, client: ClientDep) -> dict:
    require(client, "hub:admin")
    async with hub.engine.begin() as conn:
        # A pull feed's message keeps its count of fetches: reset, a message the subscriber was
        # handed would count as never served, and the cursor it holds would be refused (hub/api/feeds.py).
        channel = (select(subscriptions.c.channel).where(subscriptions.c.subscription_id == deliveries.c.subscription_id)
                   .scalar_subquery())
        result = await conn.execute(
            deliveries.update().where(deliveries.c.delivery_id == delivery_id, deliveries.c.status != "delivered",
                                      _message_kept())
            .values(status="pending", attempts=case((channel == "feed", deliveries.c.attempts), else_=0),
                    next_attempt_at=datetime.now(UTC),
                    # A push channel's send asks the agreement in force again and records the disclosure,
                    # naming this operator (hub/delivery/leases.py, "Released by an operator").
                    last_error=case((channel.in_(_MARKED), _released_by(client)), else_=deliveries.c.last_error)))
        if result.rowcount:
            await record_operator_action(conn, client.client_id, "retry-delivery", delivery_id)
    if result.rowcount == 0:
        raise await _not_retried(hub, delivery_id)
    log.info("delivery requeued", delivery_id=delivery_id, source=client.client_id)
    wake_deliverers(hub)
    return {"delivery_id": delivery_id, "status": "pending"}


async def _not_retried(hub: Any, delivery_id: str) -> ProblemError:
    """Why a retry changed nothing: no such delivery (404), or one in a state a retry cannot change (409,
    naming it): delivered already, or its message emptied by the retention purge."""
    async with hub.engine.connect() as conn:
        status = (await conn.execute(select(deliveries.c.status).where(deliveries.c.delivery_id == delivery_id))
                  ).scalar_one_or_none()
        await conn.rollback()
    if status is None:
        return ProblemError(404, "not-found", "Not found", "no delivery with that id")
    if status == "delivered":
        return ProblemError(409, "already-delivered", "Already delivered",
                            "status: this delivery was delivered already; to send it again, replay the subscription",
                            state=status, errors=[{"field": "status", "reason": "delivered already"}])
    return ProblemError(409, "message-purged", "Message purged",
                        "its message was emptied by the retention purge: there is nothing to send",
                        state=status, errors=[{"field": "message", "reason": "purged by retention"}])


def _utc(when: datetime) -> datetime:
    """`when` in UTC, as the store keeps its times (an offset honoured, not read as UTC
    wall-clock time); a time at the edge of the calendar that has no UTC equivalent
    (0001-01-01T00:00+14:00) is the calendar's first or last moment."""
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    try:
        return when.astimezone(UTC)
    except OverflowError:
        return (datetime.min if when.year == datetime.min.year else datetime.max).replace(tzinfo=UTC)


@router.post("/subscriptions/{subscription_id}/replay", summary="Deliver a subscription's messages again from a time",
             responses={404: {"description": "No subscription with that id"}})
async def replay_subscription(subscription_id: str, since: QueryInstant, hub: HubDep, client: ClientDep) -> dict:
    """Re-send what was delivered since `since` (e.g. after a subscriber lost data).
    Messages keep their event and message ids, so the subscriber can de-duplicate.
    A pull feed's messages are put back to be read again, still counted as
    handed out: the subscriber re-reads them by rewinding its cursor, and a
    cursor it already holds stays one the feed accepts (hub/api/feeds.py)."""
    require(client, "hub:admin")
    since = _utc(since)
    async with hub.engine.begin() as conn:
        channel = (await conn.execute(select(subscriptions.c.channel)
                                      .where(subscriptions.c.subscription_id == subscription_id))).scalar_one_or_none()
        if channel is None:
            raise ProblemError(404, "not-found", "Not found", "no subscription with that id")
        again: dict[str, Any] = {"status": "pending", "next_attempt_at": datetime.now(UTC)}
        if channel != "feed":
            again["attempts"] = 0
        if channel in _MARKED:  # each sent again is asked and recorded again (hub/delivery/leases.py)
            again["last_error"] = _released_by(client)
        # A delivery whose payload the retention job has emptied cannot be sent again: it is counted, not sent.
        result = await conn.execute(
            deliveries.update().where(deliveries.c.subscription_id == subscription_id,
                                      deliveries.c.created_at >= since, _message_kept())
            .values(**again))
        purged = (await conn.execute(select(func.count()).select_from(deliveries).where(
            deliveries.c.subscription_id == subscription_id, deliveries.c.created_at >= since,
            ~_message_kept()))).scalar_one()
        await record_operator_action(conn, client.client_id, "replay-subscription", subscription_id,
                                     {"since": since.isoformat(), "requeued": result.rowcount})
    log.info("subscription replay", subscription_id=subscription_id, count=result.rowcount, source=client.client_id)
    wake_deliverers(hub)
    return {"subscription_id": subscription_id, "requeued": result.rowcount, "purged_by_retention": purged}


@router.post("/subscriptions/{subscription_id}/resume",
             summary="Resume a suspended subscription (its endpoint answered 410 Gone)",
             responses={404: {"description": "No subscription with that id"},
                        409: {"description": "Not suspended (or stopped), named"}})
async def resume_subscription(subscription_id: str, hub: HubDep, client: ClientDep) -> dict:
    """Clear a subscription's suspension (hub/delivery/leases.py, "Suspension"), as its subscriber can
    (`POST /v1/subscriptions/{id}/resume`): the deliverers of every instance take its queue again, from
    the oldest pending message, in order, with a fresh retry budget. 409 (naming why) when it is not
    suspended. Audited; through hub/api/subscriptions.py `resume`, as the subscriber's."""
    require(client, "hub:admin")

    async def audit(conn: Any, was: Any) -> None:  # in the resume's transaction
        await record_operator_action(conn, client.client_id, "resume-subscription", subscription_id,
                                     {"suspended_reason": was.suspended_reason,
                                      "suspended_at": _utc(was.suspended_at).isoformat()})

    was, _ = await resume(hub, subscription_id, client.client_id, audit)
    return {"subscription_id": subscription_id, "state": "active", "was": was.suspended_reason}


@router.get("/service-level", summary="Register changes recorded late or nearly late (Worcs 19.6)")
async def service_level(hub: HubDep, client: ClientDep, days: Days = 90) -> dict:
    require(client, "hub:admin")
    since = england_day() - timedelta(days=days)
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(
            select(service_levels, register_changes.c.source, register_changes.c.change_type)
            .join(register_changes, register_changes.c.change_id == service_levels.c.change_id)
            .where(service_levels.c.state != "met", service_levels.c.recorded_on >= since)
            .order_by(service_levels.c.recorded_on.desc()))).all()
        totals = (await conn.execute(
            select(service_levels.c.state, func.count()).where(service_levels.c.recorded_on >= since)
            .group_by(service_levels.c.state))).all()
        await conn.rollback()
    return {
        "window_days": days,
        "totals": {state: n for state, n in totals},
        "items": [{"change_id": r.change_id, "source": r.source, "change_type": r.change_type,
                   "notified_on": r.notified_on.isoformat(), "recorded_on": r.recorded_on.isoformat(),
                   "deadline": r.deadline.isoformat(), "working_days_taken": r.working_days_taken,
                   "state": r.state} for r in rows],
    }
