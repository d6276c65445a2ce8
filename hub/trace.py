"""Trace: one timeline for a message, end to end, from what the store already
records. Received on which channel, validated or quarantined (with the
reasons), the change recorded (with its service level), the events the rules
derived (with the rule and citation), every recipient considered with the
sharing decision (allowed with field groups, denied and why, no
subscription), each delivery with its status, attempts and timing.

Look-ups: correlation id; source + source message id; event id; message id;
hub person id (the NHS number only through a POST body, resolved to the
person id by its keyed hash). A change retracted as recorded in error shows
its retraction (who, when, the request's correlation id) and the correction
the retraction published, with every recipient considered and what was sent;
the retraction's own correlation id finds it, and its event id. A retraction made in error and
reversed (hub/unretractions.py) shows so too: the change's retractions (those
reversed since, kept in `change_retraction_reversals`, and the one standing)
and their reversals (`reinstated`: who, when, the correlation id, the
retraction reversed), in the order they were made, each followed by the
correction it published; the reversal's correlation id and event id, and
those of a retraction since reversed, find the change. Nothing personal is returned:
ids, codes, reasons that never quote values (a retraction's or a reversal's
reason is not shown), and times.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.delivery.dispatcher import view_event_id_for
from hub.store.schema import (
    bus_messages,
    change_retraction_reversals,
    change_retractions,
    deliveries,
    disclosures,
    ingest_results,
    quarantine,
    register_changes,
    service_levels,
    subscriptions,
)

MAX_CHANGES = 200


@dataclass(frozen=True, slots=True)
class TraceQuery:
    correlation_id: str | None = None
    source: str | None = None
    source_message_id: str | None = None
    event_id: str | None = None
    message_id: str | None = None
    person_id: str | None = None


def _iso(v: datetime | None) -> str | None:
    return v.isoformat() if v else None


def _change_of(payload: dict[str, Any]) -> str | None:
    change = payload.get("change") if isinstance(payload, dict) else None
    if isinstance(change, dict):
        return change.get("change_id")
    event = payload.get("event") if isinstance(payload, dict) else None
    return event.get("change_id") if isinstance(event, dict) else None


async def trace(engine: AsyncEngine, q: TraceQuery) -> dict[str, Any]:
    async with engine.connect() as conn:
        out = await _trace(conn, q)
        await conn.rollback()
    return out


async def _trace(conn: AsyncConnection, q: TraceQuery) -> dict[str, Any]:
    change_ids: set[str] = set()
    held: list[Any] = []
    # 1. Resolve the query to register changes (and quarantined inputs).
    if q.message_id:
        row = (await conn.execute(select(deliveries.c.event_id).where(deliveries.c.message_id == q.message_id))).first()
        if row is not None:
            q = TraceQuery(event_id=row.event_id)
    if q.event_id:
        # A retraction's or a reversal's correction carries another change of the history (or none): the
        # change it corrected is the one its row names.
        rr = change_retraction_reversals.c
        cid = ((await conn.execute(select(change_retractions.c.change_id)
                                   .where(change_retractions.c.event_id == q.event_id))).scalar()
               or (await conn.execute(select(rr.change_id).where(or_(
                   rr.event_id == q.event_id, rr.retraction_event_id == q.event_id)).limit(1))).scalar())
        if cid is None:
            msg = (await conn.execute(select(bus_messages.c.payload)
                                      .where(bus_messages.c.event_id == q.event_id))).first()
            cid = _change_of(msg.payload) if msg is not None else None
        if cid:
            change_ids.add(cid)
    if q.correlation_id:
        change_ids |= set((await conn.execute(select(register_changes.c.change_id).where(
            register_changes.c.correlation_id == q.correlation_id))).scalars().all())
        change_ids |= set((await conn.execute(select(change_retractions.c.change_id).where(
            change_retractions.c.correlation_id == q.correlation_id))).scalars().all())
        # A reversal of a retraction, and a retraction since reversed (kept whole in the reversal's row).
        rr = change_retraction_reversals.c
        change_ids |= set((await conn.execute(select(rr.change_id).where(or_(
            rr.correlation_id == q.correlation_id,
            rr.retraction["correlation_id"].as_string() == q.correlation_id)))).scalars().all())
        held += (await conn.execute(select(quarantine).where(quarantine.c.correlation_id == q.correlation_id))).all()
    if q.source_message_id:
        # With the source, exact; alone (an engineer with only the trust's MSH-10), every source's.
        by_source = [register_changes.c.source == q.source] if q.source else []
        change_ids |= set((await conn.execute(select(register_changes.c.change_id).where(
            register_changes.c.source_message_id == q.source_message_id, *by_source))).scalars().all())
        held += (await conn.execute(select(quarantine).where(
            quarantine.c.source_message_id == q.source_message_id,
            *([quarantine.c.source == q.source] if q.source else [])))).all()
    if q.person_id:
        change_ids |= set((await conn.execute(
            select(register_changes.c.change_id).where(register_changes.c.person_id == q.person_id)
            .order_by(register_changes.c.received_at.desc()).limit(MAX_CHANGES))).scalars().all())

    timeline: list[dict[str, Any]] = []
    for h in sorted(held, key=lambda h: h.received_at):
        timeline.append({"at": _iso(h.received_at), "stage": "quarantined", "channel": h.channel,
                         "source": h.source, "source_message_id": h.source_message_id,
                         "quarantine_id": h.quarantine_id, "status": h.status, "errors": h.errors,
                         "correlation_id": h.correlation_id, "resolved_by": h.resolved_by})
    changes = (await conn.execute(
        select(register_changes.c.change_id, register_changes.c.person_id, register_changes.c.source,
               register_changes.c.source_message_id, register_changes.c.change_type,
               register_changes.c.effective_date, register_changes.c.correlation_id, register_changes.c.received_at,
               register_changes.c.channel, service_levels.c.state, service_levels.c.deadline,
               ingest_results.c.status_code, ingest_results.c.created_at.label("answered_at"))
        .join(service_levels, service_levels.c.change_id == register_changes.c.change_id, isouter=True)
        .join(ingest_results, (ingest_results.c.source == register_changes.c.source)
              & (ingest_results.c.source_message_id == register_changes.c.source_message_id), isouter=True)
        .where(register_changes.c.change_id.in_(change_ids))
        .order_by(register_changes.c.received_at))).all() if change_ids else []
    persons = {c.person_id for c in changes}
    # Their retractions (hub/retraction.py) and the reversals of those made in error (hub/unretractions.py):
    # each published one correction, whose message carries another change of the history (or none): it
    # belongs to the retracted (or reinstated) change's timeline.
    corrections = await _corrections(conn, change_ids) if change_ids else {}
    correction_of = {s["event_id"]: cid for cid, stages in corrections.items() for s in stages}
    # The events derived from those changes (the log is keyed by person), in log order.
    events_of: dict[str, list[Any]] = {}
    n_events = 0
    if persons:
        for m in (await conn.execute(select(bus_messages.c.event_id, bus_messages.c.offset, bus_messages.c.payload,
                                            bus_messages.c.created_at, bus_messages.c.relayed_at)
                                     .where(bus_messages.c.key.in_(persons)).order_by(bus_messages.c.offset))).all():
            cid = correction_of.get(m.event_id) or _change_of(m.payload)
            if cid in change_ids and (not q.event_id or m.event_id == q.event_id or not q.correlation_id):
                events_of.setdefault(cid, []).append(m)
                n_events += 1
    ids = [m.event_id for ms in events_of.values() for m in ms]
    decisions: dict[str, list[Any]] = {}
    sent: dict[str, list[Any]] = {}
    if ids:
        # An event tells a body its position in a message of the body's own (a correction, late history,
        # a retraction: `view_event_id_for(event, body)`): shown under the event that set it off.
        rows = (await conn.execute(select(disclosures).where(or_(
            disclosures.c.event_id.in_(ids), disclosures.c.person_id.in_(persons)))
            .order_by(disclosures.c.disclosure_id))).all()
        trigger = {e: e for e in ids} | {view_event_id_for(e, org): e for e in ids
                                         for org in {d.recipient_org for d in rows}}
        for d in rows:
            if d.event_id in trigger:
                decisions.setdefault(trigger[d.event_id], []).append(d)
        for d in (await conn.execute(
                select(deliveries.c.delivery_id, deliveries.c.event_id, deliveries.c.message_id,
                       deliveries.c.status, deliveries.c.attempts, deliveries.c.last_error, deliveries.c.created_at,
                       deliveries.c.delivered_at, deliveries.c.next_attempt_at, subscriptions.c.org_code,
                       subscriptions.c.channel)
                .join(subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id)
                .where(deliveries.c.event_id.in_(sorted(trigger))).order_by(deliveries.c.delivery_seq))).all():
            sent.setdefault(trigger[d.event_id], []).append(d)
    # One timeline in the order things happen to a message: received and answered, then each event
    # with every recipient considered and what was sent to each.
    for c in changes:
        timeline.append({"at": _iso(c.received_at), "stage": "recorded", "change_id": c.change_id,
                         "person_id": c.person_id, "source": c.source, "source_message_id": c.source_message_id,
                         "change_type": c.change_type, "effective_date": c.effective_date.isoformat(),
                         "correlation_id": c.correlation_id, "channel": c.channel,
                         "service_level": {"state": c.state, "deadline": c.deadline.isoformat() if c.deadline else None}})
        if c.status_code is not None:
            ack = ({202: "AA"}.get(c.status_code, "AE") if c.channel == "mllp" else None)
            timeline.append({"at": _iso(c.answered_at), "stage": "answered", "change_id": c.change_id,
                             "status_code": c.status_code, "ack": ack, "channel": c.channel})
        # Each retraction or reversal of the change just before the correction it published (in log order:
        # the order they were made); one whose event is not shown, in its time's place.
        pending = list(corrections.get(c.change_id, []))
        for m in events_of.get(c.change_id, []):
            if any(s["event_id"] == m.event_id for s in pending):
                while pending:
                    stage = pending.pop(0)
                    timeline.append(stage)
                    if stage["event_id"] == m.event_id:
                        break
            ev = (m.payload or {}).get("event") or {}
            details = ev.get("details") or {}
            timeline.append({"at": _iso(m.created_at), "stage": "event-derived", "event_id": m.event_id,
                             "offset": m.offset, "event_type": ev.get("event_type"), "change_id": c.change_id,
                             "rule": details.get("rule"), "citation": details.get("citation") or
                             details.get("council_citation") or details.get("commissioner_citation"),
                             "summary": ev.get("summary"), "relayed_at": _iso(m.relayed_at)})
            for d in decisions.get(m.event_id, []):
                timeline.append({"at": _iso(d.at), "stage": "recipient-considered", "event_id": d.event_id,
                                 "recipient": d.recipient_org, "decision": d.decision, "agreement": d.agreement_id,
                                 "field_groups": d.field_groups, "reason": d.reason, "channel": d.channel})
            for d in sent.get(m.event_id, []):
                timeline.append({"at": _iso(d.created_at), "stage": "delivery-queued", "event_id": d.event_id,
                                 "message_id": d.message_id, "delivery_id": d.delivery_id, "recipient": d.org_code,
                                 "channel": d.channel, "status": d.status, "attempts": d.attempts,
                                 "last_error": d.last_error})
                if d.delivered_at is not None:
                    timeline.append({"at": _iso(d.delivered_at), "stage": "delivered", "event_id": d.event_id,
                                     "message_id": d.message_id, "recipient": d.org_code, "channel": d.channel,
                                     "attempts": d.attempts,
                                     "latency_ms": round((d.delivered_at - d.created_at).total_seconds() * 1000)})
                elif d.status == "pending" and d.attempts:
                    timeline.append({"at": _iso(d.next_attempt_at), "stage": "retry-scheduled",
                                     "event_id": d.event_id, "recipient": d.org_code, "attempts": d.attempts,
                                     "last_error": d.last_error})
        timeline += pending
    return {"query": {k: v for k, v in asdict(q).items() if v},
            "changes": len(changes), "events": n_events, "timeline": timeline}


async def _corrections(conn: AsyncConnection, change_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Each change's retractions (`retracted`: the standing one and those reversed since, as their reversals
    keep them) and reversals (`reinstated`), in the order they were made: who, when, the request's correlation
    id and the event that told it; never a reason."""
    out: dict[str, list[tuple[datetime, dict[str, Any]]]] = {}
    x = change_retractions.c
    for r in (await conn.execute(select(x.change_id, x.org_code, x.client_id, x.correlation_id, x.event_id, x.at)
                                 .where(x.change_id.in_(change_ids)))).all():
        out.setdefault(r.change_id, []).append((_aware(r.at), {
            "at": _iso(r.at), "stage": "retracted", "change_id": r.change_id, "retracted_by": r.org_code,
            "source": r.client_id, "correlation_id": r.correlation_id, "event_id": r.event_id}))
    rr = change_retraction_reversals.c
    for r in (await conn.execute(select(rr.change_id, rr.retraction, rr.retraction_event_id, rr.org_code,
                                        rr.client_id, rr.correlation_id, rr.event_id, rr.at)
                                 .where(rr.change_id.in_(change_ids)))).all():
        kept = r.retraction or {}  # the retraction reversed, as it was (ids and times: its reason is not here)
        at = datetime.fromisoformat(kept["at"]) if kept.get("at") else r.at
        if at.tzinfo is not None and r.at.tzinfo is None:  # SQLite's columns: UTC without an offset, as the rest
            at = at.astimezone(UTC).replace(tzinfo=None)
        out.setdefault(r.change_id, []).append((_aware(at), {
            "at": _iso(at), "stage": "retracted", "change_id": r.change_id, "retracted_by": kept.get("org_code"),
            "source": kept.get("client_id"), "correlation_id": kept.get("correlation_id"),
            "event_id": r.retraction_event_id}))
        out[r.change_id].append((_aware(r.at), {
            "at": _iso(r.at), "stage": "reinstated", "change_id": r.change_id, "reinstated_by": r.org_code,
            "source": r.client_id, "correlation_id": r.correlation_id, "event_id": r.event_id,
            "retraction_event_id": r.retraction_event_id}))
    # A retraction before its reversal at the same instant (a clock's resolution): the reversal names it.
    return {cid: [s for _at, s in sorted(stages, key=lambda t: (t[0], t[1]["stage"] == "reinstated"))]
            for cid, stages in out.items()}


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def withheld(engine: AsyncEngine, since: datetime) -> list[dict[str, Any]]:
    """Events the rules addressed to a body that no agreement or subscription
    let through, grouped by body, decision and reason: the gaps to fix."""
    from sqlalchemy import func

    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(disclosures.c.recipient_org, disclosures.c.decision, disclosures.c.reason,
                   disclosures.c.event_type, func.count(), func.max(disclosures.c.at))
            .where(disclosures.c.decision != "allowed", disclosures.c.at >= since)
            .group_by(disclosures.c.recipient_org, disclosures.c.decision, disclosures.c.reason,
                      disclosures.c.event_type)
            .order_by(func.count().desc()))).all()
        await conn.rollback()
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for org, decision, reason, event_type, n, last in rows:
        g = groups.setdefault((org, decision, reason), {"recipient": org, "decision": decision, "reason": reason,
                                                        "count": 0, "event_types": {}, "last_at": None})
        g["count"] += n
        g["event_types"][event_type] = n
        g["last_at"] = max(filter(None, [g["last_at"], _iso(last)]), default=None)
    return sorted(groups.values(), key=lambda g: (-g["count"], g["recipient"]))

