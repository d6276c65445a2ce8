"""Tamper-evident audit: every disclosure (pushed or read), refusal and
operator action, in one append-only hash chain.

The records are written where they happen (`disclosures`, `operator_actions`,
and any other table registered in `SOURCES`); `AuditChain.extend` appends
each new record to `audit_chain` in order, within seconds, as an entry that
carries the record's content and `entry_hash = SHA-256(prev_hash || content)`.
Each finished UTC day gets a checkpoint signed with HMAC-SHA-256 (key from
`S117_AUDIT_KEY`, else derived from the data key).

`verify` walks the chain and reports any entry edited (its hash no longer
matches), deleted or reordered (the links or the sequence break), any source
record edited or deleted after it was chained (its content no longer matches
the entry), and any checkpoint whose signature or hash does not hold.

Records that commit out of id order (PostgreSQL): a serial id is drawn at
INSERT and becomes visible at COMMIT, so a record may become visible below
ids the chain has already read past (A draws 100, B draws 101, B commits, the
chain reads 101, then A commits). The chain takes each source's new records
after its cursor as before (the hot path, one indexed range), and keeps the
ids it read past without seeing them as an open gap of the source
(`audit_gaps`), with the transactions that were writing the table at the
time (their virtual transaction ids, from `pg_locks`: an INSERT holds its
table's RowExclusiveLock from before it draws its id until it ends). Each
round reads the open gaps' records not yet chained (an anti-join on the
chain's (source, source_id) index) with the new ones, and closes a gap once
none of its writers is still open: whatever they committed is visible by
then. No writer waits for another; a gap usually closes the round after it
was seen. SQLite has one writer at a time, which commits before the next
draws an id: it never has such a gap.

Retention: entries older than the retention period are purged a whole day at
a time; the last purged hash is kept as the anchor the chain then starts from.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import JSON, Boolean, Integer, String, Table, and_, bindparam, delete, exists, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.ids import uuid5
from hub.observability.logging import get_logger
from hub.store.db import Prepared, execute_prepared, insert_or_merge, write_transaction
from hub.store.schema import (
    access_decisions,
    api_clients,
    audit_chain,
    audit_checkpoints,
    audit_cursors,
    audit_gaps,
    disclosures,
    operator_actions,
)

log = get_logger("hub.audit")
GENESIS = "0" * 64
BATCH = 10_000
_LOCK_KEY = 117_117_001


def _jsonable(v: Any) -> Any:
    t = type(v)
    if t is str or v is None or t is int:  # most of a record's values
        return v
    if t is datetime:
        # Naive values are UTC (SQLite gives them so): the same string as
        # `astimezone(UTC).isoformat()` of the aware value, without making it.
        return v.isoformat() + "+00:00" if v.tzinfo is None else v.astimezone(UTC).isoformat()
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, bytes):
        return hashlib.sha256(v).hexdigest()
    return v


def canonical(content: dict[str, Any]) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)


def entry_hash(prev_hash: str, content: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(content)).hexdigest()


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    table: Table
    id_column: str
    kind: Callable[[Any], str]  # the entry's kind from the row
    person: Callable[[Any], str | None]
    org: Callable[[Any], str | None]
    at: Callable[[Any], datetime]


SOURCES: list[Source] = [
    Source("disclosures", disclosures, "disclosure_id",
           kind=lambda r: "read" if (r.channel or "") == "read" else ("refusal" if r.decision == "denied"
                                                                        else "disclosure"),
           person=lambda r: r.person_id, org=lambda r: r.recipient_org, at=lambda r: r.at),
    Source("operator_actions", operator_actions, "action_id", kind=lambda r: "operator",
           person=lambda r: None, org=lambda r: r.client_id, at=lambda r: r.at),
    # The access policy's decisions (hub/access.py): every write and read of a person, allowed or refused.
    Source("access_decisions", access_decisions, "decision_id",
           kind=lambda r: "refusal" if r.decision == "denied" else ("read" if r.action == "read" else "write"),
           person=lambda r: r.person_id, org=lambda r: r.org_code, at=lambda r: r.at),
]


def register_source(source: Source) -> None:
    """Another table of audit records (e.g. access refusals) joins the chain."""
    if all(s.name != source.name for s in SOURCES):
        SOURCES.append(source)


def _content(source: Source, row: Any, known: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """The record as JSON values (what the entry stores and its hash covers):
    `_jsonable` of each column's value. A row of the source's columns in table
    order (as `select(table)` gives) is taken whole, and only the columns
    whose values can be a datetime, a date or bytes are converted: for any
    other value `_jsonable` is the value itself (three entries a message,
    fifteen columns each). `known`: a value of the row and its `_jsonable`
    already made (`extend` sorts by the record's time as JSON: not made twice)."""
    names, convert = _content_plan(source.table)
    content: dict[str, Any] = {"source": source.name}
    if getattr(row, "_fields", None) == names:
        content.update(zip(names, row))
        for i, name in convert:
            value = row[i]
            content[name] = known[1] if known is not None and value is known[0] else _jsonable(value)
        return content
    for name in names:
        content[name] = _jsonable(getattr(row, name))
    return content


# Column types whose values (as read) are never a datetime, a date or bytes: `_jsonable` leaves them as they are.
_AS_READ = (String, Integer, Boolean, JSON)
_CONTENT_PLANS: dict[Table, tuple[tuple[str, ...], tuple[tuple[int, str], ...]]] = {}


def _content_plan(table: Table) -> tuple[tuple[str, ...], tuple[tuple[int, str], ...]]:
    """The table's column names in order, and (position, name) of those `_jsonable` may change."""
    got = _CONTENT_PLANS.get(table)
    if got is None:
        names = _columns(table)
        convert = tuple((i, str(c.name)) for i, c in enumerate(table.columns) if not isinstance(c.type, _AS_READ))
        got = _CONTENT_PLANS[table] = (names, convert)
    return got


_ORDER = itemgetter(0, 1, 2)
_COLUMNS: dict[Table, tuple[str, ...]] = {}
_NEW_RECORDS: dict[tuple[Table, str], Prepared] = {}
_CURSOR = Prepared(select(audit_cursors.c.last_id).where(audit_cursors.c.source == bindparam("source")))
_CURSOR_MOVES: dict[str, Prepared] = {}
_LATE_RECORDS: dict[tuple[Table, str], Prepared] = {}
_GAPS = Prepared(select(audit_gaps.c.source, audit_gaps.c.first_id, audit_gaps.c.writers))
_CHAIN_AFTER = Prepared(select(audit_chain.c.at, audit_chain.c.seq, audit_chain.c.entry_hash)
                        .where(audit_chain.c.seq > bindparam("after")).order_by(audit_chain.c.seq))
# SQLite: the last entry of each day after `after`. With one max() aggregate SQLite takes a bare
# column (the hash) from the row holding the maximum (sqlite.org/lang_select.html, "bare columns").
_DAY = func.substr(audit_chain.c.at, 1, 10, type_=String).label("day")
_DAYS_AFTER = Prepared(select(_DAY, func.max(audit_chain.c.seq).label("seq"), audit_chain.c.entry_hash)
                       .where(audit_chain.c.seq > bindparam("after")).group_by(_DAY))


def _columns(table: Table) -> tuple[str, ...]:
    got = _COLUMNS.get(table)
    if got is None:
        got = _COLUMNS[table] = tuple(str(c.name) for c in table.columns)
    return got


def _new_records(source: Source) -> Prepared:
    """A source's records after its cursor, oldest first (built once per source)."""
    got = _NEW_RECORDS.get((source.table, source.id_column))
    if got is None:
        idcol = source.table.c[source.id_column]
        got = _NEW_RECORDS[(source.table, source.id_column)] = Prepared(
            select(source.table).where(idcol > bindparam("after")).order_by(idcol).limit(BATCH))
    return got


def _late_records(source: Source) -> Prepared:
    """A source's records in its open gaps not yet chained, oldest first (built once per source)."""
    got = _LATE_RECORDS.get((source.table, source.id_column))
    if got is None:
        idcol = source.table.c[source.id_column]
        chained = exists().where(audit_chain.c.source == bindparam("source"), audit_chain.c.source_id == idcol)
        gap = and_(audit_gaps.c.source == bindparam("source"),
                   idcol >= audit_gaps.c.first_id, idcol <= audit_gaps.c.last_id)
        got = _LATE_RECORDS[(source.table, source.id_column)] = Prepared(
            select(source.table).select_from(source.table.join(audit_gaps, gap))
            .where(~chained).order_by(idcol).limit(BATCH))
    return got


# PostgreSQL: the transactions (virtual ids) holding a lock on each named table, other than a
# reader's (AccessShareLock) and this connection's: every transaction that has inserted into it
# (or is inserting: the lock is taken before the id is drawn) and has not ended.
_WRITERS = text(
    "SELECT t.name, l.virtualtransaction FROM unnest(CAST(:names AS text[])) AS t(name)"
    " JOIN pg_locks l ON l.locktype = 'relation' AND l.relation = to_regclass(t.name)"
    " WHERE l.mode <> 'AccessShareLock' AND l.pid IS DISTINCT FROM pg_backend_pid()")


async def _writers(conn: AsyncConnection, tables: list[str]) -> dict[str, set[str]]:
    if conn.dialect.name != "postgresql":
        return {}  # one writer at a time, committed before the next draws an id
    out: dict[str, set[str]] = {}
    for name, vxid in (await conn.execute(_WRITERS, {"names": tables})).all():
        out.setdefault(name, set()).add(vxid)
    return out


def _missing(cursor: int, ids: list[int]) -> tuple[int, int] | None:
    """The first and last id after `cursor` missing from `ids` (read in order), or None."""
    first = last = 0  # ids start at 1
    before = cursor
    for i in ids:
        if i > before + 1:
            first = first or before + 1
            last = i - 1
        before = i
    return (first, last) if first else None


def _cursor_move(dialect: Any) -> Prepared:
    got = _CURSOR_MOVES.get(dialect.name)
    if got is None:
        got = _CURSOR_MOVES[dialect.name] = Prepared(
            insert_or_merge(dialect, audit_cursors)
            .values(source=bindparam("source"), last_id=bindparam("last_id"), anchor_hash=None)
            .on_conflict_do_update(index_elements=[audit_cursors.c.source],
                                   set_={"last_id": bindparam("last_id")}))
    return got


class AuditChain:
    def __init__(self, engine: AsyncEngine, key: bytes) -> None:
        self._engine = engine
        self._key = key
        # `checkpoint` reads each entry once: the entries up to `_scanned`
        # are folded into the last (seq, hash) of each day not yet signed.
        self._scanned: int | None = None
        self._last_of: dict[date, tuple[int, str]] = {}

    async def _lock(self, conn: AsyncConnection) -> None:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})

    async def _head(self, conn: AsyncConnection) -> tuple[int, str]:
        row = (await conn.execute(select(audit_chain.c.seq, audit_chain.c.entry_hash)
                                  .order_by(audit_chain.c.seq.desc()).limit(1))).first()
        if row is not None:
            return row.seq, row.entry_hash
        return await self._anchor(conn)

    @staticmethod
    async def _anchor(conn: AsyncConnection) -> tuple[int, str]:
        """(seq, hash) the chain starts after: the last purged entry's, else the genesis."""
        anchor = (await conn.execute(select(audit_cursors.c.last_id, audit_cursors.c.anchor_hash)
                                     .where(audit_cursors.c.source == "(anchor)"))).first()
        return (anchor.last_id, anchor.anchor_hash) if anchor else (0, GENESIS)

    async def extend(self) -> int:
        """Append every record not yet chained; returns how many."""
        added = 0
        async with write_transaction(self._engine) as conn:  # SQLite: the shared inline writer
            await self._lock(conn)
            seq, prev = await self._head(conn)
            rows: list[tuple[str, str, int, datetime, Source, Any]] = []
            cursors: dict[str, int] = {}
            seen: dict[str, tuple[int, int]] = {}  # source: the first and last id read past unseen
            pg = conn.dialect.name == "postgresql"
            for source in SOURCES:
                cur = (await execute_prepared(conn, _CURSOR, {"source": source.name})).scalar() or 0
                name, at_of, idcol = source.name, source.at, source.id_column
                new = (await execute_prepared(conn, _new_records(source), {"after": cur})).all()
                if pg and new and (gap := _missing(cur, [getattr(r, idcol) for r in new])) is not None:
                    seen[name] = gap
                for r in new:
                    at = at_of(r)
                    rows.append((_jsonable(at), name, cur := getattr(r, idcol), at, source, r))
                cursors[name] = cur  # read in id order, every one chained below: the last is the cursor
            await self._late(conn, rows, seen)
            rows.sort(key=_ORDER)  # by time (as the entry writes it), source, id
            entries = []
            sha256 = hashlib.sha256
            for when, name, rid, at, source, r in rows:
                seq += 1
                # The content's canonical JSON is what the hash covers and what is stored (as
                # written, not serialised again: the same document, its keys sorted).
                body = canonical(_content(source, r, (at, when)))
                h = sha256(prev.encode() + body).hexdigest()
                entries.append({"seq": seq, "kind": source.kind(r), "source": name, "source_id": rid,
                                "at": at, "person_id": source.person(r), "org": source.org(r),
                                "content": orjson.Fragment(body), "prev_hash": prev, "entry_hash": h})
                prev = h
            if entries:
                await conn.execute(audit_chain.insert(), entries)
                await execute_prepared(conn, _cursor_move(conn.dialect),
                                       [{"source": name, "last_id": last} for name, last in cursors.items()])
            added = len(entries)
        return added

    async def _late(self, conn: AsyncConnection, rows: list[tuple[str, str, int, datetime, Source, Any]],
                    seen: dict[str, tuple[int, int]]) -> int:
        """Record the gaps this round read past (`seen`), add the open gaps' records not yet chained
        to `rows`, and close each gap none of whose writers is still open. Returns how many were added.

        The writers are asked before the gaps are read: a transaction that held a gap's id then
        either still holds its lock (the gap stays open) or has ended, and what it committed is
        visible to the read that follows."""
        gaps = (await execute_prepared(conn, _GAPS)).all()
        if not gaps and not seen:
            return 0
        by_name = {s.name: s for s in SOURCES}
        open_in = {g.source for g in gaps} | set(seen)
        writing = await _writers(conn, sorted({str(by_name[n].table.name) for n in open_in if n in by_name}))
        now = datetime.now(UTC)
        closing: list[tuple[str, int]] = []
        for g in gaps:
            source = by_name.get(g.source)
            if source is not None and not set(g.writers or ()) & writing.get(str(source.table.name), set()):
                closing.append((g.source, g.first_id))
        if seen:
            await conn.execute(audit_gaps.insert(), [
                {"source": name, "first_id": first, "last_id": last, "seen_at": now,
                 "writers": sorted(writing.get(str(by_name[name].table.name), ()))}
                for name, (first, last) in seen.items()])
            closing += [(name, first) for name, (first, _last) in seen.items()
                        if not writing.get(str(by_name[name].table.name))]
        taken = {(name, rid) for _w, name, rid, _a, _s, _r in rows}
        full: set[str] = set()
        added = 0
        for name in sorted(open_in):
            source = by_name.get(name)
            if source is None:
                continue
            idcol, at_of = source.id_column, source.at
            late = (await execute_prepared(conn, _late_records(source), {"source": name})).all()
            if len(late) >= BATCH:
                full.add(name)  # more to read: its gaps stay open until a round reads them all
            for r in late:
                rid = getattr(r, idcol)
                if (name, rid) in taken:  # read this round as a new record (inside a gap's span)
                    continue
                at = at_of(r)
                rows.append((_jsonable(at), name, rid, at, source, r))
                added += 1
        closing = [c for c in closing if c[0] not in full]
        if closing:
            await conn.execute(delete(audit_gaps).where(audit_gaps.c.source == bindparam("s"),
                                                        audit_gaps.c.first_id == bindparam("f")),
                               [{"s": name, "f": first} for name, first in closing])
        if added:
            log.info("audit records chained late", count=added)
        return added

    def _sign(self, day: date, last_seq: int, last_hash: str) -> str:
        return hmac.new(self._key, f"{day.isoformat()}|{last_seq}|{last_hash}".encode(), hashlib.sha256).hexdigest()

    async def checkpoint(self, today: date) -> int:
        """Sign every finished day that has entries and no checkpoint yet.

        Each entry is read once: the first call starts after the newest
        checkpoint's entry, later calls after the last entry seen (reading
        the whole chain every few seconds grew with the register; an entry
        chained after its day was signed is not signed again, as before)."""
        made = 0
        async with write_transaction(self._engine) as conn:
            await self._lock(conn)
            scanned = self._scanned
            if scanned is None:
                scanned = (await conn.execute(select(func.max(audit_checkpoints.c.last_seq)))).scalar() or 0
            last_of = dict(self._last_of)
            if conn.dialect.name == "sqlite":
                # Each day's last entry found by SQLite: a row a day, not one an entry (a
                # time is stored as its UTC fields, 'YYYY-MM-DD HH:MM:SS...': its day first).
                for day, seq, h in (await execute_prepared(conn, _DAYS_AFTER, {"after": scanned})).all():
                    last_of[date.fromisoformat(day)] = (seq, h)
                    scanned = max(scanned, seq)
            else:
                for at, seq, h in (await execute_prepared(conn, _CHAIN_AFTER, {"after": scanned})).all():
                    last_of[(at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).date()] = (seq, h)
                    scanned = seq
            finished = sorted(d for d in last_of if d < today)
            if finished:
                done = set((await conn.execute(select(audit_checkpoints.c.day)
                                               .where(audit_checkpoints.c.day.in_(finished)))).scalars().all())
                for d in finished:
                    seq, h = last_of.pop(d)
                    if d not in done:
                        await conn.execute(audit_checkpoints.insert().values(
                            day=d, last_seq=seq, last_hash=h, signature=self._sign(d, seq, h),
                            created_at=datetime.now(UTC)))
                        made += 1
        # Only once committed: a failed round is read again next time.
        self._scanned, self._last_of = scanned, last_of
        return made

    async def verify(self) -> dict[str, Any]:
        problems: list[dict[str, Any]] = []
        checked = 0
        async with self._engine.connect() as conn:
            seq, prev = anchor_seq, anchor_hash = await self._anchor(conn)
            by_source = {s.name: s for s in SOURCES}
            after = seq
            while True:
                page = (await conn.execute(select(audit_chain).where(audit_chain.c.seq > after)
                                           .order_by(audit_chain.c.seq).limit(BATCH))).all()
                if not page:
                    break
                current: dict[tuple[str, int], Any] = {}
                for name in {e.source for e in page}:
                    source = by_source.get(name)
                    if source is None:
                        continue
                    idcol = source.table.c[source.id_column]
                    wanted = [e.source_id for e in page if e.source == name]
                    for i in range(0, len(wanted), 900):
                        for row in (await conn.execute(select(source.table).where(
                                idcol.in_(wanted[i:i + 900])))).all():
                            current[(name, getattr(row, source.id_column))] = row
                for e in page:
                    checked += 1
                    if e.seq != seq + 1:
                        problems.append({"seq": e.seq, "problem": f"entries missing or reordered: expected {seq + 1}"})
                    if e.prev_hash != prev:
                        problems.append({"seq": e.seq, "problem": "does not link to the entry before it"})
                    if entry_hash(e.prev_hash, e.content) != e.entry_hash:
                        problems.append({"seq": e.seq, "problem": "entry edited: its hash does not match its content"})
                    source = by_source.get(e.source)
                    if source is not None:
                        row = current.get((e.source, e.source_id))
                        if row is None:
                            problems.append({"seq": e.seq, "problem": f"{e.source} record {e.source_id} deleted"})
                        elif _content(source, row) != e.content:
                            problems.append({"seq": e.seq, "problem": f"{e.source} record {e.source_id} edited "
                                                                      "after it was chained"})
                        elif (e.kind, e.person_id, e.org) != (source.kind(row), source.person(row), source.org(row)):
                            # The columns `audit person` finds entries by are outside the hash: a person id
                            # moved off a read hid it from the subject access answer, verify saying ok.
                            problems.append({"seq": e.seq, "problem": "entry edited: its kind, person or "
                                                                      "organisation is not its record's"})
                    seq, prev = e.seq, e.entry_hash
                after = page[-1].seq
            anchored = anchor_seq == 0  # a purge's anchor must be a signed day's last entry
            for cp in (await conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.day))).all():
                if not hmac.compare_digest(cp.signature, self._sign(cp.day, cp.last_seq, cp.last_hash)):
                    problems.append({"day": cp.day.isoformat(), "problem": "checkpoint signature does not verify"})
                if cp.last_seq == anchor_seq and cp.last_hash == anchor_hash:
                    anchored = True
                if cp.last_seq <= anchor_seq:
                    continue  # purged: the anchor stands for it
                h = (await conn.execute(select(audit_chain.c.entry_hash).where(
                    audit_chain.c.seq == cp.last_seq))).scalar()
                if h is None:
                    problems.append({"day": cp.day.isoformat(), "seq": cp.last_seq,
                                     "problem": "the signed checkpoint's entry is missing: entries deleted"})
                elif h != cp.last_hash:
                    problems.append({"day": cp.day.isoformat(), "problem": "the chain differs from the signed checkpoint"})
            if not anchored:
                problems.append({"seq": anchor_seq, "problem": "the anchor the chain starts from is not a signed "
                                                               "checkpoint: entries deleted"})
            await conn.rollback()
        return {"entries_checked": checked, "ok": not problems, "problems": problems}

    async def person(self, person_id: str) -> list[dict[str, Any]]:
        """Who was told what about this person, when, under which agreement: every push
        decision (`disclosures`), every read of the record (`access_decisions`, `action`
        `read`) and every hub operator's action naming the person (`operator_actions` whose
        target is the person id: a trace; not the subject access look-ups themselves), in time order."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(disclosures, audit_chain.c.seq)
                                       .join(audit_chain, (audit_chain.c.source == "disclosures")
                                             & (audit_chain.c.source_id == disclosures.c.disclosure_id), isouter=True)
                                       .where(disclosures.c.person_id == person_id)
                                       .order_by(disclosures.c.at, disclosures.c.disclosure_id))).all()
            # Reads of the record (person query, lookup, FHIR read, a case's view or statement...): the
            # access policy's decisions (allowed or refused), each a body told, or asking, about the person.
            # Found through the chain's person index (`access_decisions` has none): the callers chain
            # every record first.
            reads = (await conn.execute(select(access_decisions, audit_chain.c.seq)
                                        .select_from(audit_chain.join(
                                            access_decisions, access_decisions.c.decision_id == audit_chain.c.source_id))
                                        .where(audit_chain.c.person_id == person_id,
                                               audit_chain.c.source == "access_decisions",
                                               access_decisions.c.action == "read"))).all()
            # The hub operator's own looks at the person (a trace of the person: operator actions
            # whose target is the person id): who at the hub saw the record.
            looked = (await conn.execute(select(operator_actions, api_clients.c.org_code, audit_chain.c.seq)
                                         .join(api_clients, api_clients.c.client_id == operator_actions.c.client_id,
                                               isouter=True)
                                         .join(audit_chain, (audit_chain.c.source == "operator_actions")
                                               & (audit_chain.c.source_id == operator_actions.c.action_id),
                                               isouter=True)
                                         .where(operator_actions.c.target == person_id,
                                                # (not the subject access look-ups: this answer's own kind)
                                                operator_actions.c.action != "audit-person"))).all()
            await conn.rollback()
        out = [{"at": _jsonable(r.at), "recipient": r.recipient_org, "decision": r.decision,
                "event_type": r.event_type, "event_id": r.event_id, "agreement": r.agreement_id,
                "field_groups": r.field_groups, "channel": r.channel, "reason": r.reason,
                "chain_seq": r.seq} for r in rows]
        out += [{"at": _jsonable(r.at), "recipient": r.org_code, "decision": r.decision,
                 "event_type": None, "event_id": None, "agreement": r.agreement_id,
                 "field_groups": r.field_groups, "channel": r.channel, "reason": r.rule,
                 "chain_seq": r.seq, "action": "read", "as_of": _jsonable(r.as_of)} for r in reads]
        out += [{"at": _jsonable(r.at), "recipient": r.org_code or r.client_id, "decision": "allowed",
                 "event_type": None, "event_id": None, "agreement": None, "field_groups": None,
                 "channel": "operator", "reason": r.action, "chain_seq": r.seq, "action": "read", "as_of": None,
                 "operator_action": r.action, "client_id": r.client_id} for r in looked]
        out.sort(key=lambda e: (e["at"], e["chain_seq"] or 0))
        return out

    async def purge_before(self, cutoff: date) -> int:
        """Drop whole days of entries before `cutoff`, up to the newest signed day
        before it; that day's checkpoint (its last seq and hash) becomes the anchor,
        so `verify` can tell a purge from entries deleted under a forged anchor.
        A day not yet signed is signed first; a chain that no longer matches the
        checkpoint is not purged (what would show the tampering stays)."""
        await self.checkpoint(cutoff)
        async with self._engine.begin() as conn:
            await self._lock(conn)
            anchor_seq, _ = await self._anchor(conn)
            last = (await conn.execute(select(audit_checkpoints.c.last_seq.label("seq"),
                                              audit_checkpoints.c.last_hash.label("entry_hash"))
                                       .where(audit_checkpoints.c.day < cutoff,
                                              audit_checkpoints.c.last_seq > anchor_seq)
                                       .order_by(audit_checkpoints.c.last_seq.desc()).limit(1))).first()
            if last is None:
                return 0
            held = (await conn.execute(select(audit_chain.c.entry_hash)
                                       .where(audit_chain.c.seq == last.seq))).scalar()
            if held != last.entry_hash:
                log.warning("audit purge skipped: the chain differs from its signed checkpoint", seq=last.seq)
                return 0
            n = (await conn.execute(delete(audit_chain).where(audit_chain.c.seq <= last.seq))).rowcount or 0
            await conn.execute(insert_or_merge(conn.dialect, audit_cursors)
                               .values(source="(anchor)", last_id=last.seq, anchor_hash=last.entry_hash)
                               .on_conflict_do_update(index_elements=[audit_cursors.c.source],
                                                      set_={"last_id": last.seq, "anchor_hash": last.entry_hash}))
        return n


def audit_key(setting: str | None, derive: Callable[[str], str]) -> bytes:
    return setting.encode() if setting else derive("s117-audit-checkpoint-key").encode()


async def record_operator_action(conn: AsyncConnection, client_id: str, action: str, target: str,
                                 detail: dict[str, Any] | None = None) -> None:
    await conn.execute(operator_actions.insert().values(
        at=datetime.now(UTC), client_id=client_id, action=action, target=target[:100], detail=detail or {}))


AUDIT_EVENT_TYPES = {
    "disclosure": ("110106", "Export"), "read": ("110110", "Patient Record"),
    "refusal": ("110106", "Export"),
}


def audit_events_bundle(person_id: str, entries: list[dict[str, Any]], hub_endpoint: str) -> dict[str, Any]:
    """The person's disclosures as FHIR R4 AuditEvent resources in a collection Bundle."""
    resources = []
    for e in entries:
        read = e["channel"] == "read" or e.get("action") == "read"  # a pushed read, or a read of the record
        kind = "read" if read else ("refusal" if e["decision"] == "denied" else "disclosure")
        code, display = AUDIT_EVENT_TYPES[kind]
        org = e["recipient"]
        system = ("https://fhir.hl7.org.uk/Id/gss-code" if len(org) == 9 and org[:1] in "EWSN"
                  else "https://fhir.nhs.uk/Id/ods-organization-code")
        ref = f"{person_id}/{e['chain_seq']}/{e['at']}/{org}/{e['event_id']}"
        resources.append({"fullUrl": f"urn:uuid:{uuid5(uuid.NAMESPACE_URL, ref)}",
                          "resource": {
            "resourceType": "AuditEvent",
            "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": code, "display": display},
            "action": "R" if kind == "read" else "E",
            "recorded": e["at"],
            "outcome": "4" if e["decision"] == "denied" else "0",
            "outcomeDesc": e["reason"][:200] if e["reason"] else None,
            "agent": [{"who": {"identifier": {"system": system, "value": org}}, "requestor": kind == "read"}],
            "source": {"observer": {"display": "S117 Hub"}, "site": hub_endpoint},
            "entity": [{"what": {"reference": f"Patient/{person_id}"},
                        "detail": [d for d in (
                            {"type": "event_type", "valueString": e["event_type"]} if e["event_type"] else None,
                            {"type": "channel", "valueString": e["channel"]} if e.get("action") else None,
                            {"type": "agreement", "valueString": e["agreement"]} if e["agreement"] else None,
                            {"type": "field_groups", "valueString": ",".join(e["field_groups"])} if e["field_groups"] else None,
                            {"type": "chain_seq", "valueString": str(e["chain_seq"])} if e["chain_seq"] else None,
                        ) if d]}],
        }})
        if resources[-1]["resource"]["outcomeDesc"] is None:
            del resources[-1]["resource"]["outcomeDesc"]
    return {"resourceType": "Bundle", "type": "collection", "entry": resources}

