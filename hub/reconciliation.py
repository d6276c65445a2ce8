"""Reconciliation service: store a body's snapshot, compare it with the
register in the background, keep the differences as items across snapshots,
and close items when later register changes fix them.

- `receive` streams the snapshot into `reconciliation_rows` in batches (the
  NHS number as the keyed hash the rows are matched by, and encrypted beside it
  in `person_number`, since migration 0041, so that a data key rotation can
  recompute the hash, hub/store/rekey.py; the local id encrypted), in bounded memory.
  A bad row is reported by row and field and its raw text quarantined; rows are
  independent. A row rejected for a field other than the NHS number is kept as
  a marker (`REJECTED`, its errors): the person is reported "row rejected", not
  compared, never "missing from the body's list". A snapshot never changes the
  register.
- `Reconciler.run_once` compares snapshots waiting in state `comparing`: a
  merge join of the body's rows and the hub's persons, both read in keyed-hash
  order as streams, each person evaluated from their whole history. Progress
  (`persons_compared` of `persons_total`: the rows of the body's own list
  compared so far, of the rows it sent, never a count of the register;
  differences so far) is written as it goes; a hub restarted mid-way starts
  the comparison again. Each difference keeps the number encrypted beside its
  hash too (from the body's row, else the hub person's details). A hash a
  rotation could not recompute (kept before 0041 for someone not on the
  register) may be replaced by a tombstone (`unkeyed:...`, hub/store/rekey.py):
  no keyed hash, so it matches no person and no later row; only the rows and
  differences it was already on, which keep it.
- `ItemWatcher` consumes the event log (consumer group "reconciliation"):
  after each change to a person, their live items are compared afresh against
  each body's last snapshot row, and those no longer true close as fixed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import orjson

from adapters.snapshots import ParsedRow, RowProblem, SnapshotFileError, reader_for, rejected
from hub.ids import uuid4
from hub.store import merged
from hub.store.db import InList, Prepared, execute_prepared, snapshot, write_transaction
from hub.bus.port import EVENTS_TOPIC, Subscriber
from hub.codec import DUPLICATE_KEY, duplicate_keys, from_jsonable, json_path
from hub.crypto import DataProtector
from hub.domain.agreements import AgreementBook
from hub.drift_alerts import DriftAlerts
from hub.domain.model import RegisterChange
from hub.domain.ports import ReferenceData
from hub.domain.reconciliation import (
    LIVE,
    ROW_REJECTED,
    Belief,
    Difference,
    Item,
    ItemState,
    Kind,
    Position,
    RejectedRow,
    compare,
    position_for,
    standing,
    track,
)
from hub.domain.rules import evaluate
from hub.observability.logging import get_logger
from hub.store.schema import (
    person_merges,
    persons,
    quarantine,
    reconciliation_items,
    reconciliation_rows,
    reconciliation_snapshots,
    not_retracted,
    register_changes,
)
from hub.domain.dates import england_day

log = get_logger("hub.reconciliation")
GROUP = "reconciliation"
CHANNEL = "snapshot"
BATCH = 1000
MAX_REPORTED_PROBLEMS = 1000
# A rejected row's marker in reconciliation_rows.belief: {REJECTED: [its errors]} (field and reason, never a
# value); never a key of a belief (SnapshotRow forbids extra fields).
REJECTED = "rejected_row"
REJECTED_ACTION = ("correct the row on the body's list and send the list again: the person was not compared "
                   "(what was last found about them stands)")


@dataclass(frozen=True, slots=True)
class Body:
    client_id: str
    org_code: str
    org_kind: str


def belief_from_row(person_key: str, local_id: str | None, data: dict[str, Any]) -> Belief:
    def d(name: str) -> date | None:
        v = data.get(name)
        return date.fromisoformat(v) if v else None

    return Belief(
        person_key=person_key, local_id=local_id, entitled=bool(data.get("entitled")),
        responsible_council=data.get("responsible_council"), responsible_icb=data.get("responsible_icb"),
        entitlement_start=d("entitlement_start"), entitlement_end=d("entitlement_end"),
        next_review_due=d("next_review_due"), funding=data.get("funding"),
    )


def difference_json(d: Difference) -> dict[str, Any]:
    return {
        "kind": d.kind.value, "field": d.field, "body_says": d.body_says, "hub_says": d.hub_says,
        "who_must_act": d.who_must_act, "action": d.action, "explanation": d.explanation,
        "citation": d.citation, "person_id": d.person_id,
    }


def difference_from_json(person_key: str, data: dict[str, Any], local_id: str | None = None) -> Difference:
    return Difference(
        person_key=person_key, kind=Kind(data["kind"]), field=data["field"], body_says=data.get("body_says"),
        hub_says=data.get("hub_says"), who_must_act=data["who_must_act"], action=data["action"],
        explanation=data["explanation"], citation=data["citation"], person_id=data.get("person_id"),
        local_id=local_id,
    )


def _stopped(exc: BaseException) -> str:
    """Why a snapshot stopped arriving, for its `(body)` problem (never the error's text)."""
    status = getattr(exc, "status", None)
    if status == 408:
        return "ended before the whole snapshot arrived: send it again"
    if status == 413:
        return "over the size limit: nothing of it is compared"
    return "the hub failed while receiving it: send it again"


class ReconciliationService:
    def __init__(self, engine: AsyncEngine, protector: DataProtector, alerts: DriftAlerts | None = None) -> None:
        self._engine = engine
        self._protector = protector
        self.alerts = alerts  # drift alerts (hub/drift_alerts.py), shared with the Reconciler and ItemWatcher
        self.wake = asyncio.Event()

    async def receive(
        self, body: Body, fmt: str, chunks: AsyncIterator[bytes], as_of: date,
    ) -> dict[str, Any]:
        """Store one snapshot as it streams in; returns its record. Rows go in
        batches, so memory stays bounded whatever the size."""
        snapshot_id = uuid4()
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            await conn.execute(reconciliation_snapshots.insert().values(
                snapshot_id=snapshot_id, source=body.client_id, body_org=body.org_code, body_kind=body.org_kind,
                as_of=as_of, format=fmt, state="receiving", rows_read=0, rows_rejected=0, persons_compared=0,
                differences=0, problems=[], received_at=now,
            ))
            # A number superseded by a merge is the retained number's person (hub/store/merged.py): keyed so.
            alias = await merged.aliases(conn)
            retained = await _retained_numbers(conn, set(alias.values())) if alias else {}
        rows: list[dict[str, Any]] = []
        held: list[dict[str, Any]] = []
        problems: list[dict[str, str]] = []
        seen_keys: set[str] = set()
        read = rejected = 0
        try:
            async for parsed in reader_for(fmt)(chunks):
                if fmt == "ndjson":
                    parsed = _keys_named_twice(parsed)
                read += 1
                row, reasons = self._row(snapshot_id, parsed, seen_keys, alias, retained)
                if row is not None:
                    rows.append(row)  # a belief, or a rejected row's marker
                if reasons:
                    rejected += 1
                    if len(problems) < MAX_REPORTED_PROBLEMS:
                        problems.extend(reasons)
                    held.append(self._held(body, parsed, reasons, now))
                if len(rows) + len(held) >= BATCH:
                    await self._flush(snapshot_id, rows, held, read, rejected)
                    rows, held = [], []
        except SnapshotFileError as exc:
            await self._fail(snapshot_id, [{"field": exc.field, "reason": exc.reason}])
            return await self.snapshot(snapshot_id)
        except BaseException as exc:
            # The body cut off (the sender gone), over the limit part way, or a failure inside the hub:
            # the snapshot is failed, never left `receiving` for ever, and the error goes on to be answered.
            await asyncio.shield(self._fail(snapshot_id, [{"field": "(body)", "reason": _stopped(exc)}]))
            raise
        await self._flush(snapshot_id, rows, held, read, rejected)
        async with self._engine.begin() as conn:
            await conn.execute(reconciliation_snapshots.update()
                               .where(reconciliation_snapshots.c.snapshot_id == snapshot_id)
                               .values(state="comparing", problems=problems))
        self.wake.set()
        log.info("snapshot received", source=body.client_id, snapshot_id=snapshot_id, count=read,
                 rejected=rejected)
        return await self.snapshot(snapshot_id)

    def _row(self, snapshot_id: str, parsed: ParsedRow, seen: set[str], alias: dict[str, str] | None = None,
             retained: dict[str, bytes] | None = None) -> tuple[dict[str, Any] | None, list[dict]]:
        """The row to keep (None: none) and the row's problems (none: accepted). `alias`: each superseded
        number's index -> the retained one's (a row under a superseded number is the retained person's);
        `retained`: the retained number's index -> that number encrypted (the row's `person_number`: the
        number whose hash `person_key` is)."""
        alias = alias or {}
        if parsed.value is None:
            reasons = [p.as_dict() for p in parsed.problems]
            if parsed.nhs_number is None:
                return None, reasons  # whose row it was cannot be told
            key, number = self._keyed(parsed.nhs_number, alias, retained)
            if key in seen:
                return None, reasons  # the person's earlier row stands
            seen.add(key)  # the body listed the person: their first row decides, a later one is a duplicate
            return {
                "snapshot_id": snapshot_id, "row_no": parsed.row, "person_key": key, "person_number": number,
                "local_id": self._protector.encrypt(parsed.local_id.encode()) if parsed.local_id else None,
                "belief": {REJECTED: reasons},
            }, reasons
        v = parsed.value
        key, number = self._keyed(v.nhs_number, alias, retained)
        if key in seen:
            return None, [{"field": f"row {parsed.row}, field nhs_number",
                           "reason": "the same person appears earlier in this snapshot"}]
        seen.add(key)
        belief = v.model_dump(mode="json", exclude={"nhs_number", "local_id"}, exclude_none=True)
        return {
            "snapshot_id": snapshot_id, "row_no": parsed.row, "person_key": key, "person_number": number,
            "local_id": self._protector.encrypt(v.local_id.encode()) if v.local_id else None,
            "belief": belief,
        }, []

    def _keyed(self, nhs_number: str, alias: dict[str, str],
               retained: dict[str, bytes] | None) -> tuple[str, bytes | None]:
        """A row's person_key and person_number: the number's hash and the number encrypted, or, for a
        number a merge superseded, the retained number's hash and that number as the merge keeps it."""
        key = self._protector.index(nhs_number)
        if key not in alias:
            return key, self._protector.encrypt(nhs_number.encode())
        key = alias[key]
        return key, (retained or {}).get(key)

    def _held(self, body: Body, parsed: ParsedRow, reasons: list[dict], now: datetime) -> dict[str, Any]:
        return {
            "quarantine_id": uuid4(), "source": body.client_id, "channel": CHANNEL,
            "source_message_id": None, "errors": reasons, "raw": self._protector.encrypt(parsed.raw),
            "received_at": now, "status": "held",
        }

    async def _flush(self, snapshot_id: str, rows: list[dict], held: list[dict], read: int, rejected: int) -> None:
        async with self._engine.begin() as conn:
            if rows:
                await conn.execute(reconciliation_rows.insert(), rows)
            if held:
                await conn.execute(quarantine.insert(), held)
            await conn.execute(reconciliation_snapshots.update()
                               .where(reconciliation_snapshots.c.snapshot_id == snapshot_id)
                               .values(rows_read=read, rows_rejected=rejected))

    async def _fail(self, snapshot_id: str, problems: list[dict[str, str]]) -> None:
        # A snapshot that cannot be read whole is not compared: a list cut short
        # would report everyone after the cut as missing.
        async with self._engine.begin() as conn:
            await conn.execute(delete(reconciliation_rows).where(reconciliation_rows.c.snapshot_id == snapshot_id))
            await conn.execute(reconciliation_snapshots.update()
                               .where(reconciliation_snapshots.c.snapshot_id == snapshot_id)
                               .values(state="failed", problems=problems, finished_at=datetime.now(UTC)))

    async def snapshot(self, snapshot_id: str) -> dict[str, Any]:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(reconciliation_snapshots)
                                      .where(reconciliation_snapshots.c.snapshot_id == snapshot_id))).one()
            await conn.rollback()
        return _snapshot_json(row)

    async def snapshot_row(self, snapshot_id: str) -> Any:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(reconciliation_snapshots)
                                      .where(reconciliation_snapshots.c.snapshot_id == snapshot_id))).first()
            await conn.rollback()
        return row

    async def items_for_snapshot(self, snapshot: Any) -> list[dict[str, Any]]:
        """The differences this snapshot reported (live or accepted) and those it found fixed."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(
                select(reconciliation_items).where(
                    reconciliation_items.c.body_org == snapshot.body_org,
                    reconciliation_items.c.last_seen == snapshot.snapshot_id,
                ).order_by(reconciliation_items.c.kind, reconciliation_items.c.item_id)
            )).all()
            locals_ = await self._local_ids(conn, snapshot.snapshot_id, {r.person_key for r in rows})
            await conn.rollback()
        return [self.item_json(r, locals_.get(r.person_key)) for r in rows]

    async def rejected_for_snapshot(self, snapshot: Any) -> list[dict[str, Any]]:
        """The people this snapshot listed in rows rejected for a field other than the NHS number: each
        reported "row rejected" with the row's errors (the first MAX_REPORTED_PROBLEMS, as the problems)."""
        numbers = list((snapshot.summary or {}).get("row_rejected_rows") or [])
        out: list[dict[str, Any]] = []
        async with self._engine.connect() as conn:
            for i in range(0, len(numbers), 500):
                for r in (await conn.execute(
                        select(reconciliation_rows.c.row_no, reconciliation_rows.c.local_id,
                               reconciliation_rows.c.belief)
                        .where(reconciliation_rows.c.snapshot_id == snapshot.snapshot_id,
                               reconciliation_rows.c.row_no.in_(numbers[i:i + 500])))).all():
                    out.append({
                        "row": r.row_no, "outcome": ROW_REJECTED,
                        "local_id": self._protector.decrypt(r.local_id).decode() if r.local_id else None,
                        "errors": list((r.belief or {}).get(REJECTED) or []), "who_must_act": "body",
                        "action": REJECTED_ACTION,
                    })
            await conn.rollback()
        return sorted(out, key=lambda e: e["row"])

    async def _local_ids(self, conn: AsyncConnection, snapshot_id: str, keys: set[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        key_list = sorted(keys)
        for i in range(0, len(key_list), 500):
            chunk = key_list[i:i + 500]
            for r in (await conn.execute(select(reconciliation_rows.c.person_key, reconciliation_rows.c.local_id)
                                         .where(reconciliation_rows.c.snapshot_id == snapshot_id,
                                                reconciliation_rows.c.person_key.in_(chunk)))).all():
                out[r.person_key] = self._protector.decrypt(r.local_id).decode() if r.local_id else None
        return out

    @staticmethod
    def item_json(r: Any, local_id: str | None) -> dict[str, Any]:
        d = dict(r.difference)
        return {
            "item_id": r.item_id, "state": r.state, "kind": r.kind, "field": r.field, "local_id": local_id,
            "person_id": r.person_id, "body_says": d.get("body_says"), "hub_says": d.get("hub_says"),
            "who_must_act": d.get("who_must_act"), "action": d.get("action"),
            "explanation": d.get("explanation"), "citation": d.get("citation"),
            "reason": r.reason, "fixed_by": r.fixed_by, "first_seen": r.first_seen, "last_seen": r.last_seen,
        }

    async def set_item_state(self, body_org: str, item_id: str, new: ItemState, reason: str | None,
                             is_admin: bool) -> dict[str, Any] | None:
        from hub.domain.reconciliation import set_state

        async with self._engine.begin() as conn:
            r = (await conn.execute(select(reconciliation_items)
                                    .where(reconciliation_items.c.item_id == item_id).with_for_update())).first()
            if r is None or (r.body_org != body_org and not is_admin):
                return None
            item = _item(r)
            changed = set_state(item, new, reason)  # ValueError names the field
            await conn.execute(reconciliation_items.update().where(reconciliation_items.c.item_id == item_id)
                               .values(state=changed.state.value, reason=changed.reason,
                                       updated_at=datetime.now(UTC)))
            if self.alerts is not None and changed.state not in LIVE:
                await self.alerts.after_items_closed(conn, {r.body_org})  # accepted: may fall back below
            r = (await conn.execute(select(reconciliation_items)
                                    .where(reconciliation_items.c.item_id == item_id))).one()
        return self.item_json(r, None)


async def _retained_numbers(conn: AsyncConnection, indexes: set[str]) -> dict[str, bytes]:
    """Each of `indexes` (numbers a merge retained) -> that number encrypted, as the merge keeps it."""
    out: dict[str, bytes] = {}
    wanted = sorted(indexes)
    for i in range(0, len(wanted), 500):
        for r in (await conn.execute(select(person_merges.c.retained_index, person_merges.c.retained_number)
                                     .where(person_merges.c.retained_index.in_(wanted[i:i + 500])))).all():
            out[r.retained_index] = bytes(r.retained_number)
    return out


def _snapshot_json(row: Any) -> dict[str, Any]:
    return {
        "snapshot_id": row.snapshot_id, "body_org": row.body_org, "as_of": row.as_of.isoformat(),
        "format": row.format, "state": row.state, "rows_read": row.rows_read, "rows_rejected": row.rows_rejected,
        "persons_compared": row.persons_compared, "persons_total": row.persons_total,
        "differences_found": row.differences, "problems": row.problems or [], "summary": row.summary,
        "received_at": row.received_at.isoformat() if row.received_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
    }


def _item(r: Any) -> Item:
    return Item(
        item_id=r.item_id, key=(r.person_key, r.kind, r.field), state=ItemState(r.state),
        difference=difference_from_json(r.person_key, r.difference), first_seen=r.first_seen,
        last_seen=r.last_seen, reason=r.reason,
    )


PAGE = 500


async def _hub_people(engine: AsyncEngine) -> AsyncIterator[tuple[str, str, list[RegisterChange]]]:
    """Every person with their changes, in keyed-hash order, a page at a time
    (each page its own short read, so writers are never held up for long and
    memory stays bounded)."""
    after = ""
    while True:
        async with engine.connect() as conn:
            page = (await conn.execute(
                select(persons.c.nhs_number_index, persons.c.person_id)
                .where(persons.c.nhs_number_index > after).order_by(persons.c.nhs_number_index).limit(PAGE)
            )).all()
            ids = [p.person_id for p in page]
            changes: dict[str, list[RegisterChange]] = {}
            if ids:
                for r in (await conn.execute(select(register_changes.c.person_id, register_changes.c.canonical)
                                             .where(register_changes.c.person_id.in_(ids), not_retracted()))).all():
                    changes.setdefault(r.person_id, []).append(from_jsonable(RegisterChange, r.canonical))
            await conn.rollback()
        for p in page:
            if p.person_id in changes:
                yield p.nhs_number_index, p.person_id, changes[p.person_id]
        if len(page) < PAGE:
            return
        after = page[-1].nhs_number_index


async def _body_rows(engine: AsyncEngine, snapshot_id: str) -> AsyncIterator[tuple[str, Belief | RejectedRow]]:
    after = ""
    while True:
        async with engine.connect() as conn:
            page = (await conn.execute(
                select(reconciliation_rows.c.person_key, reconciliation_rows.c.row_no, reconciliation_rows.c.belief)
                .where(reconciliation_rows.c.snapshot_id == snapshot_id, reconciliation_rows.c.person_key > after)
                .order_by(reconciliation_rows.c.person_key).limit(PAGE)
            )).all()
            await conn.rollback()
        for r in page:
            if REJECTED in r.belief:
                yield r.person_key, RejectedRow(r.person_key, r.row_no)
            else:
                yield r.person_key, belief_from_row(r.person_key, None, r.belief)
        if len(page) < PAGE:
            return
        after = page[-1].person_key


async def _merge(
    left: AsyncIterator[tuple[str, Belief | RejectedRow]], right: AsyncIterator[tuple[str, str, list[RegisterChange]]],
) -> AsyncIterator[tuple[str, Belief | RejectedRow | None, tuple[str, list[RegisterChange]] | None]]:
    """Merge join of two streams sorted by person key."""
    sentinel = object()
    a: Any = await anext(left, sentinel)
    b: Any = await anext(right, sentinel)
    while a is not sentinel or b is not sentinel:
        if b is sentinel or (a is not sentinel and a[0] < b[0]):
            yield a[0], a[1], None
            a = await anext(left, sentinel)
        elif a is sentinel or b[0] < a[0]:
            yield b[0], None, (b[1], b[2])
            b = await anext(right, sentinel)
        else:
            yield a[0], a[1], (b[1], b[2])
            a = await anext(left, sentinel)
            b = await anext(right, sentinel)


# The reconciler's poll (hub.store.db.Prepared: on SQLite compiled once, run on the driver).
_COMPARING = Prepared(select(reconciliation_snapshots).where(reconciliation_snapshots.c.state == "comparing")
                      .order_by(reconciliation_snapshots.c.received_at))


class Reconciler:
    """Compares snapshots waiting in state `comparing`, one at a time."""

    def __init__(self, engine: AsyncEngine, ref: ReferenceData, agreements: AgreementBook,
                 service: ReconciliationService, alerts: DriftAlerts | None = None) -> None:
        self._engine = engine
        self._ref = ref
        self._agreements = agreements
        self._service = service
        self._alerts = alerts  # drift alerts to the body (hub/drift_alerts.py); None: none sent

    async def run_once(self) -> int:
        async with snapshot(self._engine) as conn:  # every poll: a snapshot, never the write lock
            waiting = (await execute_prepared(conn, _COMPARING)).all()
        for snap in waiting:
            await self.compare_snapshot(snap)
        return len(waiting)

    async def compare_snapshot(self, snap: Any) -> None:
        """Merge join the body's rows with the register, a page of people at a
        time; each page's differences are folded into the body's items as it
        goes, so memory stays bounded whatever the size of either list."""
        body, as_of, sid = snap.body_org, snap.as_of, snap.snapshot_id
        # Progress is counted in the body's own list (its rows compared of the rows it sent), never in the
        # register: the number of people on the whole register is not the body's to learn from a snapshot.
        async with self._engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(reconciliation_rows)
                                        .where(reconciliation_rows.c.snapshot_id == sid))).scalar_one()
            await conn.rollback()
        await self._progress(sid, persons_total=total, persons_compared=0, differences=0)
        keys: list[str] = []
        found: list[Difference] = []
        rejected: set[str] = set()  # this batch's people whose row was rejected: not compared
        rejected_rows: list[int] = []
        compared = differences = 0
        counts = {"opened": 0, "fixed": 0, "reopened": 0, "row_rejected": 0}
        async for key, belief, held in _merge(_body_rows(self._engine, sid), _hub_people(self._engine)):
            position: Position | None = None
            if belief is not None:
                compared += 1
            keys.append(key)
            if isinstance(belief, RejectedRow):
                # Listed, but what the body believes cannot be read: "row rejected", never "missing".
                rejected.add(key)
                counts["row_rejected"] += 1
                if len(rejected_rows) < MAX_REPORTED_PROBLEMS:
                    rejected_rows.append(belief.row)
            else:
                if held is not None:
                    person_id, changes = held
                    position = position_for(body, key, evaluate(person_id, changes, self._ref, self._agreements,
                                                                as_of))
                found.extend(compare(body, snap.body_kind, belief, position, as_of))
            if len(keys) >= BATCH:
                differences += len(found)
                differences += await self._fold(body, sid, keys, found, counts, rejected, compared=compared,
                                                differences=differences)
                keys, found, rejected = [], [], set()
        differences += len(found)
        differences += await self._fold(body, sid, keys, found, counts, rejected, compared=compared,
                                        differences=differences)
        await self._finish(snap, compared, differences, counts, sorted(rejected_rows))

    async def _fold(self, body: str, sid: str, keys: list[str], found: list[Difference], counts: dict[str, int],
                    rejected: set[str], **progress: int) -> int:
        """Fold a batch's differences into the body's items; returns how many stood for people whose row
        was rejected (counted with the differences found)."""
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            held = (await conn.execute(select(reconciliation_items).where(
                reconciliation_items.c.body_org == body, reconciliation_items.c.person_key.in_(keys)))).all() if keys else []
            existing = [_item(r) for r in held]
            numbered = {r.item_id for r in held if r.person_number is not None}  # else kept before 0041
            # Not compared: what was last found about them stands (hub/domain/reconciliation.py).
            stood = standing(i for i in existing if i.key[0] in rejected) if rejected else []
            t = track(existing, [*found, *stood], sid)
            again = (*t.seen_again, *t.reopened)
            unnumbered = [i for i in again if i.item_id not in numbered]  # gain their number when seen again
            numbers = await self._numbers(conn, sid, {d.person_key for d in t.opened}
                                          | {i.difference.person_key for i in unnumbered})
            if t.opened:
                await conn.execute(reconciliation_items.insert(), [{
                    "item_id": uuid4(), "body_org": body, "person_key": d.person_key,
                    "person_number": numbers.get(d.person_key),
                    "kind": d.kind.value, "field": d.field, "state": ItemState.OPEN.value,
                    "difference": difference_json(d), "person_id": d.person_id, "first_seen": sid,
                    "last_seen": sid, "reason": None, "fixed_by": None, "updated_at": now,
                } for d in t.opened])
            for item in again:
                number = numbers.get(item.difference.person_key) if item.item_id not in numbered else None
                await conn.execute(reconciliation_items.update()
                                   .where(reconciliation_items.c.item_id == item.item_id)
                                   .values(state=item.state.value, difference=difference_json(item.difference),
                                           person_id=item.difference.person_id, last_seen=sid,
                                           reason=item.reason, fixed_by=None, updated_at=now,
                                           **({"person_number": number} if number is not None else {})))
            if t.fixed:
                await conn.execute(reconciliation_items.update()
                                   .where(reconciliation_items.c.item_id.in_([i.item_id for i in t.fixed]))
                                   .values(state=ItemState.FIXED.value, last_seen=sid, fixed_by="snapshot",
                                           updated_at=now))
            await conn.execute(reconciliation_snapshots.update()
                               .where(reconciliation_snapshots.c.snapshot_id == sid)
                               .values(persons_compared=progress["compared"], differences=progress["differences"]))
        counts["opened"] += len(t.opened)
        counts["fixed"] += len(t.fixed)
        counts["reopened"] += len(t.reopened)
        return len(stood)

    async def _numbers(self, conn: AsyncConnection, sid: str, keys: set[str]) -> dict[str, bytes]:
        """Each of `keys` -> the NHS number whose hash it is, encrypted: from the snapshot's row for the
        person (its `person_number`), else, for someone on the register the body did not list, from the
        person's details (checked: the number's hash is the key). A key neither holds is left out."""
        out: dict[str, bytes] = {}
        wanted = sorted(keys)
        for i in range(0, len(wanted), 500):
            for r in (await conn.execute(select(reconciliation_rows.c.person_key, reconciliation_rows.c.person_number)
                                         .where(reconciliation_rows.c.snapshot_id == sid,
                                                reconciliation_rows.c.person_key.in_(wanted[i:i + 500]),
                                                reconciliation_rows.c.person_number.is_not(None)))).all():
                out[r.person_key] = bytes(r.person_number)
        rest = [k for k in wanted if k not in out]
        protector = self._service._protector
        for i in range(0, len(rest), 500):
            for r in (await conn.execute(select(persons.c.nhs_number_index, persons.c.details)
                                         .where(persons.c.nhs_number_index.in_(rest[i:i + 500])))).all():
                try:
                    number = orjson.loads(protector.decrypt(bytes(r.details))).get("nhs_number")
                except (ValueError, AttributeError):
                    continue
                if isinstance(number, str) and protector.index(number) == r.nhs_number_index:
                    out[r.nhs_number_index] = protector.encrypt(number.encode())
        return out

    async def _progress(self, sid: str, **values: Any) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(reconciliation_snapshots.update()
                               .where(reconciliation_snapshots.c.snapshot_id == sid).values(**values))

    async def _finish(self, snap: Any, compared: int, differences: int, counts: dict[str, int],
                      rejected_rows: list[int]) -> None:
        sid, body = snap.snapshot_id, snap.body_org
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            # Live items of people on neither list any more (never met in the join): fixed.
            gone = await conn.execute(reconciliation_items.update().where(
                reconciliation_items.c.body_org == body, reconciliation_items.c.last_seen != sid,
                reconciliation_items.c.state.in_([s.value for s in LIVE]),
            ).values(state=ItemState.FIXED.value, last_seen=sid, fixed_by="snapshot", updated_at=now))
            counts["fixed"] += gone.rowcount or 0
            summary = await self._summary(conn, body, sid)
            # People listed in rows rejected for another field than the NHS number (not compared), and those
            # rows' numbers (the first MAX_REPORTED_PROBLEMS) for the report.
            summary |= {"row_rejected": counts["row_rejected"], "row_rejected_rows": rejected_rows}
            await conn.execute(reconciliation_snapshots.update()
                               .where(reconciliation_snapshots.c.snapshot_id == sid)
                               .values(state="done", persons_compared=compared, differences=differences,
                                       summary=summary, finished_at=now))
            if self._alerts is not None:
                # In the same transaction: the alert is queued once with the snapshot's completion.
                await self._alerts.after_comparison(conn, snap, counts["row_rejected"])
        log.info("snapshot compared", snapshot_id=sid, count=differences, **counts)

    @staticmethod
    async def _summary(conn: AsyncConnection, body: str, sid: str) -> dict[str, Any]:
        rows = (await conn.execute(
            select(reconciliation_items.c.kind, reconciliation_items.c.state, func.count())
            .where(reconciliation_items.c.body_org == body, reconciliation_items.c.last_seen == sid)
            .group_by(reconciliation_items.c.kind, reconciliation_items.c.state)
        )).all()
        by_kind: dict[str, dict[str, int]] = {}
        for kind, state, n in rows:
            by_kind.setdefault(kind, {})[state] = n
        return {"by_kind": by_kind,
                "open": sum(n for _k, s, n in rows if s in (ItemState.OPEN, ItemState.EXPLAINED)),
                "accepted": sum(n for _k, s, n in rows if s == ItemState.ACCEPTED),
                "fixed": sum(n for _k, s, n in rows if s == ItemState.FIXED)}


