"""Retracting a register change recorded in error (POST /v1/register-changes/{id}/retraction).

Real ingest, dispatcher and workflows' consumer on SQLite, in process through
the API (hub/retraction.py, hub/domain/retraction.py); each council and ICB a
feed subscriber keeping, per person, the position of the highest version it
has seen, as the README tells receivers to. A retracted change no longer
counts anywhere the history is read, and every body told what it said is
corrected the way late history corrects it.
"""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import select

from hub.clients import add_client
from hub.codec import from_jsonable
from hub.domain.model import RegisterChange
from hub.domain.rules import evaluate
from hub.domain.views import NOT_INVOLVED, views_for
from hub.fhir.messages import read_position
from hub.store.schema import (access_decisions, change_retractions, not_retracted,
                              register_changes, register_status, workflow_cases)
from hub.domain.dates import england_day
from tests.contract.test_recipient_views import World, world  # noqa: F401  (the fixture)
from tests.histories import BOB_ICB, BUCKS, GP, HW_ICB, ORGS, WORCS, late_correction_history, materialise

_runs = itertools.count()
CORRECTED = "s117-notification-corrected"


async def _key(w: World, name: str, org: str, kind: str, scopes: list[str]) -> str:
    return (await add_client(w.hub.engine, name, org, kind, scopes))[1]


async def _retract(w: World, key: str, change_id: str, reason: Any = "recorded against the wrong patient") -> Any:
    body = {} if reason is None else {"reason": reason}
    return await w.http.post(f"/v1/register-changes/{change_id}/retraction", headers={"X-API-Key": key}, json=body)


async def _settle(w: World) -> None:
    """Dispatch and run the workflows' consumer until nothing is left, then every subscriber pulls."""
    for _ in range(10):
        moved = 0
        while n := await w.hub.dispatcher.run_once():
            moved += n
        while n := await w.hub.workflow_consumer.run_once():
            moved += n
        if not moved:
            break
    await w.pull_all()


