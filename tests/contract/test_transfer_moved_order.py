"""Order independence of a hand-over that late history moves to another date.

The same history in every sampled arrival order (and however the dispatcher's
and the workflows' consumer's batches fall) ends with the same single open
transfer case: the hand-over as the whole history holds it (council, from
Buckinghamshire to Worcestershire, on day 180). Any case opened on the way
for a hand-over the history no longer holds on that date is withdrawn (or
superseded), and both bodies' last word on it is its Task `cancelled`. Through
the real ingest, dispatcher, workflows' consumer and feeds on SQLite, with
tests/contract/test_order_independence_dispatch.py's world and players."""

from __future__ import annotations

import zlib
from collections import Counter
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select

from hub.store.schema import workflow_cases
from tests.contract.test_order_independence_dispatch import (  # noqa: F401 - `world` is a fixture
    _runs,
    of_person,
    orders,
    play,
    task_of,
    withdrawn_history,
    world,
)
from tests.histories import BUCKS, WORCS, materialise

START = date(2025, 1, 6)


def on(days: int) -> str:
    return (START + timedelta(days=days)).isoformat()


def moved_history() -> list[dict[str, Any]]:
    """Detained in Buckinghamshire, left hospital, moved to Worcestershire on
    day 150; detained from there on day 180 and still in hospital when
    "re-detained" on day 200 (heard before the day-180 detention, the day-200
    one alone hands over, Worcs 4.3.3): one hand-over, on day 180. The first
    four changes are the withdrawn-transfer history's."""
    return [*withdrawn_history()[:4],
            {"effective_date": on(180), "change_type": "detained", "legal_status_code": "03", "hospital_ods": "R1A",
             "residence_la_gss": WORCS, "_by": "R1A"}]


async def cases_of(w: Any, person_id: str) -> list[Any]:  # noqa: ANN401
    async with w.hub.engine.connect() as conn:
        rows = (await conn.execute(select(workflow_cases.c.case_id, workflow_cases.c.state, workflow_cases.c.data)
                                   .where(workflow_cases.c.person_id == person_id,
                                          workflow_cases.c.kind == "transfer"))).all()
        await conn.rollback()
    return rows


def test_a_moved_hand_over_ends_with_one_open_case_in_any_order(world) -> None:  # noqa: ANN001, F811
    loop, w = world

    async def run() -> None:
        history = moved_history()
        ends: Counter = Counter()
        superseded = 0
        for mode, workflows in [("each", True), ("backlog", True), ("by-2", True), ("mixed-2", True),
                                ("by-3", "ahead")]:
            for order in orders(len(history), 6, seed=zlib.crc32(f"moved{mode}{workflows}".encode())):
                n = next(_runs)
                changes = materialise(history, f"mv{n}", seed=9500 + n)
                person_id = await play(w, changes, order, mode, workflows=workflows)
                where = f"{mode} workflows {workflows} order {order}"
                await w.check_everyone_told_the_truth(person_id)
                # Not check_each_fact_told_once: the late day-180 detention's
                # s117-responsibility-transferred tells the moved date under the
                # same position as the day-200 one (the position carries no
                # hand-over date): the dispatcher's to settle, not the workflows'.
                cases = await cases_of(w, person_id)
                live = [c for c in cases if c.state in ("awaiting-acknowledgement", "overdue")]
                assert len(live) == 1, f"{where}: {[(c.state, c.data.get('handover_on')) for c in cases]}"
                [one] = live
                ends[(one.data["role"], one.data["outgoing"], one.data["incoming"], one.data["handover_on"])] += 1
                for case in cases:
                    if case.case_id == one.case_id:
                        continue
                    assert case.state == "withdrawn", f"{where}: {case.state}"
                    superseded += case.data.get("superseded_by_handover_on") == on(180)
                    for org in (BUCKS, WORCS):
                        about = [t for t in (task_of(m, case.case_id) for m, _ in of_person(w, org, person_id)
                                             if m["event_type"] == "s117-transfer-updated") if t is not None]
                        assert about, f"{where}: {org} never told of case {case.case_id}"
                        assert about[-1]["status"] == "cancelled", f"{where}: {org}: {about[-1]['status']}"
        # Every order ends with the same one open case: the whole history's hand-over.
        assert list(ends) == [("council", BUCKS, WORCS, on(180))], ends
        assert superseded, "no order met the moved hand-over"

    loop.run_until_complete(run())
