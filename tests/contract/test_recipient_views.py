"""Every body ends up told the truth, whatever order changes arrive in.

Real ingest (IngestService through the REST API, in process) and the real
dispatcher on SQLite; each organisation is a fake subscriber pulling its feed
(GET /v1/feeds/{id}) and keeping, per person, the position of the highest
version it has seen, exactly as the README tells receivers to. After all the
changes of a generated history arrive, in any order and with dispatch
interleaved anyhow, each organisation's position equals the truth for it
(hub/domain/views.py over the whole history), and an organisation that was
ever told anything of the person holds the truth too (`roles: []` when it is
no longer involved): none keeps a position it was never corrected on.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.api.app import create_app
from hub.bootstrap import Hub
from hub.clients import add_client
from hub.codec import from_jsonable
from hub.domain.model import RegisterChange
from hub.domain.rules import evaluate
from hub.domain.views import NOT_INVOLVED, views_for
from hub.fhir.messages import read_position
from hub.settings import Settings
from hub.store.schema import consumer_offsets, deliveries, including_retracted, register_changes
from hub.domain.dates import england_day
from sqlalchemy import func, select
from tests.histories import (
    BOB_ICB, BUCKS, HOSPITALS, HW_ICB, ORGS, WORCS, agreements_yaml, histories, late_correction_history, materialise,
)

_runs = itertools.count()


class Subscriber:
    """An organisation pulling its feed: highest version per person wins."""

    def __init__(self, org: str, key: str, subscription_id: str) -> None:
        self.org, self.key, self.subscription_id = org, key, subscription_id
        self.cursor = 0
        self.positions: dict[str, tuple[int, dict[str, Any]]] = {}
        self.messages: list[dict[str, Any]] = []  # every item, in feed order

    async def pull(self, http: httpx.AsyncClient) -> None:
        while True:
            r = await http.get(f"/v1/feeds/{self.subscription_id}", params={"after": self.cursor},
                               headers={"X-API-Key": self.key})
            assert r.status_code == 200, r.text
            body = r.json()
            for item in body["items"]:
                self.messages.append(item)
                position = read_position(item["message"])
                assert position is not None, "every message carries the recipient's position"
                held = self.positions.get(position.person_id)
                if held is None or position.version > held[0]:
                    self.positions[position.person_id] = (position.version, position.view)
            self.cursor = body["next_cursor"]
            if not body["more"]:
                return


class World:
    def __init__(self, http: httpx.AsyncClient, hub: Hub, trust_key: str, subscribers: dict[str, Subscriber]) -> None:
        self.http, self.hub, self.trust_key, self.subscribers = http, hub, trust_key, subscribers
        self.writers: dict[str, str] = {}  # org code -> its writing key (key_of)

    async def post(self, change: dict[str, Any]) -> dict[str, Any]:
        key = self.trust_key
        if "_by" in change:  # a body's own part of a joint decision (tests/histories.py materialise)
            change = dict(change)
            key = await self.key_of(change.pop("_by"))
        r = await self.http.post("/v1/register-changes", headers={"X-API-Key": key}, json=change)
        # A change that would end aftercare while a dispute is open is held (Worcs 8.5, hub/workflows):
        # not recorded, so the truth (built from what is recorded) is still the measure.
        held = r.status_code == 409 and r.json().get("rule") == "held-open-dispute"
        assert r.status_code == 202 or held, r.text
        return r.json()

    async def key_of(self, org: str) -> str:
        """A writing key of `org` (as the operator: the access policy is tested in tests/security), made once."""
        if org not in self.writers:
            kind = "council" if org[0] == "E" else "trust" if org in HOSPITALS else "icb"
            self.writers[org] = (await add_client(self.hub.engine, org, org, kind,
                                                  ["register:write", "hub:admin"]))[1]
        return self.writers[org]

    async def dispatch(self) -> None:
        while await self.hub.dispatcher.run_once():
            pass

    async def pull_all(self) -> None:
        for sub in self.subscribers.values():
            await sub.pull(self.http)

    async def truth(self, person_id: str) -> dict[str, dict[str, Any]]:
        async with self.hub.engine.connect() as conn:
            rows = (await conn.execute(including_retracted(select(register_changes.c.canonical)
                                       .where(register_changes.c.person_id == person_id)))).all()
        changes = [from_jsonable(RegisterChange, r.canonical) for r in rows]
        today = england_day()
        status = evaluate(person_id, changes, self.hub.ref, self.hub.agreements, today)
        return views_for(status, ORGS, lambda org: self.hub.sharing.field_groups_for(org, today))

    async def check_everyone_told_the_truth(self, person_id: str) -> None:
        truth = await self.truth(person_id)
        for org, sub in self.subscribers.items():
            expected = truth.get(org, NOT_INVOLVED)
            held = sub.positions.get(person_id)
            if held is None:
                assert not expected["roles"], f"{org} is involved ({expected['roles']}) but was never told"
                continue
            assert held[1] == expected, f"{org} holds v{held[0]} {held[1]}, the truth is {expected}"
            versions = [read_position(m["message"]).version for m in sub.messages
                        if read_position(m["message"]).person_id == person_id]
            assert versions == sorted(set(versions)), f"{org}: versions not increasing in delivery order {versions}"


async def _world(tmp_path: Path, agreements_text: str | None = None) -> tuple[World, Any]:
    agreements = tmp_path / "agreements.yaml"
    agreements.write_text(agreements_text or agreements_yaml())
    settings_ = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
                         data_key_file=tmp_path / "data.key", sharing_agreements_path=agreements, run_workers=False)
    app = create_app(settings_)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    hub: Hub = app.state.hub
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub")
    # Arbitrary histories in any arrival order (moves before the detention, two trusts'
    # hospitals): written as the hub operator; the access policy is tested in tests/security.
    trust_key = (await add_client(hub.engine, "Trust", "RNU", "trust", ["register:write", "s117:read", "hub:admin"]))[1]
    subscribers = {}
    for org in ORGS:
        kind = "council" if org[0] == "E" else "icb"
        key = (await add_client(hub.engine, org, org, kind, ["subscriptions:write", "s117:read"]))[1]
        r = await http.post("/v1/subscriptions", headers={"X-API-Key": key}, json={"channel": "feed"})
        assert r.status_code == 201, r.text
        subscribers[org] = Subscriber(org, key, r.json()["subscription_id"])

    async def close() -> None:
        await http.aclose()
        await lifespan.__aexit__(None, None, None)

    return World(http, hub, trust_key, subscribers), close


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, World]]:
    loop = asyncio.new_event_loop()
    w, close = loop.run_until_complete(_world(tmp_path))
    try:
        yield loop, w
    finally:
        loop.run_until_complete(close())
        loop.close()


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int], list[bool]]:
    history = draw(histories())
    order = draw(st.permutations(range(len(history))))
    dispatch_after = draw(st.lists(st.booleans(), min_size=len(history), max_size=len(history)))
    return history, order, dispatch_after


def test_every_organisation_ends_up_holding_the_truth_whatever_the_arrival_order(world) -> None:  # noqa: ANN001
    loop, w = world

    @given(arrivals())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: tuple[list[dict[str, Any]], list[int], list[bool]]) -> None:
        history, order, dispatch_after = case
        n = next(_runs)
        changes = materialise(history, f"prop{n}", seed=n)

        async def run() -> None:
            person_id = None
            for i, dispatch in zip(order, dispatch_after, strict=True):
                person_id = (await w.post(changes[i])).get("person_id", person_id)
                if dispatch and person_id:
                    await w.dispatch()
                    await w.pull_all()
                    # Whenever the hub is quiet, everyone holds the truth of
                    # what has arrived so far: nobody is left uncorrected.
                    await w.check_everyone_told_the_truth(person_id)
            await w.dispatch()
            await w.pull_all()
            await w.check_everyone_told_the_truth(person_id)

        loop.run_until_complete(run())

    check()


def test_a_late_history_corrects_the_commissioner_told_first(world) -> None:  # noqa: ANN001
    """The README's worked example: the re-detention is heard first, so BOB
    ICB is told it is responsible; the older history then shows H&W ICB was
    already funding aftercare (Worcs 4.4.2), so BOB receives a correction
    naming the event it supersedes, and H&W ICB hears it is responsible."""
    loop, w = world
    changes = materialise(late_correction_history(), "late", seed=1)

    async def run() -> None:
        redetention = changes[-1]
        person_id = (await w.post(redetention))["person_id"]
        await w.dispatch()
        await w.pull_all()
        bob = w.subscribers[BOB_ICB]
        assert bob.positions[person_id][1]["roles"] == ["responsible-commissioner"]
        first = bob.messages[-1]
        for change in changes[:-1]:
            await w.post(change)
        await w.dispatch()
        await w.pull_all()
        corrections = [m for m in bob.messages if m["event_type"] == "s117-notification-corrected"]
        assert corrections, [m["event_type"] for m in bob.messages]
        position = read_position(corrections[0]["message"])
        assert position.supersedes == first["event_id"]
        assert position.view == {"roles": []}
        # Corrected by the first of the older changes to contradict it (the March detention, from
        # Worcestershire: H&W ICB by the GP), as when each change is dispatched in its turn, however
        # the backlog's batches fall.
        assert "no longer the responsible NHS commissioner" in position.reason and "(QGH)" in position.reason
        hw = w.subscribers[HW_ICB].positions[person_id][1]
        assert hw["roles"] == ["responsible-commissioner"] and hw["entitled"] is True
        bucks = w.subscribers[BUCKS].positions[person_id][1]
        assert bucks["responsible_council"] == BUCKS and bucks["responsible_commissioner"] == HW_ICB
        assert w.subscribers[WORCS].positions[person_id][1] == {"roles": []}
        await w.check_everyone_told_the_truth(person_id)
        # Replaying the whole log (the dispatcher's offset back to the start, as
        # after a crash or a Kafka redelivery) queues nothing and changes nothing.
        before = {org: dict(s.positions) for org, s in w.subscribers.items()}
        async with w.hub.engine.begin() as conn:
            deliveries_before = (await conn.execute(select(func.count()).select_from(deliveries))).scalar_one()
            await conn.execute(consumer_offsets.update().where(consumer_offsets.c.group_id == "dispatcher")
                               .values(next_offset=0))
        assert await w.hub.dispatcher.run_once() > 0
        await w.dispatch()
        await w.pull_all()
        async with w.hub.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(deliveries))).scalar_one() == deliveries_before
        assert {org: dict(s.positions) for org, s in w.subscribers.items()} == before

    loop.run_until_complete(run())


def test_the_same_history_in_every_order_gives_every_body_the_same_final_position(world) -> None:  # noqa: ANN001
    """Twenty of the 120 orders of the fixed history (every sixth), one person each."""
    loop, w = world
    history = late_correction_history()

    async def run() -> None:
        finals = set()
        for k, order in enumerate(itertools.permutations(range(len(history)))):
            if k % 6:  # every sixth order keeps the suite fast; all first elements are covered
                continue
            changes = materialise(history, f"perm{k}", seed=1000 + k)
            person_id = None
            for i in order:
                person_id = (await w.post(changes[i])).get("person_id", person_id)
            await w.dispatch()
            await w.pull_all()
            await w.check_everyone_told_the_truth(person_id)
            finals.add(repr(sorted((org, s.positions.get(person_id, (0, NOT_INVOLVED))[1])
                                   for org, s in w.subscribers.items())))
        assert len(finals) == 1

    loop.run_until_complete(run())


def test_the_history_posted_newest_first_tells_the_councils_transfer_and_opens_no_other(world) -> None:  # noqa: ANN001
    """Posted newest first, the older history shows the September re-detention
    moved the council from Worcestershire to Buckinghamshire (Worcs 4.3.3) and
    kept H&W ICB (Worcs 4.4.2). Worcestershire, which held the duty from May to
    September, hears of that transfer (it had heard nothing of the person); the
    transfer cases are the ones the history holds, as in date order: the
    council's, none for the commissioner BOB ICB was first wrongly named."""
    loop, w = world
    changes = materialise(late_correction_history(), "newest", seed=3)

    async def run() -> None:
        person_id = None
        for change in reversed(changes):
            person_id = (await w.post(change)).get("person_id", person_id)
            await w.dispatch()
            await w.pull_all()
        await w.check_everyone_told_the_truth(person_id)
        worcs = [m for m in w.subscribers[WORCS].messages if read_position(m["message"]).person_id == person_id]
        transferred = [m for m in worcs if m["event_type"] == "s117-responsibility-transferred"]
        assert transferred, [m["event_type"] for m in worcs]
        assert read_position(transferred[-1]["message"]).view == {"roles": []}
        while await w.hub.workflow_consumer.run_once():  # the workflows' consumer opens the cases (no workers here)
            pass
        r = await w.http.get("/v1/transfers", headers={"X-API-Key": w.trust_key})
        assert r.status_code == 200, r.text
        cases = [c for c in r.json()["items"] if c["person_id"] == person_id]
        assert [(c["role"], c["outgoing"], c["incoming"]) for c in cases] == [("council", WORCS, BUCKS)], cases

    loop.run_until_complete(run())
