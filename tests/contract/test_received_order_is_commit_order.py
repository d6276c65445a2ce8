"""A register change's events are told against the changes committed before
it, whatever the clocks of the instances that received them, on SQLite and
PostgreSQL.

The dispatcher tells a change's event against the person's changes with
`received_at` up to the change's own. `received_at` was the receiving
instance's clock reading: two hub instances with clocks apart (here one five
seconds behind the other) gave a change committed later an earlier
`received_at`. Then the earlier-committed changes' events counted the later
one (a death told under the detention's and the discharge's events) and the
later change's own event left them out. And a council file's chunk stamped
all its rows alike: one person's rows in one chunk were each told against
every row of the chunk.

Now ingest stamps `received_at` once it holds the write lock (the topic's
publish lock on PostgreSQL, the write lock on SQLite) and after the person's
latest committed change: received order is commit order (bus offset order),
per person, whatever the clocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

import hub.ingest.service as ingest_service
from hub.bus.port import EVENTS_TOPIC
from hub.codec import from_jsonable
from hub.delivery.dispatcher import view_event_id_for
from hub.domain.model import RegisterChange
from hub.domain.rules import evaluate
from hub.domain.views import NOT_INVOLVED, views_for
from hub.ingest.service import BulkRow, Client, IngestService
from hub.store.schema import bus_messages, including_retracted, register_changes
from hub.domain.dates import england_day
from tests.contract.test_history_told_against_store import until_idle, world_on
from tests.contract.test_order_independence_dispatch import check_each_fact_told_once, of_person
from tests.contract.test_recipient_views import World
from tests.histories import BUCKS, GP, ORGS, agreements_yaml, materialise

pytestmark = pytest.mark.integration

OPERATOR = Client(client_id="trust-b", name="Trust B", org_code="RNU", org_kind="trust",
                  scopes=("register:write", "hub:admin"))


@contextlib.contextmanager
def clock_behind(seconds: float) -> Iterator[None]:
    """The ingest module's clock `seconds` behind (another instance's, while it records)."""
    real = ingest_service.datetime

    class Behind(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return real.now(tz) - timedelta(seconds=seconds)

    ingest_service.datetime = Behind  # type: ignore[misc]
    try:
        yield
    finally:
        ingest_service.datetime = real  # type: ignore[misc]


def discharged_then_died() -> list[dict[str, Any]]:
    return [
        {"effective_date": "2024-03-04", "change_type": "detained", "legal_status_code": "03",
         "hospital_ods": "RNU", "residence_la_gss": BUCKS, "gp_practice_ods": GP[BUCKS]},
        {"effective_date": "2024-05-01", "change_type": "left-hospital"},
        {"effective_date": "2024-08-01", "change_type": "died"},
    ]


async def committed(w: World, person_id: str) -> list[tuple[RegisterChange, datetime, list[str]]]:
    """The person's changes in commit order (their events' bus offsets), each
    with its `received_at` and its events' ids."""
    async with w.hub.engine.connect() as conn:
        rows = (await conn.execute(including_retracted(
            select(register_changes.c.change_id, register_changes.c.canonical, register_changes.c.received_at)
            .where(register_changes.c.person_id == person_id)))).all()
        events = (await conn.execute(select(bus_messages.c.offset, bus_messages.c.event_id, bus_messages.c.payload)
                                     .where(bus_messages.c.topic == EVENTS_TOPIC, bus_messages.c.key == person_id)
                                     .order_by(bus_messages.c.offset))).all()
        await conn.rollback()
    first: dict[str, int] = {}
    ids: dict[str, list[str]] = {}
    for e in events:
        change_id = ((e.payload or {}).get("change") or {}).get("change_id")
        if change_id is not None:
            first.setdefault(change_id, e.offset)
            ids.setdefault(change_id, []).append(e.event_id)
    by_commit = sorted(rows, key=lambda r: first[r.change_id])
    return [(from_jsonable(RegisterChange, r.canonical), r.received_at, ids[r.change_id]) for r in by_commit]


