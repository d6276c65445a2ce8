"""Order independence of what bodies are told, for the joint discharge, the
dispatcher's backlog rule (`told_later`) and withdrawn transfers.

The hub's promise (README "What a receiver must do"): whatever order changes
arrive in and however the dispatcher's batches fall, every organisation's
highest-version position equals its truth, each fact is told once (one event
id per fact per body), and nothing is told that the body's agreement does not
grant. Through the real ingest (REST, in process), the real dispatcher and
the pull feeds on SQLite, reusing tests/contract/test_recipient_views.py's
world (`World`, `Subscriber`, `check_everyone_told_the_truth`).

Dispatch modes: each message its own batch, dispatched after every post
("each"); everything posted, then one backlog ("backlog"); everything
posted, then batches of `k` messages ("by-k"); and posts interleaved with
batches of `k` ("mixed-k"). Orders are a bounded, seeded sample of the
permutations, so the module stays well under a minute.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hub.fhir.messages import read_position
from hub.store.schema import bus_messages, workflow_cases
from tests.contract.test_recipient_views import World, _world
from tests.histories import (
    BOB_ICB, BUCKS, GP, OXON, WORCS, agreements_yaml, histories, late_correction_history, materialise,
)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, World]]:
    """test_recipient_views' world, its agreements granting the `workflow` field group too (the Task)."""
    loop = asyncio.new_event_loop()
    text = agreements_yaml().replace("explanations]", "explanations, workflow]")
    w, close = loop.run_until_complete(_world(tmp_path, text))
    try:
        yield loop, w
    finally:
        loop.run_until_complete(close())
        loop.close()

_runs = itertools.count()

# Event types that tell a body one fact each: two of them carrying the same
# position, one after the other, is one fact told twice under two event ids.
FACTS = ("s117-entitlement-started", "s117-entitlement-ended", "s117-moved-out-of-area",
         "s117-responsibility-transferred", "s117-dispute-raised", "s117-dispute-resolved")


def of_person(w: World, org: str, person_id: str) -> list[tuple[dict[str, Any], Any]]:
    """`org`'s feed items about `person_id`, with their positions, in feed order."""
    out = []
    for m in w.subscribers[org].messages:
        p = read_position(m["message"])
        if p is not None and p.person_id == person_id:
            out.append((m, p))
    return out


def check_each_fact_told_once(w: World, person_id: str, where: str) -> None:
    for org in w.subscribers:
        items = of_person(w, org, person_id)
        ids = [m["event_id"] for m, _ in items]
        assert len(ids) == len(set(ids)), f"{where}: {org} got one event id twice: {ids}"
        held: dict[str, Any] | None = None
        last_type: str | None = None
        for m, p in sorted(items, key=lambda i: i[1].version):
            kind = m["event_type"]
            if kind in FACTS and kind == last_type and p.view == held:
                raise AssertionError(f"{where}: {org} told {kind} twice for one fact (v{p.version}): "
                                     f"{[(i[0]['event_type'], i[1].version) for i in items]}")
            if p.view != held:
                last_type = kind
            held = p.view


async def drain(w: World, size: int | None, workflows: bool = False) -> None:
    """Dispatch (batches of `size`, None: whatever is waiting) until nothing is
    left; with `workflows`, the workflows' consumer between batches (it opens
    and withdraws transfer cases, publishing `s117-transfer-updated`)."""
    while True:
        n = await (w.hub.dispatcher.run_once(size) if size else w.hub.dispatcher.run_once())
        if workflows:
            n += await w.hub.workflow_consumer.run_once(size or 100)
        if not n:
            return


async def play(w: World, changes: list[dict[str, Any]], order: tuple[int, ...], mode: str,
               workflows: bool | str = False, after_each: Any = None) -> str:
    """Post `changes` in `order`, dispatching as `mode` says; pulls every feed at the end."""
    person_id = None
    size = int(mode.rsplit("-", 1)[1]) if "-" in mode else (1 if mode == "each" else None)
    for step, i in enumerate(order):
        person_id = (await w.post(changes[i])).get("person_id", person_id)
        if workflows == "ahead":  # the workflows' consumer keeps up while the dispatcher is behind
            while await w.hub.workflow_consumer.run_once():
                pass
        if mode == "each" or (mode.startswith("mixed") and step % 2):
            await drain(w, size, workflows)
            await w.pull_all()
            if after_each is not None:
                await after_each(person_id)
    await drain(w, size, workflows)
    await w.pull_all()
    assert person_id is not None
    return person_id


