"""A hand-over late history moves to another date is told to each of its
bodies once, plus one correction if the date it was told on changed.

tests/contract/test_transfer_moved_order.py's history (one hand-over, from
Buckinghamshire to Worcestershire on day 180; heard before the day-180
detention, the day-200 re-detention alone hands over) in sampled arrival
orders and every dispatch mode, through the real ingest, dispatcher,
workflows' consumer and feeds on SQLite. A body's position carries no
hand-over's date, and a not-involved one (`roles: []`, the outgoing body)
nothing at all: the late day-180 detention's `s117-responsibility-transferred`
leaves both bodies' positions where the day-200 one put them. It used to be
told to both again under the same event type, the second naming day 180 and
not marked a correction. Now each body hears `s117-responsibility-transferred`
once; where it was told day 200, the late change tells it one
`s117-notification-corrected` dated day 180 that supersedes the day-200
event; a late change that tells a hand-over on the date told is not sent."""

from __future__ import annotations

import asyncio
import zlib
from datetime import date
from pathlib import Path
from typing import Any

from hub.domain.model import DomainEvent, EventType
from hub.domain.views import TOLD, handover_told, moved_handover_reason
from tests.contract.test_order_independence_dispatch import (  # noqa: F401 - `world` is a fixture
    _runs,
    check_each_fact_told_once,
    of_person,
    orders,
    play,
    world,
)
from tests.contract.test_recipient_views import _world
from tests.contract.test_transfer_moved_order import moved_history, on
from tests.histories import BUCKS, WORCS, agreements_yaml, materialise

TRANSFERRED, CORRECTED = "s117-responsibility-transferred", "s117-notification-corrected"
MOVED = "the transfer of responsibility took effect on"  # `moved_handover_reason`'s words


def occurred(item: dict[str, Any]) -> str:
    """The date the message's event says it happened on (its MessageHeader's extension)."""
    header = item["message"]["entry"][0]["resource"]
    [found] = [x["valueDate"] for x in header.get("extension", []) if x["url"].endswith("EventOccurred")]
    return found


def test_a_moved_hand_over_is_told_each_body_once_and_corrected_once_in_any_order(world) -> None:  # noqa: ANN001, F811
    loop, w = world

    async def run() -> None:
        history = moved_history()
        corrected = 0
        for mode, workflows in [("each", True), ("backlog", True), ("by-2", True), ("mixed-2", True),
                                ("by-3", "ahead")]:
            for order in orders(len(history), 6, seed=zlib.crc32(f"told-once{mode}{workflows}".encode())):
                n = next(_runs)
                person_id = await play(w, materialise(history, f"to{n}", seed=9700 + n), order, mode,
                                       workflows=workflows)
                where = f"{mode} workflows {workflows} order {order}"
                await w.check_everyone_told_the_truth(person_id)
                check_each_fact_told_once(w, person_id, where)
                for org in (BUCKS, WORCS):
                    items = of_person(w, org, person_id)
                    told = [(m, p) for m, p in items if m["event_type"] == TRANSFERRED]
                    assert len(told) == 1, f"{where}: {org} told the hand-over {len(told)} times: " \
                                           f"{[(occurred(m), p.version) for m, p in told]}"
                    [(first, position)] = told
                    moved = [(m, p) for m, p in items if m["event_type"] == CORRECTED and MOVED in (p.reason or "")]
                    if occurred(first) == on(180):
                        assert not moved, f"{where}: {org} corrected on the date it was told"
                        continue
                    assert occurred(first) == on(200), f"{where}: {org} told {occurred(first)}"
                    assert len(moved) == 1, f"{where}: {org}: {[(occurred(m), p.version) for m, p in moved]}"
                    [(correction, fixed)] = moved
                    assert occurred(correction) == on(180), where
                    assert fixed.supersedes == first["event_id"], f"{where}: {org} supersedes {fixed.supersedes}"
                    assert fixed.version > position.version and fixed.view == position.view, where
                    assert fixed.reason == f"{MOVED} {on(180)}, not on {on(200)} as told before", fixed.reason
                    corrected += 1
        assert corrected, "no order told the day-200 hand-over first"

    loop.run_until_complete(run())


