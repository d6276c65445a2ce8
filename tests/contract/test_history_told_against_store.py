"""The history a workflow's or the review scanner's event is told against is
the changes committed before it, named by id (its `history_changes` header),
never decided by `received_at`, on SQLite and PostgreSQL.

`received_at` is stamped before commit, by each instance's own clock: a change
stamped earlier can commit later. Two ways that went wrong:

- counted in: a change X stamped T1 (an instance whose clock is behind)
  commits after the workflows published W, whose history's latest change was
  stamped T2 > T1 by another. Told against "received by T2", W carried X's
  fact (here a death) under `s117-dispute-updated`, to a body whose agreement
  grants that event type and not `s117-entitlement-ended`.
- left out: the workflows read the person's history while X's transaction held
  the topic's publish lock (X stamped after the history's latest), then waited
  for that lock to publish W. W came after X's events in the log, but was told
  against "received by" its read's latest, without X: each body was told a
  position without the death after the death's own messages had told it.
  The same for the review scanner, whose scan read the history in one
  transaction and published in another.

Now the publisher reads the history holding the topic's publish lock, and the
event names exactly the changes it read. The changes' rows are written as
ingest writes them (`hub.ingest.service.write_recorded`), with the
`received_at` and at the moment each case needs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

import hub.ingest.service as ingest_service
from hub.api.app import create_app
from hub.bus.port import EVENTS_TOPIC, BusMessage
from hub.bus.sql import lock_topic, publish
from hub.clients import add_client
from hub.codec import from_jsonable
from hub.domain.model import ChangeType, RegisterChange
from hub.domain.rules import derive_events, evaluate
from hub.fhir.messages import read_position
from hub.fhir.namespaces import DEFAULT_CANONICAL_BASE
from hub.ids import uuid4
from hub.ingest.service import Client, write_recorded
from hub.scheduler import ReviewScanner
from hub.settings import Settings
from hub.store.schema import bus_messages, including_retracted, register_changes
from hub.domain.dates import england_day
from tests.contract.test_order_independence_dispatch import (
    _dispute_updates_granted,
    died_during_dispute,
    of_person,
)
from tests.contract.test_recipient_views import Subscriber, World
from tests.histories import BOB_ICB, BUCKS, ORGS, agreements_yaml, materialise
from tests.support import left_hospital_80_days_ago

pytestmark = pytest.mark.integration

HISTORY_CHANGES = "history_changes"  # hub.bus.port.HISTORY_CHANGES (spelt out: the test runs against code without it)
TRUST = Client(client_id="trust-test", name="Trust", org_code="RNU", org_kind="trust", scopes=("register:write",))


@contextlib.asynccontextmanager
async def world_on(store_url: str, tmp_path: Path, agreements_text: str) -> AsyncIterator[World]:
    """tests/contract/test_recipient_views.py's world (every organisation a feed subscriber) on `store_url`."""
    agreements = tmp_path / "agreements.yaml"
    agreements.write_text(agreements_text)
    app = create_app(Settings(database_url=store_url, canonical_base=DEFAULT_CANONICAL_BASE,
                              data_key_file=tmp_path / "data.key", sharing_agreements_path=agreements,
                              run_workers=False))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            trust_key = (await add_client(hub.engine, "Trust", "RNU", "trust",
                                          ["register:write", "s117:read", "hub:admin"]))[1]
            subscribers = {}
            for org in ORGS:
                key = (await add_client(hub.engine, org, org, "council" if org[0] == "E" else "icb",
                                        ["subscriptions:write", "s117:read"]))[1]
                r = await http.post("/v1/subscriptions", headers={"X-API-Key": key}, json={"channel": "feed"})
                assert r.status_code == 201, r.text
                subscribers[org] = Subscriber(org, key, r.json()["subscription_id"])
            yield World(http, hub, trust_key, subscribers)