def orders(n: int, k: int, seed: int) -> list[tuple[int, ...]]:
    """`k` of the n! arrival orders: in order, newest first, and a seeded sample of the others."""
    every = list(itertools.permutations(range(n)))
    first, last = every[0], every[-1]
    rest = random.Random(seed).sample(every[1:-1], k - 2)
    return [first, last, *rest]


# ------------------------------------------------------------ joint discharge

DECISION = {"council_agrees": True, "commissioner_agrees": True, "reasons": ["no-longer-needs-services"],
            "participants": ["care coordinator"], "person_involved": True}


def joint_history(council_on: str, icb_on: str, nhs_by: str = BOB_ICB) -> list[dict[str, Any]]:
    """Detained from Buckinghamshire (BOB ICB by the GP), left hospital in May
    (entitled), moved to Oxfordshire in July (host), a review asked for in
    August; the council and BOB ICB each record their own agreement to
    discharge from s117 on the days given (before the move and review: late).
    `nhs_by`: the NHS side's body, BOB ICB or the trust of the detention acting
    for it (Worcs 16.1)."""
    return [
        {"effective_date": "2024-03-04", "change_type": "detained", "legal_status_code": "03",
         "hospital_ods": "RNU", "residence_la_gss": BUCKS, "gp_practice_ods": GP[BUCKS]},
        {"effective_date": "2024-05-01", "change_type": "left-hospital"},
        {"effective_date": "2024-07-01", "change_type": "moved", "residence_la_gss": OXON},
        {"effective_date": "2024-08-01", "change_type": "review-requested"},
        {"effective_date": council_on, "change_type": "s117-discharge-decided", "_by": BUCKS, "discharge": DECISION},
        {"effective_date": icb_on, "change_type": "s117-discharge-decided", "_by": nhs_by, "discharge": DECISION},
    ]


JOINT_DATES = [("2024-09-02", "2024-09-02", BOB_ICB),  # the same day, after everything else
               ("2024-09-02", "2024-09-10", BOB_ICB),  # the council first
               ("2024-09-10", "2024-09-02", BOB_ICB),  # the ICB first
               ("2024-06-10", "2024-06-20", BOB_ICB),  # both before the move and the review: late whenever
               ("2024-06-20", "2024-06-10", "RNU")]    # those came first; the care trust for the ICB
JOINT_MODES = ["each", "backlog", "by-2", "by-3", "mixed-2"]


async def logged_ended(w: World, person_id: str) -> bool:
    """Whether the event log holds an `s117-entitlement-ended` of the person."""
    async with w.hub.engine.connect() as conn:
        rows = (await conn.execute(select(bus_messages.c.headers).where(
            bus_messages.c.topic == "s117.events", bus_messages.c.key == person_id))).all()
        await conn.rollback()
    return any((r.headers or {}).get("event_type") == "s117-entitlement-ended" for r in rows)