# Which of a batch's people have a live item: an InList (one array or JSON
# parameter), so the statement's text, and what PostgreSQL prepares for it,
# is the same whatever the batch's size (an expanding IN list was a new
# statement prepared on each connection for each size).
_PEOPLE_WITH_LIVE_ITEMS = InList("ids", lambda ids: (
    select(persons.c.person_id).distinct()
    .join(reconciliation_items, reconciliation_items.c.person_key == persons.c.nhs_number_index)
    .where(persons.c.person_id.in_(ids),
           or_(*(reconciliation_items.c.state == s for s in sorted(v.value for v in LIVE))))))


class ItemWatcher:
    """Closes items that later register changes fix, without waiting for the
    body's next snapshot (consumer group "reconciliation" on the event log)."""

    def __init__(self, engine: AsyncEngine, log_: Subscriber, ref: ReferenceData, agreements: AgreementBook,
                 today: Any = None, alerts: DriftAlerts | None = None) -> None:
        self._engine = engine
        self._log = log_
        self._ref = ref
        self._agreements = agreements
        self._today = today or (england_day)
        self._alerts = alerts  # re-arms a body's drift alert when its count falls back below

    passed_commit_seconds = 1.0  # how long an offset moved past events of people with no open item may go unwritten

    async def run_once(self, limit: int = 200) -> int:
        # Only who and where: the payloads are not read.
        batch = await self._log.fetch(GROUP, EVENTS_TOPIC, limit, payload_for=())
        pass_over = getattr(self._log, "pass_over", None)  # the SQL log (hub/bus/sql.py)
        if not batch:
            if pass_over is not None:
                await self._log.commit_passed(GROUP, EVENTS_TOPIC, self.passed_commit_seconds)
            return 0
        people = list(dict.fromkeys(m.key for m in batch))
        if pass_over is not None:
            async with snapshot(self._engine) as snap:  # no write lock to find that nobody has an open item
                anyone = (await _PEOPLE_WITH_LIVE_ITEMS.execute(snap, people)).first() is not None
            if not anyone:  # the offset moves in memory, written with the next commit or within a second
                pass_over(GROUP, EVENTS_TOPIC, batch[-1].offset + 1)
                return len(batch)
        async with write_transaction(self._engine) as conn:  # inline on SQLite (hub/store/db.py)
            closed: set[str] = set()
            # Most people have no open item: one statement finds those who do.
            with_items = set((await _PEOPLE_WITH_LIVE_ITEMS.execute(conn, people)).scalars())
            for person_id in (p for p in people if p in with_items):
                closed |= await self._recheck(conn, person_id)
            if closed and self._alerts is not None:
                await self._alerts.after_items_closed(conn, closed)
            await self._log.commit(GROUP, EVENTS_TOPIC, batch[-1].offset + 1, conn)
        return len(batch)

    async def _recheck(self, conn: AsyncConnection, person_id: str) -> set[str]:
        """Close the person's items no longer true; returns the bodies that had one closed."""
        closed: set[str] = set()
        key_row = (await conn.execute(select(persons.c.nhs_number_index)
                                      .where(persons.c.person_id == person_id))).first()
        if key_row is None:
            return closed
        key = key_row.nhs_number_index
        live = (await conn.execute(select(reconciliation_items).where(
            reconciliation_items.c.person_key == key,
            reconciliation_items.c.state.in_([s.value for s in LIVE])))).all()
        if not live:
            return closed
        changes = [from_jsonable(RegisterChange, r.canonical) for r in (await conn.execute(
            select(register_changes.c.canonical).where(register_changes.c.person_id == person_id,
                                                       not_retracted()))).all()]
        today = self._today()
        status = evaluate(person_id, changes, self._ref, self._agreements, today)
        now = datetime.now(UTC)
        for body in {r.body_org for r in live}:
            last = (await conn.execute(
                select(reconciliation_snapshots.c.snapshot_id, reconciliation_snapshots.c.body_kind)
                .where(reconciliation_snapshots.c.body_org == body, reconciliation_snapshots.c.state == "done")
                .order_by(reconciliation_snapshots.c.finished_at.desc()).limit(1))).first()
            if last is None:
                continue
            row = (await conn.execute(select(reconciliation_rows.c.belief).where(
                reconciliation_rows.c.snapshot_id == last.snapshot_id,
                reconciliation_rows.c.person_key == key))).first()
            if row is not None and REJECTED in row.belief:
                continue  # the body's row could not be read: nothing to check its items against
            belief = belief_from_row(key, None, row.belief) if row else None
            still = {d.key for d in compare(body, last.body_kind, belief, position_for(body, key, status), today)}
            for r in live:
                if r.body_org == body and (r.person_key, r.kind, r.field) not in still:
                    await conn.execute(reconciliation_items.update()
                                       .where(reconciliation_items.c.item_id == r.item_id)
                                       .values(state=ItemState.FIXED.value, fixed_by="change", updated_at=now))
                    closed.add(body)
                    log.info("reconciliation item fixed by a change", item_id=r.item_id, person_id=person_id)
        return closed


