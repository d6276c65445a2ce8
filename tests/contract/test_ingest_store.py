"""Ingest, the outbox and the dispatcher through the app, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from datetime import date, timedelta

import httpx
import pytest
from sqlalchemy import func, select

from hub.bus.payload import status_on_the_bus
from hub.bus.port import EVENTS_TOPIC
from hub.codec import from_jsonable
from hub.delivery.dispatcher import GROUP
from hub.domain.model import EventType, RegisterChange
from hub.domain.rules import evaluate
from hub.sample_data import bad_change, detention_to_move_scenario
from hub.store.schema import (
    bus_messages,
    deliveries,
    disclosures,
    ingest_results,
    persons,
    quarantine,
    register_changes,
    service_levels,
)

pytestmark = pytest.mark.integration


async def count(hub, table, *where) -> int:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()
        await conn.rollback()
    return n


def scenario(seed: int, run_id: str | None = None) -> list[dict]:
    return detention_to_move_scenario(random.Random(seed), run_id or f"c-{seed}", date(2025, 1, 6))


def trust(store_hub) -> dict[str, str]:  # noqa: ANN001
    return {"X-API-Key": store_hub.keys["trust"]}


async def test_the_same_change_twice_is_one_change(store_hub):
    change = scenario(1)[0]
    first = await store_hub.http.post("/v1/register-changes", headers=trust(store_hub), json=change)
    second = await store_hub.http.post("/v1/register-changes", headers=trust(store_hub), json=change)
    assert first.status_code == second.status_code == 202, first.text
    assert second.json()["duplicate"] is True
    assert second.json()["change_id"] == first.json()["change_id"]
    assert second.json()["events"] == first.json()["events"]
    assert await count(store_hub.hub, register_changes) == 1
    assert await count(store_hub.hub, service_levels) == 1
    assert await count(store_hub.hub, ingest_results) == 1
    assert await count(store_hub.hub, persons) == 1
    assert await count(store_hub.hub, bus_messages) == len(first.json()["events"]) > 0


async def test_the_same_change_twice_at_once_is_one_change(store_hub):
    change = scenario(2)[0]
    answers = await asyncio.gather(*(
        store_hub.http.post("/v1/register-changes", headers=trust(store_hub), json=change) for _ in range(5)))
    assert {r.status_code for r in answers} == {202}, [r.text for r in answers if r.status_code != 202]
    assert len({r.json()["change_id"] for r in answers}) == 1
    assert await count(store_hub.hub, register_changes) == 1
    assert await count(store_hub.hub, bus_messages) == len(answers[0].json()["events"])


async def test_bad_input_is_quarantined_and_nothing_else_written(store_hub):
    r = await store_hub.http.post("/v1/register-changes", headers=trust(store_hub), json=bad_change("q"))
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    fields = {e["field"] for e in r.json()["errors"]}
    assert "person.nhs_number" in fields
    held = (await store_hub.http.get(f"/v1/quarantine/{r.json()['quarantine_id']}", headers=trust(store_hub)))
    assert held.status_code == 200, held.text
    assert await count(store_hub.hub, quarantine) == 1
    assert await count(store_hub.hub, register_changes) == 0
    assert await count(store_hub.hub, bus_messages) == 0
    assert await count(store_hub.hub, persons) == 0


async def test_the_dispatcher_queues_deliveries_once(store_hub):
    sub = await store_hub.http.post("/v1/subscriptions", headers={"X-API-Key": store_hub.keys["E06000060"]},
                                    json={"url": "http://127.0.0.1:9/hook", "secret": "s" * 32})
    assert sub.status_code == 201, sub.text
    answers = [(await store_hub.http.post("/v1/register-changes", headers=trust(store_hub), json=c)).json()
               for c in scenario(3)[:3]]
    events = [e["event_id"] for a in answers for e in a["events"]]
    hub = store_hub.hub
    assert await hub.dispatcher.run_once() == len(events)
    assert await hub.dispatcher.run_once() == 0
    assert await hub.bus.lag(GROUP, EVENTS_TOPIC) == 0
    queued = await count(hub, deliveries, deliveries.c.subscription_id == sub.json()["subscription_id"])
    assert 0 < queued <= len(events)
    assert await count(hub, deliveries, deliveries.c.status == "pending") == queued
    assert await count(hub, disclosures) >= queued
    # A replay of the whole log queues nothing twice.
    await hub.bus.rewind(GROUP, EVENTS_TOPIC, 0)
    assert await hub.dispatcher.run_once() == len(events)
    assert await count(hub, deliveries) == queued
    log = await store_hub.http.get(f"/v1/subscriptions/{sub.json()['subscription_id']}/deliveries",
                                   headers={"X-API-Key": store_hub.keys["E06000060"]})
    assert log.status_code == 200, log.text


def same_person_changes(seed: int, n: int) -> list[dict]:
    """n changes for one new person, each one the trust may send first (the
    access policy lets only a detention put someone new on the register): a
    detention, then n - 1 re-reported detentions on successive days with the
    residence alternating between two council areas."""
    first, *_ = scenario(seed, f"same-{seed}")
    out = [first]
    start = date.fromisoformat(first["effective_date"])
    for i in range(1, n):
        out.append({
            **first, "source_message_id": f"same-{seed}-again-{i}",
            "effective_date": (start + timedelta(days=i)).isoformat(),
            "residence_la_gss": "E10000034" if i % 2 else "E06000060",
        })
    return out


async def test_concurrent_changes_for_one_new_person_all_land_once_and_in_sequence(store_hub):
    """20 changes for a person the hub has never seen, all at once: the first
    inserts of the person race (no unique violation may escape), and each
    change must see every change committed before it (no lost update)."""
    changes = same_person_changes(11, 20)
    answers = await asyncio.gather(*(
        store_hub.http.post("/v1/register-changes", headers=trust(store_hub), json=c) for c in changes))
    assert [r.status_code for r in answers] == [202] * 20, [r.text for r in answers if r.status_code != 202]
    hub = store_hub.hub
    assert len({r.json()["person_id"] for r in answers}) == 1
    assert len({r.json()["change_id"] for r in answers}) == 20
    assert await count(hub, persons) == 1
    assert await count(hub, register_changes) == 20
    # Each accepted change published its events exactly once.
    event_ids = [e["event_id"] for r in answers for e in r.json()["events"]]
    assert len(event_ids) == len(set(event_ids))
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(bus_messages).order_by(bus_messages.c.offset))).all()
        await conn.rollback()
    assert sorted(r.event_id for r in rows) == sorted(event_ids)
    # In log order, each "change recorded" event carries the status of
    # exactly the changes committed up to it: 1, 2, ..., 20 of them.
    recorded = [r for r in rows if r.payload["event"]["event_type"] == EventType.REGISTER_CHANGE_RECORDED.value]
    assert len(recorded) == 20
    async with hub.engine.connect() as conn:
        by_id = {c.change_id: c for c in (from_jsonable(RegisterChange, r.canonical) for r in await conn.execute(
            select(register_changes.c.canonical)))}
        await conn.rollback()
    ingest, pid = hub.ingest, answers[0].json()["person_id"]

    def status_of(changes: list[RegisterChange]) -> dict:
        return status_on_the_bus(evaluate(pid, changes, ingest._ref, ingest._agreements, ingest._today()))

    seen: list[RegisterChange] = []
    telling = 0  # (step, earlier change) pairs where leaving that change out would show
    for r in recorded:
        seen.append(by_id[r.payload["event"]["change_id"]])
        assert r.payload["status"] == status_of(seen), len(seen)
        telling += sum(status_of(seen[:j] + seen[j + 1:-1] + seen[-1:]) != r.payload["status"]
                       for j in range(len(seen) - 1))
    assert telling >= 10, telling
    # And one change's events are contiguous in the log.
    change_order = [r.payload["event"]["change_id"] for r in rows]
    runs = [c for i, c in enumerate(change_order) if i == 0 or change_order[i - 1] != c]
    assert len(runs) == len(set(runs)) == 20


async def test_concurrent_changes_for_many_people_are_all_dispatched(store_hub):
    """The dispatcher polling while 20 people's changes commit concurrently
    must hand on every event: none is skipped by acking past it."""
    sub = await store_hub.http.post("/v1/subscriptions", headers={"X-API-Key": store_hub.keys["E06000060"]},
                                    json={"url": "http://127.0.0.1:9/hook", "secret": "s" * 32})
    assert sub.status_code == 201, sub.text
    hub = store_hub.hub
    handled: list[str] = []
    handle = hub.dispatcher.handle

    async def recording_handle(conn, msg, *batch):  # noqa: ANN001, ANN002, ANN202
        await handle(conn, msg, *batch)
        handled.append(msg.event_id)

    hub.dispatcher.handle = recording_handle
    stop = asyncio.Event()

    async def poll() -> None:
        while not stop.is_set():
            await hub.dispatcher.run_once()
            await asyncio.sleep(0)

    poller = asyncio.create_task(poll())
    answers = await asyncio.gather(*(
        store_hub.http.post("/v1/register-changes", headers=trust(store_hub), json=scenario(100 + i)[0])
        for i in range(20)))
    stop.set()
    await poller
    while await hub.dispatcher.run_once():
        pass
    assert {r.status_code for r in answers} == {202}
    event_ids = [e["event_id"] for r in answers for e in r.json()["events"]]
    assert sorted(handled) == sorted(event_ids)
    assert await hub.bus.lag(GROUP, EVENTS_TOPIC) == 0


async def test_webhook_delivery_retries_then_delivers_in_order(store_hub):
    """Timestamps come back timezone-aware from PostgreSQL and naive from
    SQLite; backoff and ordering must work on both."""
    sub = await store_hub.http.post("/v1/subscriptions", headers={"X-API-Key": store_hub.keys["E06000060"]},
                                    json={"url": "http://council.invalid/hook", "secret": "s" * 32})
    assert sub.status_code == 201, sub.text
    for c in scenario(4)[:3]:
        assert (await store_hub.http.post("/v1/register-changes", headers=trust(store_hub), json=c)).status_code == 202
    hub = store_hub.hub
    await hub.dispatcher.run_once()
    queued = await count(hub, deliveries)
    assert queued > 0
    up = {"ok": False}
    got: list[str] = []

    def council(request: httpx.Request) -> httpx.Response:
        if not up["ok"]:
            return httpx.Response(503)
        got.append(request.headers["S117-Event-Id"])
        return httpx.Response(204)

    hub.deliverer._client = httpx.AsyncClient(transport=httpx.MockTransport(council))
    hub.deliverer._base = hub.deliverer._cap = 0.0  # retry at once
    try:
        assert await hub.deliverer.run_once() == 1
        assert await count(hub, deliveries, deliveries.c.attempts == 1, deliveries.c.last_error == "HTTP 503") == 1
        up["ok"] = True
        while await hub.deliverer.run_once():
            pass
    finally:
        await hub.deliverer._client.aclose()
    assert await count(hub, deliveries, deliveries.c.status == "delivered") == queued
    async with hub.engine.connect() as conn:
        expected = (await conn.execute(select(deliveries.c.event_id).order_by(deliveries.c.delivery_seq))).scalars().all()
        await conn.rollback()
    assert got == list(expected)


async def test_the_person_query_reads_back_what_was_recorded(store_hub):
    answers = [(await store_hub.http.post("/v1/register-changes", headers=trust(store_hub), json=c)).json()
               for c in scenario(5)]
    person_id = answers[0]["person_id"]
    r = await store_hub.http.get(f"/v1/persons/{person_id}/s117", headers=trust(store_hub))
    assert r.status_code == 200, r.text
    assert r.json()["entitled"] is answers[-1]["entitled"]