def test_joint_discharge_ends_entitlement_once_for_each_responsible_body_in_any_order(world) -> None:  # noqa: ANN001
    loop, w = world
    runs: Counter[str] = Counter()

    async def run() -> None:
        for (council_on, icb_on, nhs_by), mode in itertools.product(JOINT_DATES, JOINT_MODES):
            history = joint_history(council_on, icb_on, nhs_by)
            for order in orders(len(history), 3, seed=zlib.crc32(f"{council_on}{icb_on}{mode}".encode())):
                n = next(_runs)
                changes = materialise(history, f"joint{n}", seed=5000 + n)
                where = f"{council_on}/{icb_on} by {nhs_by} {mode} order {order}"

                async def never_ended_while_pending(person_id: str) -> None:
                    truth = await w.truth(person_id)
                    if truth.get(BUCKS, {}).get("entitled"):
                        for org in w.subscribers:
                            ended = [m for m, _ in of_person(w, org, person_id)
                                     if m["event_type"] == "s117-entitlement-ended"]
                            assert not ended, f"{where}: {org} told entitlement-ended while pending"

                person_id = await play(w, changes, order, mode, after_each=never_ended_while_pending)
                await w.check_everyone_told_the_truth(person_id)
                check_each_fact_told_once(w, person_id, where)
                end = max(council_on, icb_on)
                for org in (BUCKS, BOB_ICB):
                    told = of_person(w, org, person_id)
                    ended = [p for m, p in told if m["event_type"] == "s117-entitlement-ended"]
                    # Once, if the body was told the person was entitled or the hub recorded the end
                    # as news (an `s117-entitlement-ended` event, routed to the responsible bodies). None
                    # if the end was in the history before any entitlement was (the detention heard
                    # last): the body's first position says it ended, and when.
                    expected = 1 if any(p.view.get("entitled") for _, p in told) or await logged_ended(w, person_id) else 0
                    assert len(ended) == expected, \
                        f"{where}: {org} got {len(ended)} entitlement-ended: " + repr(
                            [(m["event_type"], p.view.get("entitled")) for m, p in told])
                    final = max(told, key=lambda t: t[1].version)[1].view
                    assert (final["entitled"], final["entitlement_end"], final["ended_by"]) == (False, end, "discharge")
                    for p in ended:
                        assert p.view["entitlement_end"] == end, f"{where}: {org} {p.view}"
                    runs["told-ended" if ended else "first-told-ended"] += 1
                runs[mode] += 1

    loop.run_until_complete(run())
    assert sum(runs[m] for m in JOINT_MODES) == len(JOINT_DATES) * len(JOINT_MODES) * 3
    assert runs["told-ended"] and runs["first-told-ended"], runs


# ------------------------------------------------------- backlog: told_later


def test_a_backlog_with_late_history_in_batches_of_every_size_tells_each_fact_once(world) -> None:  # noqa: ANN001
    """The README's worked example (tests/histories.py `late_correction_history`)
    in a sample of its 120 arrival orders, all posted before the dispatcher
    runs, then dispatched in batches of every size from 1 to the whole backlog."""
    loop, w = world

    async def run() -> None:
        history = late_correction_history()
        for order in orders(len(history), 5, seed=117):
            sizes = None
            size = 1
            while sizes is None or size <= sizes:
                n = next(_runs)
                changes = materialise(history, f"told{n}", seed=7000 + n)
                person_id = await play(w, changes, order, f"by-{size}")
                if sizes is None:  # the backlog's length: as many messages as this first run dispatched
                    async with w.hub.engine.connect() as conn:
                        rows = (await conn.execute(select(bus_messages.c.key)
                                                   .where(bus_messages.c.topic == "s117.events"))).all()
                        await conn.rollback()
                    sizes = sum(1 for r in rows if r.key == person_id)
                where = f"order {order} batches of {size}"
                await w.check_everyone_told_the_truth(person_id)
                check_each_fact_told_once(w, person_id, where)
                size += 1

    loop.run_until_complete(run())


# ------------------------------------------------------- withdrawn transfers

START = "2025-01-06"


def withdrawn_history() -> list[dict[str, Any]]:
    """tests/unit/test_transfer_withdrawn.py's: detained in Buckinghamshire,
    left hospital, moved to Worcestershire on day 150, "re-detained" from
    there on day 200 (heard alone, a hand-over to Worcestershire, Worcs
    4.3.3); the late change (detained again in Buckinghamshire on day 140,
    still in hospital on day 200) shows there was none."""
    from datetime import date, timedelta

    def on(days: int) -> str:
        return (date.fromisoformat(START) + timedelta(days=days)).isoformat()

    return [
        {"effective_date": on(0), "change_type": "detained", "legal_status_code": "03", "hospital_ods": "RNU",
         "residence_la_gss": BUCKS, "gp_practice_ods": GP[BUCKS]},
        {"effective_date": on(90), "change_type": "left-hospital", "hospital_ods": "RNU"},
        {"effective_date": on(150), "change_type": "moved", "residence_la_gss": WORCS},
        {"effective_date": on(200), "change_type": "detained", "legal_status_code": "03", "hospital_ods": "R1A",
         "residence_la_gss": WORCS, "_by": "R1A"},
        {"effective_date": on(140), "change_type": "detained", "legal_status_code": "03", "hospital_ods": "RNU",
         "residence_la_gss": BUCKS},
    ]