async def run_reconciler(reconciler: Reconciler, watcher: ItemWatcher, service: ReconciliationService,
                         poll_seconds: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        busy = 0
        try:
            busy += await reconciler.run_once()
            busy += await watcher.run_once()
        except Exception as exc:  # noqa: BLE001 - keep the worker alive; the snapshot stays 'comparing' and is retried
            log.warning("reconciliation worker failed", exc_type=type(exc).__name__)
            await asyncio.sleep(min(5.0, poll_seconds * 10))
        if not busy:
            service.wake.clear()
            try:
                await asyncio.wait_for(service.wake.wait(), timeout=poll_seconds)
            except TimeoutError:
                pass


def items_csv_lines(items: Iterable[dict[str, Any]], rejected: Iterable[dict[str, Any]] = ()) -> Iterable[str]:
    """The report as CSV: each item, then each error of each rejected row (`row-rejected` as state and kind,
    the error's field and reason, what the body must do). Text the body sent (its local id, what its list
    says, the reason it gave for a decision) never starts a cell as a formula: one beginning with `=`, `+`,
    `-`, `@`, a tab or a line break is written behind an apostrophe, as in the statements."""
    import csv
    import io

    from hub.money.render import csv_text

    cols = ["item_id", "state", "kind", "field", "local_id", "person_id", "body_says", "hub_says",
            "who_must_act", "action", "explanation", "citation", "reason", "fixed_by"]
    bodys = frozenset(("local_id", "body_says", "reason"))

    def cell(row: dict[str, Any], c: str) -> Any:
        value = row.get(c)
        if value is None:
            return ""
        return csv_text(value) if c in bodys and isinstance(value, str) else value

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)
    for it in items:
        w.writerow([cell(it, c) for c in cols])
    for r in rejected:
        for e in r["errors"]:
            line = {"state": ROW_REJECTED, "kind": ROW_REJECTED, "field": e.get("field"), "local_id": r["local_id"],
                    "who_must_act": r["who_must_act"], "action": r["action"], "explanation": e.get("reason")}
            w.writerow([cell(line, c) for c in cols])
    return buf.getvalue().splitlines(keepends=True)




