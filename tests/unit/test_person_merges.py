"""NHS number merges (PDS): POST /v1/persons/merge (hub/merges.py).

When PDS merges two records of one patient it keeps one NHS number and
supersedes the other. Before, the hub knew nothing of it: a person known
under the superseded number and later under the retained one was two hub
persons, two histories, each body told two things. Now the superseded number
resolves to the retained person everywhere, a superseded person's history
joins the retained person's (one position), and every body told of either
is told the merged position (`s117-notification-corrected`, as a retraction
is told).

Real ingest, dispatcher and feeds on SQLite, in process through the API;
each council and ICB a feed subscriber keeping the highest version it has
seen per person (tests/contract/test_recipient_views.py)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from sqlalchemy import func, select

from hub.clients import add_client
from hub.delivery.dispatcher import MERGE_REASON, MERGED_TOLD_REASON
from hub.fhir.messages import read_position
from hub.store.schema import (access_decisions, operator_actions, person_merges, persons, register_changes,
                              register_status)
from tests.contract.test_recipient_views import World, world  # noqa: F401  (the fixture)
from tests.histories import BOB_ICB, BUCKS, GP, HW_ICB, OXON, WORCS
from tests.unit.test_retraction import _settle

CORRECTED = "s117-notification-corrected"
_serial = itertools.count(1)


def nhs_number(seed: int) -> str:
    """A valid (modulus 11) NHS number in the 999 test range, one a seed."""
    while True:
        body = f"999{seed % 1_000_000:06d}"
        total = sum(int(d) * (10 - i) for i, d in enumerate(body))
        check = 11 - total % 11
        check = 0 if check == 11 else check
        if check != 10:
            return body + str(check)
        seed += 7919


def _with_bad_check(number: str) -> str:
    return number[:9] + str((int(number[9]) + 1) % 10)


async def _key(w: World, name: str, org: str, kind: str, scopes: list[str]) -> str:
    return (await add_client(w.hub.engine, name, org, kind, scopes))[1]


async def _trust(w: World) -> str:
    """Oxford Health (RNU): a trust's own key, not the operator's (the World's writes as the operator)."""
    return await _key(w, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])


async def _operator(w: World) -> str:
    return await _key(w, "Operator", "HUB", "hub-operator", ["hub:admin"])


def _detained(nhs: str, run: str, on: str, council: str, **person: str) -> dict[str, Any]:
    return {"source_system": "RiO", "source_message_id": f"{run}-det", "person": {"nhs_number": nhs, **person},
            "change_type": "detained", "effective_date": on, "legal_status_code": "03", "hospital_ods": "RNU",
            "gp_practice_ods": GP[council], "residence_la_gss": council}


def _left(nhs: str, run: str, on: str) -> dict[str, Any]:
    return {"source_system": "RiO", "source_message_id": f"{run}-left", "person": {"nhs_number": nhs},
            "change_type": "left-hospital", "effective_date": on, "hospital_ods": "RNU"}


async def _post(w: World, key: str, change: dict[str, Any]) -> dict[str, Any]:
    r = await w.http.post("/v1/register-changes", headers={"X-API-Key": key}, json=change)
    assert r.status_code == 202, r.text
    return r.json()


async def _merge(w: World, key: str, retained: str, superseded: str, **more: Any) -> Any:
    return await w.http.post("/v1/persons/merge", headers={"X-API-Key": key},
                             json={"retained_nhs_number": retained, "superseded_nhs_number": superseded, **more})


async def _lookup(w: World, key: str, nhs: str) -> str | None:
    r = await w.http.post("/v1/persons/lookup", headers={"X-API-Key": key}, json={"nhs_number": nhs})
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()["person_id"]


async def _changes_of(w: World, person_id: str) -> int:
    async with w.hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(register_changes)
                                   .where(register_changes.c.person_id == person_id))).scalar_one()


def _nhs_in(message: dict[str, Any]) -> set[str]:
    """The NHS numbers a message's Patient carries."""
    out = set()
    for e in message.get("entry", []):
        r = e["resource"]
        if r.get("resourceType") == "Patient":
            out |= {i["value"] for i in r.get("identifier", []) if i["system"].endswith("/nhs-number")}
    return out