async def transfer_cases(w: World, person_id: str) -> list[Any]:
    async with w.hub.engine.connect() as conn:
        rows = (await conn.execute(select(workflow_cases.c.case_id, workflow_cases.c.state)
                                   .where(workflow_cases.c.person_id == person_id,
                                          workflow_cases.c.kind == "transfer"))).all()
        await conn.rollback()
    return rows


def task_of(item: dict[str, Any], case_id: str) -> dict[str, Any] | None:
    """The FHIR Task of a transfer case in a feed item's message, if it is `case_id`'s."""
    for entry in item["message"].get("entry", []):
        r = entry["resource"]
        if r["resourceType"] == "Task" and case_id in orjson.dumps(r).decode():
            return r
    return None


def test_a_transfer_late_history_shows_never_happened_ends_withdrawn_or_never_opens(world) -> None:  # noqa: ANN001
    loop, w = world

    async def run() -> None:
        history = withdrawn_history()
        opened = Counter()
        for mode, workflows in [("each", True), ("backlog", True), ("by-1", True), ("by-2", True), ("by-3", True),
                                ("mixed-2", True), ("backlog", "ahead"), ("by-2", "ahead"), ("by-3", "ahead")]:
            for order in orders(len(history), 6, seed=zlib.crc32(f"{mode}{workflows}".encode())):
                n = next(_runs)
                changes = materialise(history, f"wd{n}", seed=9000 + n)
                person_id = await play(w, changes, order, mode, workflows=workflows)
                where = f"{mode} workflows {workflows} order {order}"
                await w.check_everyone_told_the_truth(person_id)
                check_each_fact_told_once(w, person_id, where)
                cases = await transfer_cases(w, person_id)
                assert all(c.state == "withdrawn" for c in cases), f"{where}: {cases}"
                opened[bool(cases)] += 1
                for case in cases:
                    for org in (BUCKS, WORCS):
                        about = [t for t in (task_of(m, case.case_id) for m, _ in of_person(w, org, person_id)
                                             if m["event_type"] == "s117-transfer-updated") if t is not None]
                        assert about, f"{where}: {org} never told of case {case.case_id}"
                        last = about[-1]
                        assert (last["status"], last["businessStatus"]["text"]) == ("cancelled", "withdrawn"), \
                            f"{where}: {org}'s last message of {case.case_id}: {[t['businessStatus'] for t in about]}"
        assert opened[True] and opened[False], opened  # both kinds of order were met

    loop.run_until_complete(run())


# ------------------------------------------------ generated histories, batched


@st.composite
def batched_arrivals(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int], list[bool], int]:
    history = draw(histories())
    order = draw(st.permutations(range(len(history))))
    dispatch_after = draw(st.lists(st.booleans(), min_size=len(history), max_size=len(history)))
    return history, order, dispatch_after, draw(st.sampled_from([1, 2, 3, 100]))


def test_generated_histories_in_any_order_and_batches_tell_each_fact_once(world) -> None:  # noqa: ANN001
    """test_recipient_views' generated histories (joint decisions by each body,
    disputes, re-detentions, deaths, moves), posted in any order with the
    dispatcher run in batches of 1, 2, 3 or all between some of them."""
    loop, w = world

    @given(batched_arrivals())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(case: tuple[list[dict[str, Any]], list[int], list[bool], int]) -> None:
        history, order, dispatch_after, size = case
        n = next(_runs)
        changes = materialise(history, f"gen{n}", seed=n)

        async def run() -> None:
            person_id = None
            for i, dispatch in zip(order, dispatch_after, strict=True):
                person_id = (await w.post(changes[i])).get("person_id", person_id)
                if dispatch and person_id:
                    await drain(w, size, workflows=True)
            await drain(w, size, workflows=True)
            await w.pull_all()
            await w.check_everyone_told_the_truth(person_id)
            check_each_fact_told_once(w, person_id, f"order {order} batches of {size}")
            for case in await transfer_cases(w, person_id):
                assert case.state != "overdue", case

        loop.run_until_complete(run())

    check()