async def list_agreement(engine: AsyncEngine, body_orgs: set[str] | None) -> list[dict[str, Any]]:
    """Per body (all, or `body_orgs`): how far its last compared list agrees
    with the register, for the oversight report. Counts are exact here; the
    report suppresses them."""
    async with engine.connect() as conn:
        latest = (await conn.execute(
            select(reconciliation_snapshots).where(reconciliation_snapshots.c.state == "done")
            .order_by(reconciliation_snapshots.c.body_org, reconciliation_snapshots.c.finished_at.desc())
        )).all()
        out = []
        seen: set[str] = set()
        for snap in latest:
            if snap.body_org in seen or (body_orgs is not None and snap.body_org not in body_orgs):
                continue
            seen.add(snap.body_org)
            rows = (await conn.execute(
                select(reconciliation_items.c.person_key, reconciliation_items.c.kind).where(
                    reconciliation_items.c.body_org == snap.body_org,
                    reconciliation_items.c.last_seen == snap.snapshot_id,
                    reconciliation_items.c.state != ItemState.FIXED.value))).all()
            missing = {r.person_key for r in rows if r.kind == Kind.MISSING_ON_BODY_LIST.value}
            differing = {r.person_key for r in rows if r.kind != Kind.MISSING_ON_BODY_LIST.value}
            # People in rows rejected for another field: on the body's list, not compared, so not agreeing
            # (the differences standing for some of them are not counted again against the rows read).
            not_read = (snap.summary or {}).get("row_rejected", 0)
            differing -= await _rejected_keys(conn, snap.snapshot_id, differing) if not_read else set()
            listed = snap.rows_read - snap.rows_rejected
            out.append({"body": snap.body_org, "as_of": snap.as_of.isoformat(), "snapshot_id": snap.snapshot_id,
                        "people": listed + not_read + len(missing), "agreeing": max(listed - len(differing), 0)})
        await conn.rollback()
    return out


