"""Transfer and dispute cases follow an NHS number merge (hub/merges.py, hub/workflows/person_merge.py).

Before, a case opened for the superseded number's person stayed that person's: after the merge the
retained person's transfers and disputes were incomplete (the case views, the FHIR Task, the person
query and the money's interim shares read the cases by person) and the superseded person's dangled.
Now the merge gives them to the retained person in its transaction (a `merge` step in each case's
history, audited), the workflows' consumer re-checks the transfer cases against the joined history as
after a retraction, and two open cases for the same bodies are both kept and flagged.

Real ingest, dispatcher, workflows consumer and API on SQLite, in process (`app_hub`)."""

from __future__ import annotations

import random

from sqlalchemy import select

from hub.clients import add_client
from hub.money.responsibility import load_interims
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import operator_actions, workflow_cases
from tests.unit.test_person_merges import nhs_number
from tests.unit.test_transfer_withdrawn import (BUCKS, REDETAINED, START, STILL_IN_HOSPITAL, WORCS, _post, drain, h,
                                                moved_and_redetained)  # noqa: F401  (the fixture)


async def _operator(app_hub) -> dict:  # noqa: ANN001
    return {"X-API-Key": (await add_client(app_hub.hub.engine, "Operator", "HUB", "hub-operator", ["hub:admin"]))[1]}


async def _merge(app_hub, retained: str, superseded: str) -> dict:  # noqa: ANN001
    r = await app_hub.http.post("/v1/persons/merge", headers=await _operator(app_hub),
                                json={"retained_nhs_number": retained, "superseded_nhs_number": superseded})
    assert r.status_code == 200, r.text
    return r.json()


def _under(app_hub, number: str, change: dict, run: str) -> dict:  # noqa: ANN001
    """`change` (of the fixture's person) as the same patient's record under another NHS number."""
    return {**change, "person": {**change["person"], "nhs_number": number},
            "source_message_id": f"{run}-{change['source_message_id']}"}


async def _case_rows(app_hub) -> dict[str, tuple[str, str, str]]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(workflow_cases.c.case_id, workflow_cases.c.kind, workflow_cases.c.state,
                                          workflow_cases.c.person_id))).all()
        await conn.rollback()
    return {r.case_id: (r.kind, r.state, r.person_id) for r in rows}


async def test_a_transfer_and_its_dispute_follow_the_merge_to_the_retained_person(moved_and_redetained) -> None:
    """The fixture's person (number A) has a transfer case Bucks -> Worcs; Worcs contests it (a dispute
    opens, interim terms agreed). The same patient is on the register under number B too (the first
    detention). PDS merges A into B: both cases are B's person's, in the case views, the FHIR Task, the
    person query and the interim shares the statements charge; each case's history says so."""
    app_hub = moved_and_redetained
    http = app_hub.http
    gone = app_hub.person_id
    a = app_hub.base["person"]["nhs_number"]
    b = nhs_number(7001)
    [transfer] = (await http.get("/v1/transfers", headers=h(app_hub, WORCS))).json()["items"]
    r = await http.post(f"/v1/transfers/{transfer['case_id']}/contest", headers=h(app_hub, WORCS),
                        json={"reason": "not ordinarily resident here"})
    assert r.status_code == 200, r.text
    await drain(app_hub)
    [dispute] = (await http.get("/v1/disputes", headers=h(app_hub, WORCS))).json()["items"]
    terms = {"lead_body": BUCKS, "shares": {BUCKS: "50", WORCS: "50"}}
    for org in (BUCKS, WORCS):
        r = await http.post(f"/v1/disputes/{dispute['case_id']}/interim", headers=h(app_hub, org), json=terms)
        assert r.status_code == 200, r.text
    await drain(app_hub)
    async with app_hub.hub.engine.connect() as conn:
        assert gone in await load_interims(conn, [gone])
        await conn.rollback()

    first = detention_to_move_scenario(random.Random(11), "wd", START)[0]  # the fixture's first detention
    kept = (await _post(app_hub, "trust", _under(app_hub, b, first, "b")))["person_id"]
    assert kept != gone
    done = await _merge(app_hub, b, a)
    assert (done["retained_person_id"], done["superseded_person_id"], done["moved_cases"]) == (kept, gone, 2)
    await drain(app_hub)

    rows = await _case_rows(app_hub)
    assert {rows[transfer["case_id"]][2], rows[dispute["case_id"]][2]} == {kept}, rows
    for path, case_id in (("transfers", transfer["case_id"]), ("disputes", dispute["case_id"])):
        view = (await http.get(f"/v1/{path}/{case_id}", headers=h(app_hub, WORCS))).json()
        assert view["person_id"] == kept and view["merged_from"] == gone, view
        assert view["merge_duplicates"] == []
        step = view["history"][-1]
        assert (step["action"], step["actor"], step["from_state"]) == ("merge", "hub:register", step["to_state"])
        assert kept in step["explanation"] and gone in step["explanation"] and a not in step["explanation"]
        task = (await http.get(f"/v1/fhir/Task/{view['fhir_task_id']}", headers=h(app_hub, WORCS))).json()
        assert task["for"]["identifier"]["value"] == kept == task["focus"]["identifier"]["value"]
    assert rows[transfer["case_id"]][1] == "contested" and rows[dispute["case_id"]][1] == "open"
    # The person query of the retained person lists the transfer (Bucks: a party).
    s = (await http.get(f"/v1/persons/{kept}/s117", headers=h(app_hub, BUCKS))).json()
    assert [t["case_id"] for t in s.get("transfers", [])] == [transfer["case_id"]], s.get("transfers")
    # The money: the agreed interim shares are the retained person's (the statements charge them by person).
    async with app_hub.hub.engine.connect() as conn:
        interims = await load_interims(conn, [kept, gone])
        action = (await conn.execute(select(operator_actions.c.detail)
                                     .where(operator_actions.c.action == "person-merge"))).scalar_one()
        await conn.rollback()
    assert set(interims) == {kept}
    assert sorted(action["moved_cases"]) == sorted([transfer["case_id"], dispute["case_id"]])
    # The same merge again moves nothing again.
    assert (await _merge(app_hub, b, a))["moved_cases"] == 2
    view = (await http.get(f"/v1/transfers/{transfer['case_id']}", headers=h(app_hub, WORCS))).json()
    assert [s["action"] for s in view["history"]].count("merge") == 1


