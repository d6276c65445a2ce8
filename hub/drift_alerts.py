"""Drift alerts: one `s117-reconciliation-drift` event to a body when the open
differences between its own list and the register reach the threshold its
data-sharing agreement sets (hub/domain/drift.py decides; this module
stores the state and sends).

- `after_comparison` runs in the transaction that marks a snapshot compared
  (hub/reconciliation.py `Reconciler._finish`): the body's open items are
  counted per kind; if the threshold is reached and no alert was sent for
  this crossing, the alert is queued, and the body is "above" from then on.
  Below the threshold the body is re-armed.
- `after_items_closed` runs in the ItemWatcher's transaction after register
  changes fixed items: it only re-arms a body whose count fell back below.

Sending goes the way of every hub message: the body's agreement must grant
the event type (else one `denied` disclosure and nothing sent), each active
subscription of the body whose `event_types` allow it gets the message through
hub/delivery/queue.py (its own gap-free event number; the webhook, fhir
rest-hook, feed, Kafka and file deliverers send it, signed where signed), and
every decision is a row of `disclosures` (person_id empty: the message is
about the body), which the audit chain takes up. A council-file subscription
does not get it: its files are rows about people.

Idempotent: the event id is a UUIDv5 of the body and the snapshot id, the
message id one of the event id and the body, and the alert is queued in the
same transaction as the snapshot's completion and the alert state, so a
replay or a restart never sends it twice (queue_delivery refuses an event
already on a subscription's queue).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.crypto import DataProtector
from hub.delivery import queue
from hub.domain.drift import Step, step
from hub.domain.model import EventType, Org
from hub.domain.ports import ReferenceData
from hub.domain.reconciliation import LIVE, Kind
from hub.fhir.drift import DriftCounts, build_drift_message
from hub.fhir.namespaces import DEFAULT_NAMESPACES, Namespaces
from hub.ids import uuid5
from hub.observability.logging import get_logger
from hub.sharing import SharingAgreements
from hub.store.schema import drift_alerts, reconciliation_items, reconciliation_snapshots
from hub.domain.dates import england_day

log = get_logger("hub.drift_alerts")
EVENT = EventType.RECONCILIATION_DRIFT
# Channels that carry hub messages one by one; "council-file" carries rows about people.
CHANNELS = frozenset({"webhook", "feed", "kafka", "file", "fhir"})
EVENT_NAMESPACE = uuid.UUID("9b7e2c41-6d3a-4f85-a1c0-117d21f70001")
MESSAGE_NAMESPACE = uuid.UUID("9b7e2c41-6d3a-4f85-a1c0-117d21f70002")


def event_id_for(body_org: str, snapshot_id: str) -> str:
    """Stable: the same body and snapshot always give the same event."""
    return uuid5(EVENT_NAMESPACE, f"{body_org}/{snapshot_id}")


def message_id_for(event_id: str, body_org: str) -> str:
    return uuid5(MESSAGE_NAMESPACE, f"{event_id}/{body_org}")


async def open_by_kind(conn: AsyncConnection, body_org: str) -> dict[str, int]:
    """The body's live (open or explained) items per kind, every kind present."""
    rows = (await conn.execute(
        select(reconciliation_items.c.kind, func.count()).where(
            reconciliation_items.c.body_org == body_org,
            reconciliation_items.c.state.in_([s.value for s in LIVE]))
        .group_by(reconciliation_items.c.kind))).all()
    counts = {k.value: 0 for k in Kind}
    counts.update({kind: int(n) for kind, n in rows})
    return counts