def test_a_person_known_under_a_superseded_number_is_one_person_under_the_retained_one(world) -> None:  # noqa: ANN001
    """Detained under A; PDS merges A into B; left hospital under B: one person, one history, entitled;
    each body told of the detention hears the merge once, under B, its position as it was."""
    loop, w = world

    async def run() -> None:
        a, b = nhs_number(next(_serial) * 101), nhs_number(next(_serial) * 103)
        trust, operator = await _trust(w), await _operator(w)
        person = (await _post(w, trust, _detained(a, "m1", "2025-01-06", BUCKS)))["person_id"]
        await _settle(w)
        told = {org: w.subscribers[org].messages[-1]["event_id"] for org in (BUCKS, BOB_ICB)}
        held = {org: w.subscribers[org].positions[person] for org in (BUCKS, BOB_ICB)}
        before = {org: len(s.messages) for org, s in w.subscribers.items()}

        r = await _merge(w, trust, b, a)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["retained_person_id"] == person and body["superseded_person_id"] == person
        assert body["duplicate"] is False and body["moved_changes"] == 0 and body["event_id"]
        await _settle(w)
        for org in (BUCKS, BOB_ICB):
            new = w.subscribers[org].messages[before[org]:]
            assert [m["event_type"] for m in new] == [CORRECTED], (org, new)
            position = read_position(new[0]["message"])
            assert position.person_id == person and position.supersedes == told[org]
            assert position.view == held[org][1] and position.reason == MERGED_TOLD_REASON
            assert _nhs_in(new[0]["message"]) == {b}  # told under the retained number
        for org in (WORCS, OXON, HW_ICB):
            assert len(w.subscribers[org].messages) == before[org]

        # Either number finds the one person; a change under the retained number is theirs.
        assert await _lookup(w, operator, a) == person and await _lookup(w, operator, b) == person
        assert (await _post(w, trust, _left(b, "m1", "2025-04-07")))["person_id"] == person
        assert await _changes_of(w, person) == 2
        await _settle(w)
        s = await w.http.get(f"/v1/persons/{person}/s117", headers={"X-API-Key": operator})
        assert s.status_code == 200, s.text
        assert s.json()["entitled"] is True and s.json()["in_hospital"] is False
        await w.check_everyone_told_the_truth(person)
        async with w.hub.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(persons))).scalar_one() == 1

    loop.run_until_complete(run())