# ------------------------------------------------------------ found defects

SIZES = [None, 1, 2, 3]  # the whole backlog in one batch, or batches of 1, 2, 3 messages


def test_a_backlog_tells_a_narrow_agreement_no_more_than_each_change_dispatched_in_its_turn(tmp_path: Path) -> None:
    """Buckinghamshire may hear only that an entitlement started
    (test_recipient_views_sharing.py's agreement and history: entitled, a
    dispute raised and resolved, then discharged by a joint decision).
    Dispatched as each change arrives, it holds "entitled" and is told nothing
    more. Posted first and dispatched as a backlog, the detention's
    `s117-entitlement-started` carried the whole history's position: entitled
    false, ended by discharge on 2024-09-02, a fact its agreement does not
    grant, told under an event that says the entitlement started. Each message
    carries the position as the hub held it once its change was recorded."""
    from tests.contract.test_recipient_views_sharing import NARROW, _history

    async def run() -> None:
        for size in SIZES:
            (tmp_path / f"b{size}").mkdir()
            w, close = await _world(tmp_path / f"b{size}", NARROW)
            try:
                person_id = None
                for change in materialise(_history(), f"narrow{size}", seed=7):
                    person_id = (await w.post(change)).get("person_id", person_id)
                await drain(w, size)
                await w.pull_all()
                told = [(m["event_type"], read_position(m["message"]).view) for m in w.subscribers[BUCKS].messages]
                assert [t for t, _ in told] == ["s117-entitlement-started"], (size, told)
                view = told[0][1]
                assert view["entitled"] is True and "entitlement_end" not in view and "ended_by" not in view, (size, view)
            finally:
                await close()

    asyncio.run(run())


def dispute_outcome_first() -> list[dict[str, Any]]:
    """Entitled (detained from Buckinghamshire, left hospital); Buckinghamshire's
    record of a council dispute's outcome (one of two parties: the dispute is
    open until both record it) arrives before the dispute's raise."""
    dispute = {"dispute_id": "D-first", "kind": "council", "parties": [BUCKS, WORCS]}
    return [
        {"effective_date": "2024-03-04", "change_type": "detained", "legal_status_code": "03",
         "hospital_ods": "RNU", "residence_la_gss": BUCKS, "gp_practice_ods": GP[BUCKS]},
        {"effective_date": "2024-05-01", "change_type": "left-hospital"},
        {"effective_date": "2024-07-01", "change_type": "dispute-resolved", "_by": BUCKS,
         "dispute": {**dispute, "resolved_responsible": BUCKS}},
        {"effective_date": "2024-06-03", "change_type": "dispute-raised", "dispute": dispute},
    ]


def test_a_dispute_a_party_s_outcome_opened_is_not_told_raised_again_by_its_raise(world) -> None:  # noqa: ANN001
    """The outcome recorded by one party opens the dispute (hub/domain/rules/engine.py
    `_on_dispute_resolved`): both parties are told they are parties to it
    (`s117-dispute-raised`). The raise arriving after it changes nobody's
    position; its `s117-dispute-raised`, routed to the parties, told them the
    same fact again under another event id."""
    loop, w = world

    async def run() -> None:
        for mode in ["each", "backlog", "by-1", "by-2"]:
            n = next(_runs)
            changes = materialise(dispute_outcome_first(), f"first{n}", seed=300 + n)
            person_id = await play(w, changes, (0, 1, 2, 3), mode)
            await w.check_everyone_told_the_truth(person_id)
            for org in (BUCKS, WORCS):
                raised = [m["event_id"] for m, _ in of_person(w, org, person_id)
                          if m["event_type"] == "s117-dispute-raised"]
                # Once to Worcestershire, first involved by it; Buckinghamshire, responsible, heard
                # it with the outcome's own `s117-register-change-recorded` (its position naming the
                # dispute), so once at most.
                assert len(raised) == (1 if org == WORCS else len(raised)) <= 1, \
                    (mode, org, [m["event_type"] for m, _ in of_person(w, org, person_id)])
            check_each_fact_told_once(w, person_id, mode)

    loop.run_until_complete(run())