async def _live_truth(w: World, person_id: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    async with w.hub.engine.connect() as conn:
        rows = (await conn.execute(select(register_changes.c.canonical)
                                   .where(register_changes.c.person_id == person_id, not_retracted()))).all()
    changes = [from_jsonable(RegisterChange, r.canonical) for r in rows]
    today = england_day()
    status = evaluate(person_id, changes, w.hub.ref, w.hub.agreements, today)
    return status, views_for(status, ORGS, lambda org: w.hub.sharing.field_groups_for(org, today))


async def _everyone_holds_the_truth(w: World, person_id: str) -> dict[str, dict[str, Any]]:
    _, truth = await _live_truth(w, person_id)
    held = {}
    for org, sub in w.subscribers.items():
        expected = truth.get(org, NOT_INVOLVED)
        got = sub.positions.get(person_id)
        if got is None:
            assert not expected["roles"], f"{org} is involved ({expected['roles']}) but was never told"
            held[org] = NOT_INVOLVED
            continue
        assert got[1] == expected, f"{org} holds v{got[0]} {got[1]}, the truth is {expected}"
        held[org] = got[1]
    return held


def _wrong_patient_detention(run: str) -> dict[str, Any]:
    return materialise([{"effective_date": "2024-09-02", "change_type": "detained", "legal_status_code": "03",
                         "hospital_ods": "RNU", "residence_la_gss": BUCKS, "gp_practice_ods": GP[BUCKS]}],
                       run, seed=hash(run) % 10_000)[0]


def test_a_detention_recorded_for_the_wrong_person_is_retracted_and_everyone_told_is_corrected(world) -> None:  # noqa: ANN001
    loop, w = world

    async def run() -> None:
        trust = await _key(w, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])
        operator = await _key(w, "Operator", "HUB", "hub-operator", ["hub:admin"])
        r = await w.http.post("/v1/register-changes", headers={"X-API-Key": trust},
                              json=_wrong_patient_detention("wrong"))
        assert r.status_code == 202, r.text
        change_id, person_id = r.json()["change_id"], r.json()["person_id"]
        await _settle(w)
        told = {}
        for org in (BUCKS, BOB_ICB):
            sub = w.subscribers[org]
            assert sub.positions[person_id][1]["roles"], (org, sub.positions[person_id])
            told[org] = sub.messages[-1]["event_id"]
        before = {org: len(s.messages) for org, s in w.subscribers.items()}

        r = await _retract(w, trust, change_id)
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["duplicate"] is False and first["status"] == "retracted" and first["change_id"] == change_id
        assert first["retracted_by"] == "RNU"
        await _settle(w)

        # Each body told of the detention gets one correction superseding what it was told: not involved.
        for org in (BUCKS, BOB_ICB):
            sub = w.subscribers[org]
            new = sub.messages[before[org]:]
            assert [m["event_type"] for m in new] == [CORRECTED], (org, [m["event_type"] for m in new])
            position = read_position(new[0]["message"])
            assert position.view == {"roles": []}
            assert position.supersedes == told[org]
            assert "retracted" in position.reason
        for org in (WORCS, HW_ICB):  # never told, told nothing now
            assert len(w.subscribers[org].messages) == before[org]
        await _everyone_holds_the_truth(w, person_id)

        # No longer on the register: the person query answers as for no one (the operator included),
        # the register's counts no longer hold them.
        r = await w.http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": operator})
        assert r.status_code == 404, r.text
        async with w.hub.engine.connect() as conn:
            assert (await conn.execute(select(register_status).where(
                register_status.c.person_id == person_id))).first() is None
            row = (await conn.execute(select(change_retractions)
                                      .where(change_retractions.c.change_id == change_id))).one()
            assert b"wrong patient" not in row.reason  # kept encrypted
            decision = (await conn.execute(select(access_decisions).where(
                access_decisions.c.action == "retract", access_decisions.c.decision == "allowed"))).one()
            assert decision.person_id == person_id and decision.change_type == "detained"

        # Again: the first retraction's answer, nothing told again.
        r = await _retract(w, trust, change_id, "another reason")
        assert r.status_code == 200, r.text
        assert r.json() == {**first, "duplicate": True}
        after = {org: len(s.messages) for org, s in w.subscribers.items()}
        await _settle(w)
        assert {org: len(s.messages) for org, s in w.subscribers.items()} == after

    loop.run_until_complete(run())


def test_a_retracted_late_change_and_the_history_without_it_end_at_the_same_positions_in_any_order(world) -> None:  # noqa: ANN001
    """The worked example's history (README, "Worked example of a late correction"), once with a
    move to Oxfordshire recorded in error and retracted, the change and its retraction arriving at
    different points of several arrival orders (dispatch in between or not), and once without it:
    every body ends at the same position, and it is the truth of the history without the change."""
    loop, w = world
    history = late_correction_history()
    wrong = {"effective_date": "2024-08-01", "change_type": "moved", "residence_la_gss": "E10000025"}
    orders = [list(range(5)), [4, 3, 2, 1, 0], [4, 0, 1, 2, 3], [0, 4, 2, 3, 1]]

    async def final(changes: list[dict[str, Any]], order: list[int], wrong_at: int | None, retract_at: int | None,
                    dispatch_every: bool) -> tuple[Any, dict[str, dict[str, Any]]]:
        person_id, wrong_id = None, None
        for step, i in enumerate(order):
            if wrong_at == step:
                r = await w.http.post("/v1/register-changes", headers={"X-API-Key": w.trust_key},
                                      json=changes[5])
                assert r.status_code == 202, r.text
                wrong_id = r.json()["change_id"]
            if retract_at == step:
                r = await _retract(w, w.trust_key, wrong_id)
                assert r.status_code == 200, r.text
            person_id = (await w.post(changes[i])).get("person_id", person_id)
            if dispatch_every:
                await _settle(w)
        if retract_at is not None and retract_at >= len(order):
            r = await _retract(w, w.trust_key, wrong_id)
            assert r.status_code == 200, r.text
        await _settle(w)
        status, _ = await _live_truth(w, person_id)
        return status, await _everyone_holds_the_truth(w, person_id)

    async def run() -> None:
        baseline = None
        for order in orders:
            n = next(_runs)
            plain = materialise(history, f"plain{n}", seed=1000 + n)
            status, held = await final(plain, order, None, None, dispatch_every=False)
            if baseline is None:
                baseline = (status.entitled, status.responsible_council, status.responsible_commissioner, held)
            assert (status.entitled, status.responsible_council, status.responsible_commissioner, held) == baseline
            for wrong_at, retract_at, dispatch_every in ((0, 5, True), (2, 3, False), (4, 5, False), (1, 4, True)):
                n = next(_runs)
                changes = materialise([*history, wrong], f"retracted{n}", seed=2000 + n)
                status, held = await final(changes, order, wrong_at, retract_at, dispatch_every)
                assert (status.entitled, status.responsible_council, status.responsible_commissioner,
                        held) == baseline, (order, wrong_at, retract_at)

    loop.run_until_complete(run())