async def check_told_as_committed(w: World, person_id: str) -> None:
    """`received_at` strictly increasing in commit order; each change's
    messages give each body its position in the history committed up to that
    change (no later change's fact, no earlier change left out)."""
    history = await committed(w, person_id)
    today = england_day()
    hub = w.hub
    expected: dict[str, dict[str, Any]] = {}  # message event id -> the views of the history up to its change
    for n, (change, _, event_ids) in enumerate(history):
        status = evaluate(person_id, [c for c, _, _ in history[:n + 1]], hub.ref, hub.agreements, today)
        views = views_for(status, ORGS, lambda org: hub.sharing.field_groups_for(org, today))
        for eid in event_ids:
            expected[eid] = views
            for org in ORGS:
                expected[str(view_event_id_for(eid, org))] = views
    told = 0
    for org in w.subscribers:
        for m, p in of_person(w, org, person_id):
            views = expected.get(m["event_id"])
            assert views is not None, f"{org}: a message of no change of the person: {m['event_type']}"
            assert p.view == views.get(org, NOT_INVOLVED), \
                f"{org} told under {m['event_type']} not the history as committed up to its change: {p.view}"
            told += 1
    assert told
    stamps = [t for _, t, _ in history]
    assert all(a < b for a, b in zip(stamps, stamps[1:])), \
        f"received_at not increasing in commit order: {[(c.change_type.value, t) for c, t, _ in history]}"


async def test_a_change_committed_later_by_an_instance_whose_clock_is_behind_is_told_after_the_earlier(
        store_url: str, tmp_path: Path) -> None:
    """Detained and discharged through one instance, the death then recorded
    through another whose clock is five seconds behind; one backlog dispatched.
    The detention's and the discharge's messages carry no death, the death's
    carries the discharge; every body ends holding its truth, each fact once."""
    async with world_on(store_url, tmp_path, agreements_yaml()) as w:
        changes = materialise(discharged_then_died(), "skew", seed=3)
        person_id = None
        for change in changes[:-1]:
            person_id = (await w.post(change)).get("person_id", person_id)
        assert person_id is not None
        other = IngestService(w.hub.engine, w.hub.ref, w.hub.agreements, w.hub.protector)
        with clock_behind(5):
            out = await other.accept(OPERATOR, orjson.dumps(changes[-1]))
        assert out.status_code == 202, out.body
        await until_idle(w.hub.dispatcher.run_once)
        await w.pull_all()

        await check_told_as_committed(w, person_id)
        await w.check_everyone_told_the_truth(person_id)
        check_each_fact_told_once(w, person_id, "skewed clocks")


async def test_a_council_file_chunk_s_rows_for_one_person_are_each_told_as_committed_up_to_them(
        store_url: str, tmp_path: Path) -> None:
    """A person on the register (detained); one chunk (`accept_bulk`, as a
    council file's rows go) brings their discharge and death. The rows were
    stamped alike: the discharge's messages were told against the death too.
    Each row's messages tell the history up to it."""
    async with world_on(store_url, tmp_path, agreements_yaml()) as w:
        changes = materialise(discharged_then_died(), "chunk", seed=4)
        person_id = (await w.post(changes[0]))["person_id"]
        rows = [BulkRow(data=c, original=orjson.dumps(c)) for c in changes[1:]]
        outcomes = await w.hub.ingest.accept_bulk(OPERATOR, rows, "file")
        assert [o.status_code if o is not None else None for o in outcomes] == [202, 202], outcomes
        await until_idle(w.hub.dispatcher.run_once)
        await w.pull_all()

        await check_told_as_committed(w, person_id)
        await w.check_everyone_told_the_truth(person_id)
        check_each_fact_told_once(w, person_id, "one chunk")


def test_the_stamp_follows_the_person_s_latest_change() -> None:
    """Unit: the clock's reading if later than the person's latest change, else 1 us after it
    (a naive latest, as SQLite gives it back, is UTC)."""
    from hub.ingest.service import received_after

    now = datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert received_after(now, None) == now
    assert received_after(now, now - timedelta(seconds=1)) == now
    assert received_after(now, now) == now + timedelta(microseconds=1)
    assert received_after(now, now + timedelta(seconds=5)) == now + timedelta(seconds=5, microseconds=1)
    naive = (now + timedelta(seconds=5)).replace(tzinfo=None)
    assert received_after(now, naive) == now + timedelta(seconds=5, microseconds=1)