@pytest.fixture
def narrow_world(tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, World]]:
    """Buckinghamshire granted only `s117-entitlement-started` with `responsibility`
    (test_recipient_views_sharing.py's NARROW); every other body everything."""
    from tests.contract.test_recipient_views_sharing import NARROW

    loop = asyncio.new_event_loop()
    w, close = loop.run_until_complete(_world(tmp_path, NARROW))
    try:
        yield loop, w
    finally:
        loop.run_until_complete(close())
        loop.close()


GRANTED = {"s117-entitlement-started", "s117-notification-corrected"}  # a rectification: any agreement


def test_a_narrow_agreement_is_told_the_same_whatever_the_batches(narrow_world) -> None:  # noqa: ANN001
    """One generated history posted twice in the same order, as two people:
    the first dispatched as each change arrives, the second as a backlog in
    batches of 1, 2, 3 or all. Buckinghamshire, granted only that an
    entitlement started, is told only that (or a correction) and ends holding
    the same position for both; every body granted everything holds the truth."""
    loop, w = narrow_world

    @given(batched_arrivals())
    # Found: the GP change (before the detention) arrives after the discharge; a CTO after it. In
    # batches the GP change's messages left the correction (H&W ICB, not BOB) to the CTO's, which is
    # in its turn: a transfer, which Buckinghamshire's agreement does not grant. It kept BOB ICB.
    @example(([{"effective_date": "2024-02-03", "change_type": "gp-changed", "gp_practice_ods": "M81001"},
               {"effective_date": "2024-03-04", "change_type": "detained", "legal_status_code": "02",
                "hospital_ods": "RNU", "residence_la_gss": BUCKS},
               {"effective_date": "2024-03-04", "change_type": "section-changed", "legal_status_code": "03"},
               {"effective_date": "2024-03-04", "change_type": "left-hospital"},
               {"effective_date": "2024-03-04", "change_type": "cto-started"}],
              [1, 2, 3, 0, 4], [False] * 5, 1))
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(case: tuple[list[dict[str, Any]], list[int], list[bool], int]) -> None:
        history, order, _, size = case
        n = next(_runs)
        changes = materialise(history, f"na{n}", seed=n)
        again = materialise(history, f"nb{n}", seed=100_000 + n)

        async def run() -> None:
            alone = await play(w, changes, tuple(order), "each")
            backlog = await play(w, again, tuple(order), f"by-{size}")
            bucks = w.subscribers[BUCKS]
            for person_id in (alone, backlog):
                told = {m["event_type"] for m, _ in of_person(w, BUCKS, person_id)}
                assert told <= GRANTED, (size, told)
            held = [bucks.positions.get(p, (0, None))[1] for p in (alone, backlog)]
            assert held[0] == held[1], f"batches of {size}: {held[1]}, one by one: {held[0]}"

        loop.run_until_complete(run())

    check()


# ------------------------------------- a workflow's event, a change received after it

# Buckinghamshire may hear that an entitlement started and how a dispute case
# it is party to moves (`s117-dispute-updated`, the workflows' event), nothing
# else; every other body everything (test_recipient_views_sharing.py's NARROW).
def _dispute_updates_granted() -> str:
    from tests.contract.test_recipient_views_sharing import NARROW

    return NARROW.replace("events: [s117-entitlement-started]",
                          "events: [s117-entitlement-started, s117-dispute-updated]")


