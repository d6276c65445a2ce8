"""A merge of two NHS numbers made in error, reversed (POST /v1/persons/merges/{merge_id}/reversal,
hub/unmerges.py).

Before, a trust or the hub operator that merged two numbers PDS holds for two patients had no way
back: the superseded person's detentions, entitlement and care package lines stayed in the retained
person's record, every body held the joined position, and the superseded number resolved to the
other patient for good. Now the reversal gives each patient their own history, details and number
back, and every body told of either is told each person's corrected position.

Real ingest, dispatcher, workflows consumer and feeds on SQLite, in process through the API (the
World of tests/contract/test_recipient_views.py: each council and ICB a feed subscriber keeping the
highest version it has seen per person); tests/e2e/test_person_unmerge.py runs the hub over a real
socket with webhook receivers."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, date, datetime

from sqlalchemy import func, select

from hub.clients import add_client
from hub.delivery.dispatcher import UNMERGE_REASON, UNMERGED_TOLD_REASON
from hub.fhir.messages import read_position
from hub.ingest.service import load_person_details
from hub.store.schema import (access_decisions, care_packages, operator_actions, person_merge_reversals,
                              person_merges, persons, register_status, workflow_cases, workflow_transitions)
from tests.contract.test_recipient_views import World, world  # noqa: F401  (the fixture)
from tests.histories import BOB_ICB, BUCKS, HW_ICB, WORCS
from tests.unit.test_person_merges import (CORRECTED, _changes_of, _detained, _left, _lookup, _merge, _nhs_in,
                                           _operator, _post, _trust, nhs_number)
from tests.unit.test_retraction import _settle
from tests.unit.test_transfer_withdrawn import moved_and_redetained  # noqa: F401  (the fixture)

_serial = itertools.count(1)
REASON = "two patients: the PAS clerk picked the wrong record"


async def _reverse(w: World, key: str, merge_id: str, reason: str = REASON):  # noqa: ANN202
    return await w.http.post(f"/v1/persons/merges/{merge_id}/reversal", headers={"X-API-Key": key},
                             json={"reason": reason})


async def _package_line(w: World, person_id: str, run: str) -> None:
    """A care package line of `person_id` (written to the store: the money's own path is tested elsewhere)."""
    async with w.hub.engine.begin() as conn:
        await conn.execute(care_packages.insert().values(
            source="bucks-mosaic", package_id=f"{run}-pkg", version=1, person_id=person_id, council=BUCKS,
            icb=BOB_ICB, paid_by="council", service_type="supported living", provider_kind="ods",
            provider_code="RNU", need="social-care", weekly_cost_pence=120000, s117_eligible=True, s17_leave=False,
            cohort="adult", start_date=date(2025, 6, 2), source_message_id=f"{run}-pkg-1",
            recorded_at=datetime.now(UTC)))


def test_two_patients_merged_in_error_are_two_again_and_every_body_told_of_either_is_told_each_position(
        world) -> None:  # noqa: ANN001
    """B: detained in January from Worcestershire, left hospital in April. A: detained in May from
    Buckinghamshire, a care package line recorded. A merged into B (the same date of birth: the trust's
    PAS took them for one). Reversed: A's detention and package line are A's again, A's number finds A,
    B keeps only what was B's, A's given name taken off B's details; Bucks and BOB ICB (told the merged
    position under B) are told B's position without A's history and A's own position again under A's
    number; Worcestershire and H&W ICB hear B's corrected position; every body holds each truth."""
    loop, w = world

    async def run() -> None:
        a, b = nhs_number(next(_serial) * 211), nhs_number(next(_serial) * 223)
        trust, operator = await _trust(w), await _operator(w)
        kept = (await _post(w, trust, _detained(b, "ub", "2025-01-06", WORCS, birth_date="1980-02-14")))["person_id"]
        await _post(w, trust, _left(b, "ub", "2025-04-07"))
        gone = (await _post(w, trust, _detained(a, "ua", "2025-05-01", BUCKS, birth_date="1980-02-14",
                                                given_name="Ann")))["person_id"]
        await _package_line(w, gone, "ua")
        await _settle(w)
        told_a = {org: w.subscribers[org].positions[gone] for org in (BUCKS, BOB_ICB)}

        merged = await _merge(w, trust, b, a)
        assert merged.status_code == 200, merged.text
        merge_id = merged.json()["merge_id"]
        await _settle(w)
        assert await _changes_of(w, kept) == 3
        before = {org: len(s.messages) for org, s in w.subscribers.items()}

        r = await _reverse(w, trust, merge_id)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "reversed" and body["duplicate"] is False and body["merge_id"] == merge_id
        assert body["retained_person_id"] == kept and body["superseded_person_id"] == gone
        assert body["moved_back_changes"] == 1 and body["moved_back_care_package_lines"] == 1
        assert body["unattributed_changes"] == [] and body["reversed_by"] == "RNU" and len(body["event_ids"]) == 2
        await _settle(w)

        # Two patients again: each number finds its own person, each history its own.
        assert await _lookup(w, operator, a) == gone and await _lookup(w, operator, b) == kept
        assert await _changes_of(w, kept) == 2 and await _changes_of(w, gone) == 1
        async with w.hub.engine.connect() as conn:
            assert set((await conn.execute(select(register_status.c.person_id))).scalars()) == {kept, gone}
            assert (await conn.execute(select(func.count()).select_from(person_merges))).scalar_one() == 0
            lines = (await conn.execute(select(care_packages.c.person_id))).scalars().all()
            assert lines == [gone]
            details = {r.person_id: load_person_details(w.hub.protector, r.details)
                       for r in (await conn.execute(select(persons.c.person_id, persons.c.details))).all()}
            assert "given_name" not in details[kept] and details[gone]["given_name"] == "Ann"
            kept_row = (await conn.execute(select(person_merge_reversals))).one()
            assert REASON.encode() not in kept_row.reason  # encrypted
            decision = (await conn.execute(select(access_decisions)
                                           .where(access_decisions.c.action == "unmerge"))).one()
            assert decision.decision == "allowed" and decision.person_id == kept
            # The trust reversed its own merge: not an operator action.
            assert (await conn.execute(select(func.count()).select_from(operator_actions).where(
                operator_actions.c.action == "person-unmerge"))).scalar_one() == 0
        s = await w.http.get(f"/v1/persons/{gone}/s117", headers={"X-API-Key": operator})
        assert s.status_code == 200, s.text  # no longer 410 merged_into
        assert s.json()["person_id"] == gone

        # Every body told of either is told each person's position: Bucks and BOB ICB (told of A, then of
        # the joined B) hear B's without A (no role any more) and A's again, under A's number.
        for org in (BUCKS, BOB_ICB):
            new = w.subscribers[org].messages[before[org]:]
            assert new and all(m["event_type"] == CORRECTED for m in new), (org, new)
            about = {read_position(m["message"]).person_id: m for m in new}
            assert set(about) == {kept, gone}, (org, about.keys())
            assert _nhs_in(about[gone]["message"]) == {a} and _nhs_in(about[kept]["message"]) == {b}
            mine = read_position(about[gone]["message"])
            assert mine.view == told_a[org][1] and mine.reason == UNMERGED_TOLD_REASON, mine
            assert mine.version > told_a[org][0]
        assert read_position([m for m in w.subscribers[BUCKS].messages[before[BUCKS]:]
                              if read_position(m["message"]).person_id == kept][0]["message"]
                             ).reason.endswith(UNMERGE_REASON)
        assert w.subscribers[BUCKS].positions[kept][1]["roles"] == []
        assert w.subscribers[BUCKS].positions[gone][1]["roles"] == ["responsible-council"]
        # Worcestershire and H&W ICB (B's bodies) hear B's position again; never A's.
        for org in (WORCS, HW_ICB):
            new = w.subscribers[org].messages[before[org]:]
            assert new and {read_position(m["message"]).person_id for m in new} == {kept}, (org, new)
            assert all(a not in _nhs_in(m["message"]) for m in new)
        await w.check_everyone_told_the_truth(kept)
        await w.check_everyone_told_the_truth(gone)

        # The same reversal again: the first answer, nothing told again.
        seen = {org: len(s.messages) for org, s in w.subscribers.items()}
        again = await _reverse(w, trust, merge_id, reason="again")
        assert again.status_code == 200, again.text
        assert again.json() == {**body, "duplicate": True}
        await _settle(w)
        assert {org: len(s.messages) for org, s in w.subscribers.items()} == seen

        # The pair may be merged again (a merge not in error this time): a new merge.
        remerged = await _merge(w, operator, b, a)
        assert remerged.status_code == 200, remerged.text
        assert remerged.json()["merge_id"] != merge_id and remerged.json()["duplicate"] is False
        assert remerged.json()["moved_changes"] == 1
        await _settle(w)
        assert await _lookup(w, operator, a) == kept
        await w.check_everyone_told_the_truth(kept)
        # ... and reversed again, by the hub operator this time: audited as an operator action.
        r = await _reverse(w, operator, remerged.json()["merge_id"])
        assert r.status_code == 200, r.text
        await _settle(w)
        async with w.hub.engine.connect() as conn:
            action = (await conn.execute(select(operator_actions)
                                         .where(operator_actions.c.action == "person-unmerge"))).one()
            assert action.detail["superseded_person_id"] == gone and REASON not in str(action.detail)
            assert a not in str(action.detail) and b not in str(action.detail)
        await w.check_everyone_told_the_truth(kept)
        await w.check_everyone_told_the_truth(gone)

    loop.run_until_complete(run())


def test_changes_recorded_after_the_merge_stay_and_are_named_and_a_chain_is_reversed_from_its_end(
        world) -> None:  # noqa: ANN001
    """After A was merged into B, a change under A's number was recorded (the retained person's): the hub
    keeps no record of which number a change was sent under, so the reversal leaves it with B and names it
    (`unattributed_changes`) for the sources to retract and resend. B later merged into C: the first merge
    is not reversed (409 naming merge_id) until the later one is."""
    loop, w = world

    async def run() -> None:
        a, b, c = (nhs_number(next(_serial) * 227 + i) for i in range(3))
        trust = await _trust(w)
        kept = (await _post(w, trust, _detained(b, "cb", "2025-01-06", WORCS, birth_date="1975-03-01")))["person_id"]
        gone = (await _post(w, trust, _detained(a, "ca", "2025-02-03", BUCKS, birth_date="1975-03-01")))["person_id"]
        first = (await _merge(w, trust, b, a)).json()
        later = (await _post(w, trust, _left(a, "ca", "2025-04-07")))["change_id"]
        await _settle(w)
        third = (await _post(w, trust, _detained(c, "cc", "2025-03-03", WORCS, birth_date="1975-03-01")))["person_id"]
        second = await _merge(w, trust, c, b)
        assert second.status_code == 200, second.text
        r = await _reverse(w, trust, first["merge_id"])
        assert r.status_code == 409, r.text
        assert r.json()["errors"] == [{"field": "merge_id", "reason": r.json()["errors"][0]["reason"]}]
        assert "reverse that merge first" in r.json()["errors"][0]["reason"]
        assert (await _reverse(w, trust, second.json()["merge_id"])).status_code == 200
        r = await _reverse(w, trust, first["merge_id"])
        assert r.status_code == 200, r.text
        assert r.json()["unattributed_changes"] == [later] and r.json()["moved_back_changes"] == 1
        await _settle(w)
        assert await _changes_of(w, kept) == 2 and await _changes_of(w, gone) == 1
        assert await _changes_of(w, third) == 1
        await w.check_everyone_told_the_truth(kept)
        await w.check_everyone_told_the_truth(gone)

    loop.run_until_complete(run())


def test_a_merge_recorded_before_the_hub_kept_what_it_moved_is_not_reversed_and_refusals_are_recorded(
        world) -> None:  # noqa: ANN001
    """A merge row without the care package lines, split decisions and detail fields it moved (recorded
    before migration 0039): reversing it would leave part of one patient in the other's record, so it is
    409 naming `merge_id` (undone by hand), nothing changed. Another trust's attempt is a 404 recorded as
    a denied `unmerge` decision naming no one."""
    loop, w = world

    async def run() -> None:
        a, b = nhs_number(next(_serial) * 233), nhs_number(next(_serial) * 239)
        trust = await _trust(w)
        other = (await add_client(w.hub.engine, "Another trust", "RXT", "trust", ["register:write"]))[1]
        kept = (await _post(w, trust, _detained(b, "lb", "2025-01-06", WORCS, birth_date="1970-01-01")))["person_id"]
        gone = (await _post(w, trust, _detained(a, "la", "2025-02-03", BUCKS, birth_date="1970-01-01")))["person_id"]
        merge_id = (await _merge(w, trust, b, a)).json()["merge_id"]
        r = await _reverse(w, other, merge_id)
        assert r.status_code == 404, r.text
        async with w.hub.engine.begin() as conn:
            denied = (await conn.execute(select(access_decisions).where(
                access_decisions.c.action == "unmerge"))).one()
            assert (denied.decision, denied.rule, denied.person_id, denied.org_code) == (
                "denied", "no-relationship", None, "RXT")
            row = (await conn.execute(select(person_merges.c.moved))).one()
            await conn.execute(person_merges.update().values(
                moved={"changes": row.moved["changes"], "cases": row.moved["cases"]}))
        r = await _reverse(w, trust, merge_id)
        assert r.status_code == 409, r.text
        assert r.json()["errors"][0]["field"] == "merge_id" and "by hand" in r.json()["errors"][0]["reason"]
        assert await _lookup(w, await _operator(w), a) == kept and await _changes_of(w, gone) == 0

    loop.run_until_complete(run())


async def _cases(app_hub) -> dict:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(workflow_cases.c.case_id, workflow_cases.c.person_id,
                                          workflow_cases.c.data))).all()
        steps = (await conn.execute(select(workflow_transitions.c.case_id, workflow_transitions.c.action)
                                    .order_by(workflow_transitions.c.seq))).all()
        await conn.rollback()
    return {r.case_id: (r.person_id, r.data, [s.action for s in steps if s.case_id == r.case_id]) for r in rows}