def test_a_body_not_granted_hand_overs_hears_no_correction_of_one(tmp_path: Path) -> None:
    """Buckinghamshire's agreement grants how the transfer case moves
    (`s117-transfer-updated`) but not `s117-responsibility-transferred`: it
    was never told the day-200 hand-over, so the late day-180 detention is
    no correction of one it heard (a correction is covered by any agreement:
    sent, it would tell the hand-over's dates after all)."""
    text = agreements_yaml().replace("explanations]", "explanations, workflow]")
    granted = [e.value for e in EventType if e not in (EventType.RESPONSIBILITY_TRANSFERRED,
                                                       EventType.NOTIFICATION_CORRECTED)]
    bucks = f"      - org_code: {BUCKS}\n        events: [\"*\"]\n"
    assert bucks in text
    text = text.replace(bucks, f"      - org_code: {BUCKS}\n        events: [{', '.join(granted)}]\n")

    async def run() -> None:
        w, close = await _world(tmp_path, text)
        try:
            history = moved_history()
            person_id = await play(w, materialise(history, "nogrant", seed=9699), tuple(range(len(history))),
                                   "each", workflows=True)
            items = of_person(w, BUCKS, person_id)
            assert items and items[-1][1].view == {"roles": []}  # told it is no longer involved (the case's Task)
            told = [(m["event_type"], p.reason) for m, p in items]
            assert not [t for t in told if t[0] in (TRANSFERRED, CORRECTED)], told
            # Worcestershire, granted everything, hears the hand-over and its correction.
            worcs = [m["event_type"] for m, _ in of_person(w, WORCS, person_id)]
            assert worcs.count(TRANSFERRED) == 1 and worcs.count(CORRECTED) >= 1, worcs
        finally:
            await close()

    asyncio.run(run())


# ------------------------------------------------------------- the comparison

DAY180, DAY200 = date(2025, 7, 5), date(2025, 7, 25)


def transferred(on_: date, **details: str) -> DomainEvent:
    return DomainEvent(event_type=EventType.RESPONSIBILITY_TRANSFERRED, person_id="p", change_id="c",
                       occurred_on=on_, summary="", details=details)


def test_a_hand_over_held_on_its_date_is_told_on_another_moved_and_else_new() -> None:
    event = transferred(DAY180, council_from=BUCKS, council_to=WORCS)
    assert handover_told(event, {("council", BUCKS, WORCS, DAY180)}) == TOLD
    assert handover_told(event, {("council", BUCKS, WORCS, DAY200), ("council", BUCKS, WORCS, date(2026, 1, 1))}) \
        == DAY200  # the nearest
    assert handover_told(event, {("council", WORCS, BUCKS, DAY200), ("commissioner", BUCKS, WORCS, DAY200)}) is None
    assert handover_told(event, set()) is None
    # Both roles: told only if each was held on its date; moved if one was held elsewhere.
    both = transferred(DAY180, council_from=BUCKS, council_to=WORCS, commissioner_from="QU9", commissioner_to="QHL")
    assert handover_told(both, {("council", BUCKS, WORCS, DAY180), ("commissioner", "QU9", "QHL", DAY180)}) == TOLD
    assert handover_told(both, {("council", BUCKS, WORCS, DAY180), ("commissioner", "QU9", "QHL", DAY200)}) == DAY200
    assert handover_told(both, {("council", BUCKS, WORCS, DAY180)}) is None
    assert handover_told(transferred(DAY180), {("council", BUCKS, WORCS, DAY180)}) is None  # names none
    assert moved_handover_reason(event, DAY200) == f"{MOVED} 2025-07-05, not on 2025-07-25 as told before"
