"""The register summary from maintained counts.

Each register change's transaction (ingest) also writes its person's row of
`register_status`: responsible council and ICB (codes and names), the flags
and dates the summary counts, and how many of their changes were recorded
late. `GET /v1/reports/register-summary` then aggregates those rows in SQL
(one GROUP BY) instead of re-evaluating every person's history per request.
Dates are compared with today's at read time (reviews overdue, started or
ended in the last 12 months), so the figures stay right as days pass.

`rebuild` re-evaluates everyone (the full method) and rewrites the rows: run
at start-up when people have no row yet (a database from before this table),
and by the test that checks the maintained figures equal a full re-evaluation.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.codec import from_jsonable
from hub.domain.agreements import AgreementBook
from hub.domain.dates import add_months, england_day
from hub.domain.model import RegisterChange, S117Status
from hub.domain.ports import ReferenceData
from hub.domain.rules import evaluate
from hub.observability.logging import get_logger
from hub.reports import PairKey, publish_summary
from hub.store.db import Prepared, execute_prepared, insert_or_merge, read_only
from hub.store.schema import not_retracted, register_changes, register_status, service_levels

log = get_logger("hub.register_counts")
_UPSERTS: dict[str, Any] = {}
REBUILD_CHUNK = 500
# A code's name as written with the person's status (one row, by index).
_COUNCIL_NAME = select(register_status.c.council_name).where(
    register_status.c.council_code == bindparam("code")).limit(1)
_ICB_NAME = select(register_status.c.icb_name).where(register_status.c.icb_code == bindparam("code")).limit(1)


def status_row(person_id: str, status: S117Status, late_changes: int) -> dict[str, Any]:
    council = status.responsible_council.org if status.responsible_council else None
    icb = status.responsible_commissioner.org if status.responsible_commissioner else None
    return {
        "person_id": person_id,
        "council_code": council.code if council else None, "council_name": council.name if council else None,
        "icb_code": icb.code if icb else None, "icb_name": icb.name if icb else None,
        "entitled": status.entitled, "on_cto": status.on_cto, "in_hospital": status.in_hospital,
        "open_disputes": bool(status.open_disputes),
        "entitlement_start": status.entitlement_start, "entitlement_end": status.entitlement_end,
        "next_review_due": status.next_review.due_on if status.next_review else None,
        "late_changes": late_changes, "updated_at": datetime.now(UTC),
    }


def _upsert(dialect: Any) -> Any:
    """Built once per dialect, executed with a parameter dict per change."""
    stmt = _UPSERTS.get(dialect.name)
    if stmt is None:
        ins = insert_or_merge(dialect, register_status)
        cols = {c.name: ins.excluded[c.name] for c in register_status.c if c.name != "person_id"}
        cols["late_changes"] = register_status.c.late_changes + ins.excluded.late_changes
        stmt = _UPSERTS[dialect.name] = ins.on_conflict_do_update(index_elements=[register_status.c.person_id],
                                                                   set_=cols)
    return stmt


_PREPARED_UPSERTS: dict[str, Prepared] = {}


def _prepared_upsert(dialect: Any) -> Prepared:
    """`_upsert` with its values named (`v_<column>`), as a prepared statement
    (hub.store.db.Prepared: on SQLite compiled once and run on the driver)."""
    got = _PREPARED_UPSERTS.get(dialect.name)
    if got is None:
        ins = insert_or_merge(dialect, register_status).values(
            {c.name: bindparam(f"v_{c.name}") for c in register_status.c})
        cols = {c.name: ins.excluded[c.name] for c in register_status.c if c.name != "person_id"}
        cols["late_changes"] = register_status.c.late_changes + ins.excluded.late_changes
        got = _PREPARED_UPSERTS[dialect.name] = Prepared(
            ins.on_conflict_do_update(index_elements=[register_status.c.person_id], set_=cols))
    return got


# On SQLite an UPDATE rewrites an index whenever one of its columns is in
# the SET list, even to the value it had: the upsert above writes the table's
# page and a page of each of its five indexes for every change. A person's
# council, ICB and entitlement dates rarely move, so once the person has a
# row only the indexed columns that changed are set (the table's page alone,
# most of the time). PostgreSQL leaves an unchanged index alone by itself.
_INDEXED = frozenset(c.name for ix in register_status.indexes for c in ix.columns)
_ALWAYS = tuple(c.name for c in register_status.c
                if c.name not in _INDEXED and c.name not in ("person_id", "late_changes"))
_READ_ROW = Prepared(select(*(register_status.c[c] for c in sorted(_INDEXED)))
                     .where(register_status.c.person_id == bindparam("pid")))
_UPDATES: dict[frozenset[str], Prepared] = {}


def _update(changed: frozenset[str]) -> Prepared:
    """UPDATE of the row's unindexed columns and of the indexed ones in `changed`."""
    got = _UPDATES.get(changed)
    if got is None:
        values: dict[str, Any] = {c: bindparam(f"v_{c}") for c in (*_ALWAYS, *sorted(changed))}
        values["late_changes"] = register_status.c.late_changes + bindparam("v_late_changes")
        got = _UPDATES[changed] = Prepared(
            update(register_status).where(register_status.c.person_id == bindparam("v_person_id")).values(values))
    return got