def test_a_transfer_case_the_retracted_change_opened_is_withdrawn(world) -> None:  # noqa: ANN001
    """The September re-detention from Buckinghamshire moves the council (Worcs 4.3.3): a transfer
    case opens. Retracted (recorded against the wrong patient), the hand-over never happened: the
    case is withdrawn, as when older history shows no hand-over, and both councils are told."""
    loop, w = world
    changes = materialise(late_correction_history(), "transfer", seed=7)

    async def run() -> None:
        person_id, last = None, None
        for change in changes:
            body = await w.post(change)
            person_id, last = body["person_id"], body["change_id"]
        await _settle(w)
        async with w.hub.engine.connect() as conn:
            cases = (await conn.execute(select(workflow_cases.c.case_id, workflow_cases.c.state).where(
                workflow_cases.c.person_id == person_id, workflow_cases.c.kind == "transfer"))).all()
        assert [c.state for c in cases] == ["awaiting-acknowledgement"], cases
        r = await _retract(w, w.trust_key, last)
        assert r.status_code == 200, r.text
        await _settle(w)
        async with w.hub.engine.connect() as conn:
            state = (await conn.execute(select(workflow_cases.c.state).where(
                workflow_cases.c.case_id == cases[0].case_id))).scalar_one()
        assert state == "withdrawn"
        held = await _everyone_holds_the_truth(w, person_id)
        assert held[WORCS]["roles"] == ["responsible-council"]
        assert "responsible-council" not in held[BUCKS]["roles"]
        updates = [m for m in w.subscribers[BUCKS].messages if m["event_type"] == "s117-transfer-updated"]
        assert updates, [m["event_type"] for m in w.subscribers[BUCKS].messages]

    loop.run_until_complete(run())


def test_bad_retraction_requests_are_named(world) -> None:  # noqa: ANN001
    loop, w = world

    async def run() -> None:
        trust = await _key(w, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])
        r = await w.http.post("/v1/register-changes", headers={"X-API-Key": trust},
                              json=_wrong_patient_detention("bad"))
        change_id = r.json()["change_id"]
        for reason in (None, "", "   ", "x" * 1001, 5, "a\x00b"):
            r = await _retract(w, trust, change_id, reason)
            assert r.status_code == 422, (reason, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert [e["field"] for e in r.json()["errors"]] == ["reason"], (reason, r.json())
        r = await _retract(w, trust, change_id, "x" * 1000)
        assert r.status_code == 200, r.text
        r = await w.http.post(f"/v1/register-changes/{change_id}/retraction", json={"reason": "x"})
        assert r.status_code == 401

    loop.run_until_complete(run())