def died_during_dispute(dispute_id: str) -> list[dict[str, Any]]:
    """Entitled (detained from Buckinghamshire, left hospital), a council dispute
    (`dispute_id`: one case per dispute) with Worcestershire raised (the workflows open its case and publish
    `s117-dispute-updated`), then the person died (never held by an open
    dispute: `s117-entitlement-ended`)."""
    return [
        {"effective_date": "2024-03-04", "change_type": "detained", "legal_status_code": "03",
         "hospital_ods": "RNU", "residence_la_gss": BUCKS, "gp_practice_ods": GP[BUCKS]},
        {"effective_date": "2024-05-01", "change_type": "left-hospital"},
        {"effective_date": "2024-06-03", "change_type": "dispute-raised",
         "dispute": {"dispute_id": dispute_id, "kind": "council", "parties": [BUCKS, WORCS]}},
        {"effective_date": "2024-08-01", "change_type": "died"},
    ]


def test_a_workflow_event_tells_the_history_it_was_published_against_not_a_change_received_after_it(
        tmp_path: Path) -> None:
    """The workflows publish the dispute case's `s117-dispute-updated` (W); the
    death (C2) is received before the dispatcher reaches W; then one batch
    dispatches both. W's messages used to be told against the whole history
    received by dispatch time: they carried the death, under
    `s117-dispute-updated`, to Buckinghamshire, whose agreement grants that
    event type but not `s117-entitlement-ended`, and the death's own event had
    nothing left to tell it. W is told against the history as it stood when it
    was published (its `history_received_by` header); the death is told by its
    own messages; every body ends holding what one-by-one dispatch leaves it."""
    (tmp_path / "w").mkdir()

    async def run() -> None:
        w, close = await _world(tmp_path / "w", _dispute_updates_granted())
        try:
            # One by one: W is dispatched before the death arrives.
            history = died_during_dispute("D-wf-alone")
            alone = await play(w, materialise(history, "wfalone", seed=11), tuple(range(len(history))), "each",
                               workflows=True)
            # W published, the death received, then one batch.
            changes = materialise(died_during_dispute("D-wf-batch"), "wfbatch", seed=12)
            person_id = None
            for change in changes[:-1]:
                person_id = (await w.post(change)).get("person_id", person_id)
            await drain(w, None)  # the dispatcher keeps up with the register...
            while await w.hub.workflow_consumer.run_once():
                pass  # ...the workflows publish W...
            async with w.hub.engine.connect() as conn:
                rows = (await conn.execute(select(bus_messages.c.event_id, bus_messages.c.headers).where(
                    bus_messages.c.topic == "s117.events", bus_messages.c.key == person_id))).all()
                await conn.rollback()
            published = [r.event_id for r in rows if (r.headers or {}).get("event_type") == "s117-dispute-updated"]
            assert len(published) == 1, rows
            await w.post(changes[-1])  # ...the death is received before the dispatcher reaches W...
            assert await w.hub.dispatcher.run_once() >= 2  # ...and one batch dispatches W and the death's events
            await drain(w, None, workflows=True)
            await w.pull_all()
            assert person_id is not None

            for org in w.subscribers:
                for m, p in of_person(w, org, person_id):
                    if m["event_id"] == published[0]:
                        assert p.view.get("ended_by") != "death" and p.view.get("entitled") is not False, \
                            f"{org} told the death under W ({m['event_type']}): {p.view}"
            # The death's own messages tell it (BOB ICB, responsible, granted everything).
            ended = [p.view for m, p in of_person(w, BOB_ICB, person_id) if m["event_type"] == "s117-entitlement-ended"]
            assert ended and ended[-1]["ended_by"] == "death", \
                [m["event_type"] for m, _ in of_person(w, BOB_ICB, person_id)]
            # Buckinghamshire never hears of the death; it holds what it holds one by one, as does everyone.
            bucks = {m["event_type"] for m, _ in of_person(w, BUCKS, person_id)}
            assert bucks <= {"s117-entitlement-started", "s117-dispute-updated", "s117-notification-corrected"}, bucks
            for org, sub in w.subscribers.items():  # (each person's dispute its own id)
                held = [orjson.dumps(sub.positions.get(p, (0, None))[1]).replace(b"D-wf-batch", b"D-wf-alone")
                        for p in (alone, person_id)]
                assert held[1] == held[0], f"{org}: in one batch {held[1]!r}, one by one {held[0]!r}"
            assert w.subscribers[BUCKS].positions[person_id][1]["entitled"] is True
        finally:
            await close()

    asyncio.run(run())
