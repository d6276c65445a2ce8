"""The register summary read from maintained counts (hub/register_counts.py)
equals the summary of everyone re-evaluated from their full history, after a
random sequence of changes (out of order, late, CTOs, moves, deaths)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import date, timedelta

import pytest

from hub.clients import add_client
from sqlalchemy import delete, func, select

from hub import register_counts, reports
from hub.codec import from_jsonable
from hub.domain.model import RegisterChange
from hub.domain.rules import evaluate
from hub.sample_data import WORCS, detention_to_move_scenario
from hub.store.schema import register_changes, register_status, service_levels
from hub.domain.dates import england_day


async def full_summary(hub, today: date) -> dict:  # noqa: ANN001
    """The method the endpoint used before: everyone re-evaluated now."""
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(register_changes.c.person_id, register_changes.c.canonical))).all()
        late = (await conn.execute(select(register_changes.c.person_id)
                                   .join(service_levels, service_levels.c.change_id == register_changes.c.change_id)
                                   .where(service_levels.c.state == "breach"))).scalars().all()
    by_person: dict[str, list[RegisterChange]] = {}
    for r in rows:
        by_person.setdefault(r.person_id, []).append(from_jsonable(RegisterChange, r.canonical))
    statuses = {pid: evaluate(pid, ch, hub.ref, hub.agreements, today) for pid, ch in by_person.items()}
    late_by_council: Counter[str] = Counter()
    for pid in late:
        council = statuses[pid].responsible_council
        late_by_council[council.org.code if council and council.org else "unknown"] += 1
    return reports.register_summary(statuses.values(), today, late_by_council)


def random_changes(rng: random.Random, people: int) -> list[dict]:
    today = england_day()
    out = []
    for i in range(people):
        start = today - timedelta(days=rng.randint(30, 900))
        scenario = detention_to_move_scenario(rng, f"rc-{i}", start, moves_to=WORCS)
        scenario = scenario[:rng.randint(1, 4)]
        last = scenario[-1]
        extra = rng.random()
        if extra < 0.2 and len(scenario) >= 2:
            scenario.append({**last, "source_message_id": f"rc-{i}-cto", "change_type": "cto-started",
                             "effective_date": (date.fromisoformat(last["effective_date"]) + timedelta(days=3))
                             .isoformat(), "hospital_ods": "RNU"})
        elif extra < 0.3:
            scenario.append({**{k: last[k] for k in ("source_system", "person")}, "source_message_id": f"rc-{i}-died",
                             "change_type": "died", "effective_date": (date.fromisoformat(last["effective_date"])
                                                                       + timedelta(days=10)).isoformat()})
        for c in scenario:
            if rng.random() < 0.3:  # notified a while ago: recorded late
                c["notified_on"] = (today - timedelta(days=rng.randint(8, 20))).isoformat()
        if rng.random() < 0.3:
            rng.shuffle(scenario)  # out-of-order arrival
        out.append(scenario)
    return out


@pytest.fixture
def exact(monkeypatch):  # noqa: ANN001
    """Compare exact counts: suppression would hide a difference."""
    monkeypatch.setattr(reports, "suppress", lambda n: n)


async def operator(app_hub) -> dict[str, str]:  # noqa: ANN001
    # Random histories (moves before detentions, several trusts' hospitals) are written as the hub
    # operator: what is counted is the subject here; the access policy is tested in tests/security.
    key = (await add_client(app_hub.hub.engine, "Operator", "RNU", "trust", ["register:write", "hub:admin"]))[1]
    return {"X-API-Key": key}


async def test_maintained_counts_equal_a_full_re_evaluation(app_hub, exact):
    rng = random.Random(117)
    h = await operator(app_hub)
    accepted = 0
    for scenario in random_changes(rng, 40):
        for c in scenario:
            r = await app_hub.http.post("/v1/register-changes", headers=h, json=c)
            assert r.status_code in (202, 422), r.text
            accepted += r.status_code == 202
    assert accepted > 100
    hub = app_hub.hub
    for today in (england_day(), england_day() + timedelta(days=200)):
        maintained = await register_counts.summary(hub.engine, today, None)
        full = await full_summary(hub, today)
        assert maintained == full
    assert sum(r["entitled"] for r in maintained["rows"]) > 0
    assert sum(r["changes_recorded_late"] for r in maintained["rows"]) > 0
    # Row by row too: each person's row (written whole once, then only the indexed columns
    # that moved: hub/register_counts.py) is the status of their whole history.
    today = england_day()
    async with hub.engine.connect() as conn:
        held = {r.person_id: r._mapping for r in (await conn.execute(select(register_status))).all()}
        histories: dict[str, list[RegisterChange]] = {}
        for r in (await conn.execute(select(register_changes.c.person_id, register_changes.c.canonical))).all():
            histories.setdefault(r.person_id, []).append(from_jsonable(RegisterChange, r.canonical))
    assert held.keys() == histories.keys()
    moved = 0
    for pid, history in histories.items():
        want = register_counts.status_row(pid, evaluate(pid, history, hub.ref, hub.agreements, today), 0)
        got = held[pid]
        assert {k: got[k] for k in want if k not in ("updated_at", "late_changes")} == \
            {k: v for k, v in want.items() if k not in ("updated_at", "late_changes")}, pid
        moved += len(history) > 1 and got["council_code"] is not None
    assert moved > 10


async def test_a_store_without_the_counts_is_rebuilt_at_start(app_hub, exact):
    h = await operator(app_hub)
    for scenario in random_changes(random.Random(5), 12):
        for c in scenario:
            await app_hub.http.post("/v1/register-changes", headers=h, json=c)
    hub = app_hub.hub
    today = england_day()
    before = await register_counts.summary(hub.engine, today, None)
    async with hub.engine.begin() as conn:
        await conn.execute(delete(register_status))
    await register_counts.ensure_register_status(hub.engine, hub.ref, hub.agreements)
    async with hub.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(register_status))).scalar_one() == 12
    assert await register_counts.summary(hub.engine, today, None) == before == await full_summary(hub, today)


async def test_the_summary_reads_go_by_index(app_hub):
    """Every read of the summary (the pairs' aggregate, the months' trend, a
    code's name; for everyone and for one organisation) finds its rows of
    `register_status` through an index, the entitlement dates and the ICB
    through their indexes of the rows where they are set (migration 0023):
    SQLite's plan for each statement as the summary ran it."""
    import sqlite3

    from sqlalchemy import event

    h = await operator(app_hub)
    for scenario in random_changes(random.Random(11), 12):
        for c in scenario:
            await app_hub.http.post("/v1/register-changes", headers=h, json=c)
    engine = app_hub.hub.engine
    ran: list[tuple[str, tuple]] = []

    def seen(_conn, _cursor, statement, parameters, _context, _many):  # noqa: ANN001, ANN202
        if "register_status" in statement:
            ran.append((statement, tuple(parameters)))

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        today = england_day()
        everyone = await register_counts.summary(engine, today, None)
        council = next(r["council"]["code"] for r in everyone["rows"] if r["council"]["code"] != "unknown")
        await register_counts.summary(engine, today, council)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
    db = sqlite3.connect(engine.url.database)
    try:
        plans = {statement: [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + statement, params)]
                 for statement, params in ran}
    finally:
        db.close()
    assert len(plans) >= 6
    for statement, plan in plans.items():
        reads = [step for step in plan if "register_status" in step]
        assert reads and all("INDEX" in step for step in reads), (statement, plan)
    used = " ".join(step for plan in plans.values() for step in plan)
    for index in ("ix_register_status_pair", "ix_register_status_icb", "ix_register_status_started",
                  "ix_register_status_ended"):
        assert index in used, index