def test_two_persons_merged_are_one_history_and_every_body_told_of_either_is_told_the_merged_position(  # noqa: ANN001
        world) -> None:
    """B: detained in January from Worcestershire, left hospital in April (Worcestershire and H&W ICB
    told, entitled). A: detained in May from Buckinghamshire (Bucks and BOB ICB told). Merged: one person
    (B's), the three changes one history; Bucks and BOB ICB, told only of A's person, are told the
    merged position superseding what they were told; every body holds the truth of the joined history."""
    loop, w = world

    async def run() -> None:
        a, b = nhs_number(next(_serial) * 107), nhs_number(next(_serial) * 109)
        trust, operator = await _trust(w), await _operator(w)
        kept = (await _post(w, trust, _detained(b, "b", "2025-01-06", WORCS, birth_date="1980-02-14")))["person_id"]
        await _post(w, trust, _left(b, "b", "2025-04-07"))
        gone = (await _post(w, trust, _detained(a, "a", "2025-05-01", BUCKS, birth_date="1980-02-14")))["person_id"]
        assert gone != kept
        await _settle(w)
        told_of_gone = {org: w.subscribers[org].messages[-1]["event_id"] for org in (BUCKS, BOB_ICB)}
        assert all(w.subscribers[org].positions[gone][1]["roles"] for org in (BUCKS, BOB_ICB))
        assert all(gone not in w.subscribers[org].positions for org in (WORCS, HW_ICB))
        before = {org: len(s.messages) for org, s in w.subscribers.items()}

        r = await _merge(w, trust, b, a)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["retained_person_id"] == kept and body["superseded_person_id"] == gone
        assert body["moved_changes"] == 1 and body["forced"] is False and body["merged_by"] == "RNU"
        await _settle(w)

        # One person, one history: the superseded person holds nothing; either number is the retained person.
        assert await _changes_of(w, kept) == 3 and await _changes_of(w, gone) == 0
        assert await _lookup(w, operator, a) == kept and await _lookup(w, operator, b) == kept
        async with w.hub.engine.connect() as conn:
            statuses = set((await conn.execute(select(register_status.c.person_id))).scalars())
            assert statuses == {kept}
            row = (await conn.execute(select(person_merges))).one()
            assert row.superseded_person_id == gone and row.retained_person_id == kept
            action = (await conn.execute(select(operator_actions)
                                         .where(operator_actions.c.action == "person-merge"))).one()
            assert action.detail["retained_person_id"] == kept and action.detail["superseded_person_id"] == gone
            assert a not in str(action.detail) and b not in str(action.detail)
            decision = (await conn.execute(select(access_decisions).where(access_decisions.c.action == "merge"))).one()
            assert decision.decision == "allowed" and decision.person_id == kept
        # Bodies told only of the superseded person: a correction superseding what they were told, the merged
        # position, under the retained person and number.
        for org in (BUCKS, BOB_ICB):
            new = w.subscribers[org].messages[before[org]:]
            assert new and all(m["event_type"] == CORRECTED for m in new), (org, new)
            first = read_position(new[0]["message"])
            assert first.person_id == kept and first.supersedes == told_of_gone[org], (org, first)
            assert first.reason.endswith(MERGE_REASON), first.reason  # both positions moved: the difference
            assert _nhs_in(new[0]["message"]) == {b}
        assert w.subscribers[BUCKS].positions[kept][1]["roles"] == ["responsible-council"]
        assert w.subscribers[BOB_ICB].positions[kept][1]["roles"] == []  # H&W ICB kept (Worcs 4.4.2)
        await w.check_everyone_told_the_truth(kept)

        # Later changes under either number are the one person's.
        assert (await _post(w, trust, _left(a, "a", "2025-06-02")))["person_id"] == kept
        assert await _changes_of(w, kept) == 4
        await _settle(w)
        await w.check_everyone_told_the_truth(kept)

        # The same merge again: the first answer, nothing told again.
        seen = {org: len(s.messages) for org, s in w.subscribers.items()}
        again = await _merge(w, trust, b, a)
        assert again.status_code == 200, again.text
        assert again.json() == {**body, "duplicate": True}
        await _settle(w)
        assert {org: len(s.messages) for org, s in w.subscribers.items()} == seen
        async with w.hub.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(person_merges))).scalar_one() == 1

    loop.run_until_complete(run())


def test_changes_under_both_numbers_at_once_after_a_merge_are_the_one_persons(world) -> None:  # noqa: ANN001
    """After the merge, a change under each number arriving together (one group commit batch, whose keys
    are the numbers): both recorded for the one person, one after the other, each evaluated with the
    other's (the register's counts: left hospital in April, detained again in May)."""
    loop, w = world

    async def run() -> None:
        a, b = nhs_number(next(_serial) * 113), nhs_number(next(_serial) * 127)
        trust = await _trust(w)
        kept = (await _post(w, trust, _detained(b, "b", "2025-01-06", BUCKS)))["person_id"]
        await _post(w, trust, _detained(a, "a", "2025-01-06", BUCKS))
        assert (await _merge(w, trust, b, a)).status_code == 200
        again = _detained(b, "b2", "2025-05-01", BUCKS)
        done = await asyncio.gather(*(w.http.post("/v1/register-changes", headers={"X-API-Key": trust}, json=c)
                                      for c in (_left(a, "a", "2025-04-07"), again)))
        assert [r.status_code for r in done] == [202, 202], [r.text for r in done]
        assert {r.json()["person_id"] for r in done} == {kept}
        assert await _changes_of(w, kept) == 4
        async with w.hub.engine.connect() as conn:
            row = (await conn.execute(select(register_status).where(register_status.c.person_id == kept))).one()
        assert (str(row.entitlement_start), row.in_hospital, row.entitled) == ("2025-04-07", True, True), row

    loop.run_until_complete(run())