async def record_death(conn: AsyncConnection, w: World, person_id: str, now: datetime,
                       publishing: bool = True) -> tuple[str, list[BusMessage]]:
    """The person's death recorded in `conn`'s transaction as ingest records a
    change (its row, service level and events), stamped `received_at` = `now`.
    Returns its change id and its events; not `publishing`: the events kept
    back, for the caller to publish (`hub.bus.sql.publish`) later in the transaction."""
    rows = (await conn.execute(including_retracted(select(register_changes.c.canonical)
                               .where(register_changes.c.person_id == person_id)))).all()
    history = [from_jsonable(RegisterChange, r.canonical) for r in rows]
    today = england_day()
    change = RegisterChange(change_id=uuid4(), person_id=person_id, change_type=ChangeType.DIED,
                            effective_date=date(2024, 8, 1), notified_on=today, recorded_on=today,
                            source=TRUST.client_id, source_message_id=f"death-{person_id}")
    hub = w.hub
    before = evaluate(person_id, history, hub.ref, hub.agreements, today)
    after = evaluate(person_id, [*history, change], hub.ref, hub.agreements, today)
    events = derive_events(before, after, change, holidays=hub.ref.bank_holidays())
    messages: list[BusMessage] = []

    async def kept(c: Any, message: BusMessage) -> None:
        messages.append(message)
        if publishing:
            await publish(c, message)

    ingest_service.publish = kept  # type: ignore[assignment]
    try:
        await write_recorded(conn, TRUST, SimpleNamespace(source_message_id=change.source_message_id), change,
                             after, events, person_id, f"corr-{change.change_id}", "rest", now,
                             hub.ref.bank_holidays())
    finally:
        ingest_service.publish = publish  # type: ignore[assignment]
    return change.change_id, messages


async def until_idle(step: Callable[[], Awaitable[int]]) -> None:
    while await step():
        pass


async def before_the_workflow(w: World, history: list[dict[str, Any]], run: str) -> tuple[str, datetime]:
    """The changes posted and dispatched, the workflows not yet run (their dispute case not yet
    opened): the person's id and the latest `received_at` of their history."""
    person_id = None
    for change in materialise(history, run, seed=len(run)):
        person_id = (await w.post(change)).get("person_id", person_id)
    assert person_id is not None
    await until_idle(w.hub.dispatcher.run_once)
    async with w.hub.engine.connect() as conn:
        latest = max((await conn.execute(select(register_changes.c.received_at)
                                         .where(register_changes.c.person_id == person_id))).scalars())
        await conn.rollback()
    return person_id, latest


async def workflow_events(w: World, person_id: str) -> list[Any]:
    async with w.hub.engine.connect() as conn:
        rows = (await conn.execute(select(bus_messages.c.event_id, bus_messages.c.headers).where(
            bus_messages.c.topic == EVENTS_TOPIC, bus_messages.c.key == person_id))).all()
        await conn.rollback()
    return [r for r in rows if (r.headers or {}).get("event_type") == "s117-dispute-updated"]