async def test_the_cases_a_merge_moved_go_back_with_an_unmerge_step(moved_and_redetained) -> None:  # noqa: ANN001, F811
    """The fixture's person (number A) has a transfer case Bucks -> Worcs. Another patient under number B
    is merged with A into B by the operator (forced: their dates of birth differ): the case is B's person's.
    Reversed: the case is A's person's again (`merged_from` gone), its history ends with an `unmerge`
    step, and the transfers list still shows it to both bodies."""
    from tests.unit.test_person_merge_cases import _operator as operator_headers
    from tests.unit.test_transfer_withdrawn import START, _post as post_as, drain, h

    app_hub = moved_and_redetained
    http = app_hub.http
    gone = app_hub.person_id
    a = app_hub.base["person"]["nhs_number"]
    b = nhs_number(7301)
    from hub.sample_data import detention_to_move_scenario
    other = detention_to_move_scenario(random.Random(99), "other", START)[0]
    other = {**other, "person": {**other["person"], "nhs_number": b, "birth_date": "1950-01-01"},
             "source_message_id": "other-1"}
    kept = (await post_as(app_hub, "trust", other))["person_id"]
    headers = await operator_headers(app_hub)
    r = await http.post("/v1/persons/merge", headers=headers,
                        json={"retained_nhs_number": b, "superseded_nhs_number": a, "force": True})
    assert r.status_code == 200, r.text
    assert r.json()["moved_cases"] == 1
    [case_id] = [c for c, (p, _, _) in (await _cases(app_hub)).items() if p == kept]

    r = await http.post(f"/v1/persons/merges/{r.json()['merge_id']}/reversal", headers=headers,
                        json={"reason": REASON})
    assert r.status_code == 200, r.text
    assert r.json()["moved_back_cases"] == 1
    person, data, steps = (await _cases(app_hub))[case_id]
    assert person == gone and data["person_id"] == gone and "merged_from" not in data
    assert steps[-2:] == ["merge", "unmerge"]
    await drain(app_hub)  # the workflows re-check each person's transfers: A's history holds the hand-over again
    [listed] = (await http.get("/v1/transfers", headers=h(app_hub, WORCS))).json()["items"]
    assert listed["case_id"] == case_id and listed["person_id"] == gone and listed["state"] != "withdrawn"