def test_dates_of_birth_that_differ_refuse_the_merge_unless_the_operator_forces_it(world) -> None:  # noqa: ANN001
    loop, w = world

    async def run() -> None:
        a, b = nhs_number(next(_serial) * 131), nhs_number(next(_serial) * 137)
        trust, operator = await _trust(w), await _operator(w)
        kept = (await _post(w, trust, _detained(b, "b", "2025-01-06", BUCKS, birth_date="1980-02-14")))["person_id"]
        gone = (await _post(w, trust, _detained(a, "a", "2025-02-03", BUCKS, birth_date="1979-11-30")))["person_id"]
        r = await _merge(w, trust, b, a)
        assert r.status_code == 422, r.text
        assert [e["field"] for e in r.json()["errors"]] == ["birth_date"]
        assert "1980" not in r.text and "1979" not in r.text and a not in r.text  # never quotes what it holds
        r = await _merge(w, trust, b, a, force=True)  # only the operator forces
        assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["force"], r.text
        assert await _changes_of(w, gone) == 1  # nothing merged
        r = await _merge(w, operator, b, a, force=True)
        assert r.status_code == 200, r.text
        assert r.json()["forced"] is True and r.json()["retained_person_id"] == kept
        assert await _changes_of(w, kept) == 2

    loop.run_until_complete(run())


def test_merges_refused_name_the_field_or_the_rule(world) -> None:  # noqa: ANN001
    loop, w = world

    async def run() -> None:
        a, b, c = (nhs_number(next(_serial) * p) for p in (139, 149, 151))
        trust, operator = await _trust(w), await _operator(w)
        other = await _key(w, "CNWL", "RV3", "trust", ["register:write", "s117:read"])
        council = await _key(w, "Bucks", BUCKS, "council", ["register:write", "s117:read"])
        await _post(w, trust, _detained(a, "a", "2025-01-06", BUCKS))
        await _post(w, trust, _detained(b, "b", "2025-01-06", BUCKS))

        def fields(r: Any) -> list[str]:
            return [e["field"] for e in r.json()["errors"]]

        r = await _merge(w, trust, b, _with_bad_check(a))
        assert r.status_code == 422 and fields(r) == ["superseded_nhs_number"], r.text
        r = await _merge(w, trust, _with_bad_check(b), a)
        assert r.status_code == 422 and fields(r) == ["retained_nhs_number"], r.text
        r = await _merge(w, trust, b, b)
        assert r.status_code == 422 and fields(r) == ["superseded_nhs_number"], r.text
        r = await _merge(w, council, b, a)
        assert r.status_code == 403 and r.json()["rule"] == "kind-may-not-merge", r.text
        # A trust with no role for the persons, and numbers not on the register: one answer.
        r1, r2 = await _merge(w, other, b, a), await _merge(w, trust, nhs_number(9001), nhs_number(9002))
        assert r1.status_code == r2.status_code == 403, (r1.text, r2.text)
        assert r1.json() == r2.json() and r1.json()["rule"] == "no-relationship"
        async with w.hub.engine.connect() as conn:  # each refusal on record (the policy's decisions), no one named
            refused = (await conn.execute(select(access_decisions.c.org_code, access_decisions.c.rule,
                                                 access_decisions.c.person_id).where(
                access_decisions.c.action == "merge", access_decisions.c.decision == "denied")
                .order_by(access_decisions.c.decision_id))).all()
        assert [tuple(r) for r in refused] == [(BUCKS, "kind-may-not-merge", None), ("RV3", "no-relationship", None),
                                               ("RNU", "no-relationship", None)]
        r = await w.http.post("/v1/persons/merge", headers={"X-API-Key": trust},
                              json={"retained_nhs_number": b, "superseded_nhs_number": a, "extra": 1})
        assert r.status_code == 422, r.text
        async with w.hub.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(person_merges))).scalar_one() == 0

        assert (await _merge(w, trust, b, a)).status_code == 200
        r = await _merge(w, operator, c, a)  # A went into B already
        assert r.status_code == 409 and fields(r) == ["superseded_nhs_number"], r.text
        r = await _merge(w, operator, a, c)  # A is no longer a number a person is kept under
        assert r.status_code == 422 and fields(r) == ["retained_nhs_number"], r.text
        # The operator may record a merge of numbers not on the register: a change under either is one person.
        d, e = nhs_number(9101), nhs_number(9102)
        r = await _merge(w, operator, d, e)
        assert r.status_code == 200 and r.json()["retained_person_id"] is None, r.text
        first = (await _post(w, trust, _detained(e, "e", "2025-01-06", BUCKS)))["person_id"]
        assert (await _post(w, trust, _left(d, "d", "2025-04-07")))["person_id"] == first
        assert await _lookup(w, operator, d) == first

    loop.run_until_complete(run())