async def test_a_transfer_whose_hand_over_the_joined_history_takes_away_is_withdrawn(moved_and_redetained) -> None:
    """Under number B the patient was detained again in Buckinghamshire on day 140 (before the move) and
    was still in hospital on day 200: merged, the joined history holds no hand-over to Worcestershire
    (one period of detention, Worcs 4.3.1), so the transfer case opened under A is withdrawn by the
    workflows, under the retained person, both bodies told (as after a retraction or a late change)."""
    app_hub = moved_and_redetained
    http = app_hub.http
    a = app_hub.base["person"]["nhs_number"]
    b = nhs_number(7003)
    [transfer] = (await http.get("/v1/transfers", headers=h(app_hub, WORCS))).json()["items"]
    assert transfer["state"] == "awaiting-acknowledgement"
    first = detention_to_move_scenario(random.Random(11), "wd", START)[0]
    kept = (await _post(app_hub, "trust", {**_under(app_hub, b, first, "b"), **STILL_IN_HOSPITAL}))["person_id"]
    await drain(app_hub)
    await _merge(app_hub, b, a)
    await drain(app_hub)
    view = (await http.get(f"/v1/transfers/{transfer['case_id']}", headers=h(app_hub, BUCKS))).json()
    assert view["person_id"] == kept and view["state"] == "withdrawn", view
    assert [s["action"] for s in view["history"]] == ["open", "merge", "withdraw"]
    assert "merged" in view["history"][-1]["explanation"] and view["history"][-1]["event_id"]


async def test_two_open_transfers_for_the_same_bodies_are_both_kept_and_flagged(moved_and_redetained) -> None:
    """The patient's whole story was recorded twice, under A and under B: two persons, each with an open
    transfer case Bucks -> Worcs for the same hand-over. Merged: both cases are the retained person's,
    both kept (each told to its parties, either may have been acted on), each naming the other in
    `merge_duplicates` and its history; the joined history holds the hand-over, so neither is withdrawn."""
    app_hub = moved_and_redetained
    http = app_hub.http
    a = app_hub.base["person"]["nhs_number"]
    b = nhs_number(7005)
    changes = detention_to_move_scenario(random.Random(11), "wd", START)
    for c in changes:
        kept = (await _post(app_hub, "trust", _under(app_hub, b, c, "b")))["person_id"]
    await _post(app_hub, "R1A", _under(app_hub, b, {**app_hub.base, **REDETAINED, "source_message_id": "wd-5"}, "b"))
    await drain(app_hub)
    cases = (await http.get("/v1/transfers", headers=h(app_hub, WORCS))).json()["items"]
    assert len(cases) == 2 and {c["state"] for c in cases} == {"awaiting-acknowledgement"}
    [mine] = [c["case_id"] for c in cases if c["person_id"] == kept]
    [theirs] = [c["case_id"] for c in cases if c["person_id"] != kept]
    await _merge(app_hub, b, a)
    await drain(app_hub)
    for case_id, other in ((mine, theirs), (theirs, mine)):
        view = (await http.get(f"/v1/transfers/{case_id}", headers=h(app_hub, WORCS))).json()
        assert view["person_id"] == kept and view["state"] == "awaiting-acknowledgement", view
        assert view["merge_duplicates"] == [other]
        assert other in view["history"][-1]["explanation"] and view["history"][-1]["action"] == "merge"
        task = (await http.get(f"/v1/fhir/Task/{view['fhir_task_id']}", headers=h(app_hub, WORCS))).json()
        assert any(other in n["text"] for n in task.get("note", [])), task
    async with app_hub.hub.engine.connect() as conn:
        action = (await conn.execute(select(operator_actions.c.detail)
                                     .where(operator_actions.c.action == "person-merge"))).scalar_one()
        await conn.rollback()
    assert action["duplicate_cases"] == [[theirs, mine]]