async def test_a_change_stamped_earlier_and_committed_after_a_workflow_s_event_is_not_told_under_it(
        store_url: str, tmp_path: Path) -> None:
    """X (the death) is stamped 1 ms before the history's latest change, its
    transaction open while the workflows publish W (`s117-dispute-updated`),
    and commits after. One batch then dispatches W and X's events: W's
    messages carry no death (Buckinghamshire, granted W's type and not the
    death's, never hears it); the death's own message tells it."""
    async with world_on(store_url, tmp_path, _dispute_updates_granted()) as w:
        person_id, latest = await before_the_workflow(w, died_during_dispute("D-x")[:-1], "early")
        stamped = latest - timedelta(milliseconds=1)
        run_workflows = until_idle(w.hub.workflow_consumer.run_once)
        if w.hub.engine.dialect.name == "postgresql":
            async with w.hub.engine.connect() as x:
                tx = await x.begin()
                # Its rows first, as a writer that stamps and inserts before it takes the topic's lock...
                death, held = await record_death(x, w, person_id, stamped, publishing=False)
                await run_workflows  # ...W published and committed meanwhile (another connection)...
                for message in held:  # ...then its events, and its commit
                    await publish(x, message)
                await tx.commit()
        else:  # one writer: the state the race leaves, X stamped earlier and committed after W
            await run_workflows
            async with w.hub.engine.begin() as x:
                death, _ = await record_death(x, w, person_id, stamped)
        [published] = await workflow_events(w, person_id)
        assert await w.hub.dispatcher.run_once() >= 2  # W and the death's events, one batch
        await until_idle(w.hub.dispatcher.run_once)
        await w.pull_all()

        for org in w.subscribers:
            for m, p in of_person(w, org, person_id):
                if m["event_id"] == published.event_id:
                    assert p.view.get("ended_by") != "death" and p.view.get("entitled") is not False, \
                        f"{org} told the death under W ({m['event_type']}): {p.view}"
        ended = [p.view for m, p in of_person(w, BOB_ICB, person_id) if m["event_type"] == "s117-entitlement-ended"]
        assert ended and ended[-1]["ended_by"] == "death", \
            [m["event_type"] for m, _ in of_person(w, BOB_ICB, person_id)]
        assert "s117-entitlement-ended" not in {m["event_type"] for m, _ in of_person(w, BUCKS, person_id)}
        told = published.headers.get(HISTORY_CHANGES, "").split(",")
        assert death not in told and len(told) == 3


async def test_a_workflow_s_event_published_before_history_changes_was_kept_is_told_by_received_at(
        store_url: str, tmp_path: Path) -> None:
    """W as published before this version (`history_received_by` alone), the
    death received after it and dispatched in W's batch: W is told against the
    changes received by its header, as before, not the whole history."""
    async with world_on(store_url, tmp_path, _dispute_updates_granted()) as w:
        changes = materialise(died_during_dispute("D-old"), "older", seed=5)
        person_id, _ = await before_the_workflow(w, died_during_dispute("D-old")[:-1], "older")
        await until_idle(w.hub.workflow_consumer.run_once)
        [published] = await workflow_events(w, person_id)
        assert "history_received_by" in published.headers
        async with w.hub.engine.begin() as conn:
            await conn.execute(bus_messages.update().where(bus_messages.c.event_id == published.event_id).values(
                headers={k: v for k, v in published.headers.items() if k != HISTORY_CHANGES}))
        await w.post(changes[-1])
        assert await w.hub.dispatcher.run_once() >= 2  # W and the death's events, one batch
        await w.pull_all()
        under_w = [(org, p.view) for org in w.subscribers for m, p in of_person(w, org, person_id)
                   if m["event_id"] == published.event_id]
        assert under_w and all(v.get("ended_by") != "death" for _, v in under_w), under_w
        ended = [p.view for m, p in of_person(w, BOB_ICB, person_id) if m["event_type"] == "s117-entitlement-ended"]
        assert ended and ended[-1]["ended_by"] == "death"


async def waits_for_the_topic_lock(w: World, waiting: asyncio.Task[None]) -> None:
    """Until a PostgreSQL backend waits for an advisory lock (the topic's), or `waiting` ends."""
    async with w.hub.engine.connect() as conn:
        while not waiting.done():
            n = (await conn.execute(text("SELECT count(*) FROM pg_locks "
                                         "WHERE locktype = 'advisory' AND NOT granted"))).scalar_one()
            if n:
                return
            await asyncio.sleep(0.01)
    await waiting  # it ended without waiting: its error, if any
    raise AssertionError("the workflows published without waiting for the topic's lock")