_INSERT_ROW = register_status.insert()


async def record_status(conn: Any, person_id: str, status: S117Status, late: bool, new: bool = False) -> None:
    """In the change's transaction: the person's status after it, and one
    more late change if this one was recorded late. `new`: the person was
    made in this transaction, so has no row yet: a plain insert (in an ingest
    batch, with the batch's other inserts), nothing read first."""
    row = status_row(person_id, status, 1 if late else 0)
    if new:
        await conn.execute(_INSERT_ROW, row)
        return
    if conn.dialect.name == "sqlite":
        held = (await execute_prepared(conn, _READ_ROW, {"pid": person_id})).first()
        if held is not None:
            changed = frozenset(c for c in _INDEXED if getattr(held, c) != row[c])
            await execute_prepared(conn, _update(changed), {
                "v_person_id": person_id, "v_late_changes": row["late_changes"],
                **{f"v_{c}": row[c] for c in (*_ALWAYS, *changed)}})
            return
    params = {f"v_{k}": v for k, v in row.items()}
    defer = getattr(conn, "defer", None)
    if defer is not None:  # an ingest batch (hub/ingest/group_commit.py): one executemany for its changes
        await defer(_prepared_upsert(conn.dialect).statement, params)
        return
    await execute_prepared(conn, _prepared_upsert(conn.dialect), params)