async def test_a_councils_snapshot_under_the_superseded_number_is_compared_with_the_retained_person(
        app_hub) -> None:  # noqa: ANN001
    """A council's case system still holds the superseded number: its row is the retained person's, one
    person compared, no difference (before, a person the hub did not hold and one the council did not list)."""
    from tests.unit.test_reconciliation_api import compared, ndjson, send
    from tests.support import detention

    a, b = nhs_number(801), nhs_number(803)
    trust, council = {"X-API-Key": app_hub.keys["trust"]}, app_hub.keys["E06000060"]
    for change in detention(a, "snap"):
        r = await app_hub.http.post("/v1/register-changes", headers=trust, json=change)
        assert r.status_code == 202, r.text
    person = r.json()["person_id"]
    r = await app_hub.http.post("/v1/persons/merge", headers=trust,
                                json={"retained_nhs_number": b, "superseded_nhs_number": a})
    assert r.status_code == 200, r.text
    s = (await app_hub.http.get(f"/v1/persons/{person}/s117", headers={"X-API-Key": council})).json()
    row = {"nhs_number": a, "local_id": "SW-1", "entitled": s["entitled"],
           "responsible_council": s["responsible_council"]["org"]["code"],
           "responsible_icb": s["responsible_commissioner"]["org"]["code"],
           "entitlement_start": s["entitlement_start"], "next_review_due": s["next_review"]["due_on"]}
    snap = await send(app_hub, council, ndjson([row]))
    report = await compared(app_hub, council, snap["snapshot_id"])
    assert (report["state"], report["persons_compared"], report["differences_found"]) == ("done", 1, 0), report


async def test_a_council_file_row_under_the_superseded_number_is_the_retained_persons(app_hub) -> None:  # noqa: ANN001
    """A council's case system still sends the superseded number: its rows are the retained person's (before:
    the one no-relationship refusal, the person unknown under that number)."""
    from hub.clients import add_client
    from tests.support import detention
    from tests.unit.test_council_files_api import send, statuses

    a, b = nhs_number(901), nhs_number(903)
    trust = {"X-API-Key": app_hub.keys["trust"]}
    for change in detention(b, "file"):
        r = await app_hub.http.post("/v1/register-changes", headers=trust, json=change)
        assert r.status_code == 202, r.text
    person = r.json()["person_id"]
    r = await app_hub.http.post("/v1/persons/merge", headers=trust,
                                json={"retained_nhs_number": b, "superseded_nhs_number": a})
    assert r.status_code == 200 and r.json()["retained_person_id"] == person, r.text
    _, key = await add_client(app_hub.hub.engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    header = ("RECORD_ID,EVENT,EFFECTIVE_DATE,NOTIFIED_DATE,NHS_NO,SURNAME,FORENAME,DOB,POSTCODE,LA_GSS,NFA,GP_ODS,"
              "REVIEW_REASON,LA_AGREES,NHS_AGREES,PERSON_INVOLVED,END_REASONS,PARTICIPANTS")
    rows = [f"SW-9001,REVIEW_DONE,01/07/2025,01/07/2025,{a},,,,,,N,,,,,,,",
            f"SW-9002,REVIEW_DONE,02/07/2025,02/07/2025,{b},,,,,,N,,,,,,,"]
    r = await send(app_hub, {"X-API-Key": key}, ("\n".join([header, *rows]) + "\n").encode())
    assert r.status_code == 200, r.text
    assert statuses(r.json()) == [("SW-9001", "accepted"), ("SW-9002", "accepted")], r.text
    async with app_hub.hub.engine.connect() as conn:
        owners = set((await conn.execute(select(register_changes.c.person_id)
                                         .where(register_changes.c.source_message_id.in_(["SW-9001", "SW-9002"]))))
                     .scalars())
    assert owners == {person}