async def test_a_change_committing_while_a_workflow_publishes_is_in_its_history(
        postgres_database_url: str, tmp_path: Path) -> None:
    """X (the death, stamped after the history's latest) holds the topic's
    publish lock, as an ingest batch does from its start, while the workflows
    publish W: they wait for it, and W, after X's events in the log, is told
    against the history with X. Every body ends holding its truth (W used to
    be told against the history received by its read's latest: without the
    death, which it then told every body after the death's messages had)."""
    agreements = agreements_yaml().replace("explanations]", "explanations, workflow]")
    async with world_on(postgres_database_url, tmp_path, agreements) as w:
        person_id, latest = await before_the_workflow(w, died_during_dispute("D-y")[:-1], "locked")
        async with w.hub.engine.connect() as x:
            tx = await x.begin()
            await lock_topic(x, EVENTS_TOPIC)
            death, _ = await record_death(x, w, person_id, datetime.now(UTC))
            workflows = asyncio.create_task(until_idle(w.hub.workflow_consumer.run_once))
            await waits_for_the_topic_lock(w, workflows)
            await tx.commit()
        await workflows
        [published] = await workflow_events(w, person_id)
        await until_idle(w.hub.dispatcher.run_once)
        await until_idle(w.hub.workflow_consumer.run_once)
        await until_idle(w.hub.dispatcher.run_once)
        await w.pull_all()

        await w.check_everyone_told_the_truth(person_id)
        under_w = [p.view for m, p in of_person(w, BOB_ICB, person_id) if m["event_id"] == published.event_id]
        assert under_w and under_w[-1]["ended_by"] == "death", under_w
        assert death in published.headers.get(HISTORY_CHANGES, "").split(",")


class _ChangeBeforePublishing:
    """The hub's engine, a change recorded by the real ingest just before the
    next transaction begins: for the review scanner, after its scan read the
    history and before it publishes."""

    def __init__(self, engine: Any, record: Callable[[], Awaitable[None]]) -> None:
        self._engine, self._record = engine, record
        self.dialect = engine.dialect

    def connect(self) -> Any:
        return self._engine.connect()

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        record, self._record = self._record, None
        if record is not None:
            await record()
        async with self._engine.begin() as conn:
            yield conn


async def test_a_change_committed_between_the_review_scan_and_its_reminder_is_in_the_reminder_s_history(
        store_hub) -> None:  # noqa: ANN001
    """Entitled, the first review due within the notice; the scan reads the
    history, then the person's death is recorded, then the scanner publishes.
    It reads the history again under the topic's lock: dead, nobody is
    reminded, and the council holds the death (a reminder published against
    the scan's read came after the death in the log, and told the council,
    by the latest `received_at` of that read, the position without it)."""
    hub, http = store_hub.hub, store_hub.http
    council = store_hub.keys["E06000060"]
    r = await http.post("/v1/subscriptions", headers={"X-API-Key": council}, json={"channel": "feed"})
    assert r.status_code == 201, r.text
    subscription_id = r.json()["subscription_id"]
    changes, left, person_id = await left_hospital_80_days_ago(http, store_hub.keys["trust"], 11, "scan")
    await until_idle(hub.dispatcher.run_once)

    died = {**changes[0], "source_message_id": "scan-died", "change_type": "died",
            "effective_date": (left + timedelta(days=10)).isoformat()}
    for field in ("legal_status_code", "hospital_ods", "gp_practice_ods", "residence_la_gss"):
        died.pop(field)

    async def record() -> None:
        r = await http.post("/v1/register-changes", headers={"X-API-Key": store_hub.keys["trust"]}, json=died)
        assert r.status_code == 202, r.text

    scanner = ReviewScanner(_ChangeBeforePublishing(hub.engine, record), hub.ref,  # type: ignore[arg-type]
                            hub.agreements, notice_days=14)
    published = await scanner.run_once()
    await until_idle(hub.dispatcher.run_once)

    feed = (await http.get(f"/v1/feeds/{subscription_id}", headers={"X-API-Key": council})).json()
    told = [(i["event_type"], read_position(i["message"])) for i in feed["items"]
            if read_position(i["message"]).person_id == person_id]
    held = max(told, key=lambda t: t[1].version)[1].view
    assert held.get("ended_by") == "death" and held["entitled"] is False, \
        [(t, p.version, p.view.get("entitled")) for t, p in told]
    assert published == 0 and "s117-review-due" not in {t for t, _ in told}