class DriftAlerts:
    def __init__(self, sharing: SharingAgreements, protector: DataProtector, ref: ReferenceData,
                 hub_endpoint: str, ns: Namespaces = DEFAULT_NAMESPACES,
                 today: Callable[[], date] = england_day) -> None:
        self._sharing = sharing
        self._protector = protector
        self._ref = ref
        self._hub_endpoint = hub_endpoint
        self._ns = ns
        self._today = today

    async def after_comparison(self, conn: AsyncConnection, snap: Any, named: int = 0) -> Step:
        """Inside the transaction that marks `snap` (a reconciliation_snapshots row) done.
        `named`: the people its rows rejected for another field than the NHS
        number named (on the body's list, not compared: hub/reconciliation.py)."""
        body = snap.body_org
        today = self._today()
        threshold = self._sharing.drift_threshold(body, today)
        by_kind = await open_by_kind(conn, body)
        total = sum(by_kind.values())
        listed = _listed(snap.rows_read, snap.rows_rejected, named)
        state = await _state(conn, body)
        decided = step(threshold, total, listed, bool(state and state.above), snapshot_completed=True)
        if decided is Step.ALERT:
            assert threshold is not None
            event_id = event_id_for(body, snap.snapshot_id)
            counts = DriftCounts(body=self._org(body, snap.body_kind, today), snapshot_id=snap.snapshot_id,
                                 as_of=snap.as_of, compared_on=today, listed=listed, open_by_kind=by_kind,
                                 threshold=threshold)
            await self._send(conn, event_id, counts, today)
            await _save(conn, state, body, above=True, open_total=total, snapshot_id=snap.snapshot_id,
                        event_id=event_id, alerted=True)
        elif decided is Step.REARM or state is not None or threshold is not None:
            await _save(conn, state, body, above=decided is Step.HOLD, open_total=total)
        return decided

    async def after_items_closed(self, conn: AsyncConnection, bodies: Iterable[str]) -> None:
        """Inside the ItemWatcher's transaction: a body back below its threshold is re-armed."""
        today = self._today()
        for body in sorted(set(bodies)):
            state = await _state(conn, body)
            if state is None or not state.above:
                continue
            last = (await conn.execute(
                select(reconciliation_snapshots.c.rows_read, reconciliation_snapshots.c.rows_rejected,
                       reconciliation_snapshots.c.summary)
                .where(reconciliation_snapshots.c.body_org == body, reconciliation_snapshots.c.state == "done")
                .order_by(reconciliation_snapshots.c.finished_at.desc()).limit(1))).first()
            listed = _listed(last.rows_read, last.rows_rejected, (last.summary or {}).get("row_rejected", 0)) \
                if last else 0
            total = sum((await open_by_kind(conn, body)).values())
            threshold = self._sharing.drift_threshold(body, today)
            if step(threshold, total, listed, True, snapshot_completed=False) is Step.REARM:
                await _save(conn, state, body, above=False, open_total=total)
                log.info("drift back below the threshold", org_code=body, count=total)

    async def _send(self, conn: AsyncConnection, event_id: str, counts: DriftCounts, today: date) -> None:
        """Through hub/delivery/queue.py `share`: the agreement's decision, each
        subscription queued, each decision a disclosure (no person id)."""
        body = counts.body.code
        message_id = message_id_for(event_id, body)

        def payload() -> bytes:
            bundle = build_drift_message(counts=counts, message_id=message_id, sent_at=datetime.now(UTC),
                                         source_endpoint=self._hub_endpoint, ns=self._ns)
            return self._protector.encrypt(orjson.dumps(bundle))

        queued = await queue.share(
            conn, org=body, decision=self._sharing.decide(body, EVENT.value, today), event_id=event_id,
            event_type=EVENT.value, message_id=message_id, payload=payload, correlation_id=counts.snapshot_id,
            channels=CHANNELS)
        if queued is None:
            log.info("drift alert not sent", org_code=body, snapshot_id=counts.snapshot_id)
            return
        log.info("drift alert queued", org_code=body, snapshot_id=counts.snapshot_id, event_id=event_id,
                 count=queued, decision="allowed")

    def _org(self, code: str, kind: str, today: date) -> Org:
        """The body as the message names it: its code, its name from the reference data where known."""
        found = (self._ref.council(code, today) if kind == "council" else
                 self._ref.commissioner_successor(code, today) or self._ref.hospital(code))
        return Org(code=code, name=found.name if found is not None else code, kind=kind)


def _listed(rows_read: int | None, rows_rejected: int | None, named: int | None) -> int:
    """The people on a snapshot's list: its rows read less those rejected, and
    the people named by rows rejected for another field than the NHS number
    (the body listed them; they are not compared: hub/reconciliation.py), as
    the oversight report counts them."""
    return max(int(rows_read or 0) - int(rows_rejected or 0), 0) + int(named or 0)


async def _state(conn: AsyncConnection, body: str) -> Any:
    return (await conn.execute(select(drift_alerts).where(drift_alerts.c.body_org == body))).first()


async def _save(conn: AsyncConnection, state: Any, body: str, *, above: bool, open_total: int,
                snapshot_id: str | None = None, event_id: str | None = None, alerted: bool = False) -> None:
    now = datetime.now(UTC)
    values: dict[str, Any] = {"above": above, "open_total": open_total, "updated_at": now}
    if alerted:
        values.update(snapshot_id=snapshot_id, event_id=event_id, alerted_at=now)
    if state is None:
        await conn.execute(drift_alerts.insert().values(body_org=body, **values))
    else:
        await conn.execute(drift_alerts.update().where(drift_alerts.c.body_org == body).values(**values))


async def alert_overview(engine: AsyncEngine, sharing: SharingAgreements, on: date) -> list[dict[str, Any]]:
    """Per body that has a threshold or an alert state: the threshold in force, whether it is above it
    (alerted for the crossing in force), its open differences and the last alert (the console)."""
    async with engine.connect() as conn:
        states = {r.body_org: r for r in (await conn.execute(select(drift_alerts))).all()}
        bodies = set(states) | set((await conn.execute(
            select(reconciliation_snapshots.c.body_org).distinct())).scalars().all())
        await conn.rollback()
    out = []
    for body in sorted(bodies):
        threshold = sharing.drift_threshold(body, on)
        state = states.get(body)
        if threshold is None and state is None:
            continue
        out.append({"body": body, "threshold": threshold.as_dict() if threshold is not None else None,
                    "above": bool(state and state.above), "open": state.open_total if state else None,
                    "last_alert_snapshot_id": state.snapshot_id if state else None,
                    "last_alert_event_id": state.event_id if state else None,
                    "last_alert_at": state.alerted_at.isoformat() if state and state.alerted_at else None})
    return out