async def _rejected_keys(conn: AsyncConnection, snapshot_id: str, keys: set[str]) -> set[str]:
    """Which of `keys` the snapshot listed in a rejected row (a marker, not a belief)."""
    out: set[str] = set()
    key_list = sorted(keys)
    for i in range(0, len(key_list), 500):
        out |= {r.person_key for r in (await conn.execute(
            select(reconciliation_rows.c.person_key, reconciliation_rows.c.belief)
            .where(reconciliation_rows.c.snapshot_id == snapshot_id,
                   reconciliation_rows.c.person_key.in_(key_list[i:i + 500])))).all() if REJECTED in r.belief}
    return out


async def drift_history(engine: AsyncEngine, limit: int = 200) -> list[dict[str, Any]]:
    """Differences per body and kind for each compared snapshot, newest first (the console's chart)."""
    async with engine.connect() as conn:
        snaps = (await conn.execute(
            select(reconciliation_snapshots.c.snapshot_id, reconciliation_snapshots.c.body_org,
                   reconciliation_snapshots.c.as_of, reconciliation_snapshots.c.finished_at,
                   reconciliation_snapshots.c.rows_read, reconciliation_snapshots.c.summary)
            .where(reconciliation_snapshots.c.state == "done")
            .order_by(reconciliation_snapshots.c.finished_at.desc()).limit(limit))).all()
        await conn.rollback()
    return [{"snapshot_id": s.snapshot_id, "body": s.body_org, "as_of": s.as_of.isoformat(),
             "compared_at": s.finished_at.isoformat() if s.finished_at else None, "rows": s.rows_read,
             "open": (s.summary or {}).get("open", 0), "accepted": (s.summary or {}).get("accepted", 0),
             "fixed": (s.summary or {}).get("fixed", 0),
             "by_kind": {k: sum(v.values()) for k, v in ((s.summary or {}).get("by_kind") or {}).items()}}
            for s in snaps]


def _keys_named_twice(parsed: ParsedRow) -> ParsedRow:
    """An NDJSON line naming a key twice in one object: a row problem naming the line and each such key
    (never a value), the row held as other rejected rows are, never read as the value the parser kept last.
    Whom it is about is read without those keys (an NHS number written twice names no one)."""
    try:
        data = orjson.loads(parsed.raw)
    except orjson.JSONDecodeError:
        return parsed
    paths = duplicate_keys(parsed.raw, data)
    if not paths:
        return parsed
    readable = {k: v for k, v in data.items() if (k,) not in paths} if isinstance(data, dict) else {}
    return rejected(parsed.row, parsed.raw,
                    tuple(RowProblem(parsed.row, json_path(p), DUPLICATE_KEY) for p in paths), readable)