async def summary(engine: AsyncEngine, today: date, org_code: str | None) -> dict:
    """The suppressed summary from the maintained rows; `org_code` None = all."""
    t = register_status.c
    year_ago = add_months(today, -12)
    first_month = add_months(date(today.year, today.month, 1), -11)

    def n(cond: Any) -> Any:
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    scope = or_(t.council_code == org_code, t.icb_code == org_code) if org_code else None

    def scoped(q: Any) -> Any:
        return q.where(scope) if scope is not None else q

    # One pass over the table: every count and the late changes per pair
    # (a person with neither body yet counts only towards "unknown"'s late
    # changes, as before); names are looked up per code afterwards, since
    # carrying the long name strings through the aggregate doubles its cost.
    pairs = scoped(select(
        t.council_code, t.icb_code,
        n(t.entitled).label("entitled"),
        n(and_(t.entitled, t.entitlement_start >= year_ago)).label("started_last_12_months"),
        n(and_(not_(t.entitled), t.entitlement_end >= year_ago)).label("ended_last_12_months"),
        n(and_(t.entitled, t.on_cto)).label("on_cto"),
        n(and_(t.entitled, t.in_hospital)).label("in_hospital"),
        n(and_(t.entitled, t.next_review_due < today)).label("reviews_overdue"),
        n(t.open_disputes).label("open_disputes"),
        func.coalesce(func.sum(t.late_changes), 0).label("late"),
    )).group_by(t.council_code, t.icb_code)
    started_q = scoped(select(t.entitlement_start, func.count().label("n"))
                       .where(t.entitlement_start >= first_month)).group_by(t.entitlement_start)
    ended_q = scoped(select(t.entitlement_end, func.count().label("n"))
                     .where(t.entitlement_end >= first_month)).group_by(t.entitlement_end)
    async with read_only(engine) as conn:
        pair_rows = (await conn.execute(pairs)).all()
        started_rows = (await conn.execute(started_q)).all()
        ended_rows = (await conn.execute(ended_q)).all()
        names: dict[str, str] = {}
        for code in sorted({r.council_code for r in pair_rows if r.council_code}):
            names[code] = (await conn.execute(_COUNCIL_NAME, {"code": code})).scalar_one()
        for code in sorted({r.icb_code for r in pair_rows if r.icb_code}):
            names[code] = (await conn.execute(_ICB_NAME, {"code": code})).scalar_one()
    rows: dict[PairKey, Counter[str]] = defaultdict(Counter)
    late: Counter[str] = Counter()
    for r in pair_rows:
        late[r.council_code or "unknown"] += int(r.late or 0)
        if r.council_code is None and r.icb_code is None:
            continue
        key = PairKey(r.council_code or "unknown", r.icb_code or "unknown")
        c = rows[key]
        for f in ("entitled", "started_last_12_months", "ended_last_12_months", "on_cto", "in_hospital",
                  "reviews_overdue", "open_disputes"):
            if getattr(r, f):
                c[f] += int(getattr(r, f))
    started: Counter[date] = Counter()
    for r in started_rows:
        started[date(r.entitlement_start.year, r.entitlement_start.month, 1)] += int(r.n)
    ended: Counter[date] = Counter()
    for r in ended_rows:
        ended[date(r.entitlement_end.year, r.entitlement_end.month, 1)] += int(r.n)
    return publish_summary(rows, names, started, ended, late, today)


async def rebuild(engine: AsyncEngine, ref: ReferenceData, agreements: AgreementBook, today: date) -> int:
    """Re-evaluate every person on the register and rewrite their rows."""
    async with read_only(engine) as conn:
        person_ids = (await conn.execute(select(register_changes.c.person_id).distinct().where(not_retracted())
                                         .order_by(register_changes.c.person_id))).scalars().all()
    for start in range(0, len(person_ids), REBUILD_CHUNK):
        chunk = person_ids[start:start + REBUILD_CHUNK]
        async with engine.begin() as conn:
            changes = (await conn.execute(select(register_changes.c.person_id, register_changes.c.canonical)
                                          .where(register_changes.c.person_id.in_(chunk), not_retracted()))).all()
            late = dict((await conn.execute(
                select(register_changes.c.person_id, func.count())
                .join(service_levels, service_levels.c.change_id == register_changes.c.change_id)
                .where(service_levels.c.state == "breach", register_changes.c.person_id.in_(chunk))
                .group_by(register_changes.c.person_id))).all())
            by_person: dict[str, list[RegisterChange]] = defaultdict(list)
            for r in changes:
                by_person[r.person_id].append(from_jsonable(RegisterChange, r.canonical))
            await conn.execute(delete(register_status).where(register_status.c.person_id.in_(chunk)))
            await conn.execute(register_status.insert(), [
                status_row(pid, evaluate(pid, by_person[pid], ref, agreements, today), int(late.get(pid, 0)))
                for pid in chunk])
    return len(person_ids)


async def ensure_register_status(engine: AsyncEngine, ref: ReferenceData, agreements: AgreementBook) -> None:
    """At start-up: if people on the register have no row (a store from before
    the table), build every row once."""
    async with read_only(engine) as conn:
        missing = (await conn.execute(
            select(func.count()).select_from(
                select(register_changes.c.person_id).distinct()
                .where(register_changes.c.person_id.not_in(select(register_status.c.person_id)), not_retracted())
                .subquery()
            ))).scalar_one()
    if missing:
        n = await rebuild(engine, ref, agreements, england_day())
        log.info("register status rebuilt", count=n)
