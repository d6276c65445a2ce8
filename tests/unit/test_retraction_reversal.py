"""A retraction made in error, reversed (POST /v1/register-changes/{id}/retraction/reversal).

Real ingest, dispatcher and workflows' consumer on SQLite, in process through the API
(hub/unretractions.py), each council and ICB a feed subscriber keeping the position of the highest
version it has seen (tests/contract/test_recipient_views.py). The change reinstated counts again under
its own id and recorded time, every body moved by the retraction is moved back to the position it held
before it, and only those who may retract the change learn anything about it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import func, select

from hub.clients import add_client
from hub.fhir.messages import read_position
from hub.store.schema import (access_decisions, change_retraction_reversals, change_retractions, operator_actions,
                              register_changes, register_status, workflow_cases)
from tests.contract.test_recipient_views import World, world  # noqa: F401  (the fixture)
from tests.histories import BOB_ICB, BUCKS, HW_ICB, WORCS, late_correction_history, materialise
from tests.unit.test_retraction import _everyone_holds_the_truth, _settle, _wrong_patient_detention

REASON = "the A11 matched the wrong detention"
UNKNOWN = "00000000-0000-4000-8000-000000000000"


async def _key(w: World, name: str, org: str, kind: str, scopes: list[str]) -> str:
    return (await add_client(w.hub.engine, name, org, kind, scopes))[1]


async def _two_numbers(w: World, run: str) -> tuple[str, str, str, tuple[str, str]]:
    """Two NHS numbers' detentions (the trust's), two persons: the first's person id, the second's change id
    and person id, and the two NHS numbers (for a merge of the second into the first)."""
    ids, numbers = [], []
    for which in ("kept", "gone"):
        change = _wrong_patient_detention(f"{run}-{which}")
        r = await w.http.post("/v1/register-changes", headers={"X-API-Key": w.trust_key}, json=change)
        assert r.status_code == 202, r.text
        ids.append(r.json())
        numbers.append(change["person"]["nhs_number"])
    assert ids[0]["person_id"] != ids[1]["person_id"]
    return ids[0]["person_id"], ids[1]["change_id"], ids[1]["person_id"], (numbers[0], numbers[1])


async def _retract(w: World, key: str, change_id: str) -> Any:
    return await w.http.post(f"/v1/register-changes/{change_id}/retraction", headers={"X-API-Key": key},
                             json={"reason": "recorded against the wrong patient"})


async def _reverse(w: World, key: str, change_id: str, reason: Any = REASON) -> Any:
    body = {} if reason is None else {"reason": reason}
    return await w.http.post(f"/v1/register-changes/{change_id}/retraction/reversal", headers={"X-API-Key": key},
                             json=body)


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("instance", "correlation_id")}


async def _decisions(w: World, action: str) -> list[tuple[Any, ...]]:
    async with w.hub.engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(
            select(access_decisions.c.decision, access_decisions.c.rule, access_decisions.c.person_id)
            .where(access_decisions.c.action == action).order_by(access_decisions.c.decision_id))).all()]


def test_a_retraction_made_in_error_is_reversed_and_every_body_is_moved_back(world) -> None:  # noqa: ANN001
    """A detention retracted in error: each body it moved (told "not involved") is moved back to the
    position it held before, superseding the retraction's message; the change counts again under its own
    id and recorded time (the person query, the register's counts); the reversal is kept (its reason
    encrypted) and audited; the same reversal again answers the first and tells no one anything."""
    loop, w = world

    async def run() -> None:
        trust = await _key(w, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])
        operator = await _key(w, "Operator", "HUB", "hub-operator", ["hub:admin"])
        r = await w.http.post("/v1/register-changes", headers={"X-API-Key": trust},
                              json=_wrong_patient_detention("reinstated"))
        assert r.status_code == 202, r.text
        change_id, person_id = r.json()["change_id"], r.json()["person_id"]
        await _settle(w)
        before = {org: w.subscribers[org].positions[person_id][1] for org in (BUCKS, BOB_ICB)}
        assert all(view["roles"] for view in before.values()), before
        async with w.hub.engine.connect() as conn:
            recorded = (await conn.execute(select(register_changes.c.received_at, register_changes.c.canonical)
                                           .where(register_changes.c.change_id == change_id))).one()
        r = await _retract(w, trust, change_id)
        assert r.status_code == 200, r.text
        retraction = r.json()
        await _settle(w)
        retracted_told = {org: w.subscribers[org].messages[-1]["event_id"] for org in (BUCKS, BOB_ICB)}
        assert all(w.subscribers[org].positions[person_id][1] == {"roles": []} for org in (BUCKS, BOB_ICB))
        told = {org: len(s.messages) for org, s in w.subscribers.items()}

        r = await _reverse(w, trust, change_id)
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["duplicate"] is False and first["status"] == "reinstated"
        assert (first["change_id"], first["person_id"], first["reinstated_by"]) == (change_id, person_id, "RNU")
        assert first["retraction_event_id"] == retraction["event_id"] and first["retracted_by"] == "RNU"
        assert first["event_id"] != retraction["event_id"]
        await _settle(w)

        # Each body the retraction moved hears one message: the position it held before, saying why (told
        # as any body newly involved is, as the retraction's "not involved" left it: README).
        for org in (BUCKS, BOB_ICB):
            new = w.subscribers[org].messages[told[org]:]
            assert len(new) == 1, (org, [m["event_type"] for m in new])
            position = read_position(new[0]["message"])
            assert position.view == before[org], (org, position.view)
            assert position.supersedes in (None, retracted_told[org])
            assert "a register change retracted in error was reinstated" in position.reason, position.reason
        for org in (WORCS, HW_ICB):  # never told, told nothing now
            assert len(w.subscribers[org].messages) == told[org]
        await _everyone_holds_the_truth(w, person_id)

        # On the register again, under its own id and recorded time.
        r = await w.http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": operator})
        assert r.status_code == 200, r.text
        async with w.hub.engine.connect() as conn:
            assert (await conn.execute(select(register_changes.c.received_at, register_changes.c.canonical)
                                       .where(register_changes.c.change_id == change_id))).one() == recorded
            assert (await conn.execute(select(register_status).where(
                register_status.c.person_id == person_id))).first() is not None
            assert (await conn.execute(select(func.count()).select_from(change_retractions))).scalar_one() == 0
            kept = (await conn.execute(select(change_retraction_reversals))).one()
            assert kept.change_id == change_id and kept.retraction_event_id == retraction["event_id"]
            assert REASON.encode() not in kept.reason and w.hub.protector.decrypt(kept.reason) == REASON.encode()
            assert w.hub.protector.decrypt(kept.retraction_reason) == b"recorded against the wrong patient"
        assert await _decisions(w, "reinstate") == [("allowed", "allowed", person_id)]

        # Again: the first answer, nothing told again.
        r = await _reverse(w, trust, change_id, "another reason")
        assert r.status_code == 200, r.text
        assert r.json() == {**first, "duplicate": True}
        after = {org: len(s.messages) for org, s in w.subscribers.items()}
        await _settle(w)
        assert {org: len(s.messages) for org, s in w.subscribers.items()} == after

    loop.run_until_complete(run())


def test_a_change_may_be_retracted_reinstated_and_retracted_again_each_kept_and_audited(world) -> None:  # noqa: ANN001
    loop, w = world

    async def run() -> None:
        trust = await _key(w, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])
        r = await w.http.post("/v1/register-changes", headers={"X-API-Key": trust},
                              json=_wrong_patient_detention("cycle"))
        change_id, person_id = r.json()["change_id"], r.json()["person_id"]
        await _settle(w)
        involved = w.subscribers[BUCKS].positions[person_id][1]
        events = []
        for n in range(2):
            r = await _retract(w, trust, change_id)
            assert r.status_code == 200 and r.json()["duplicate"] is False, r.text
            events.append(r.json()["event_id"])
            await _settle(w)
            assert w.subscribers[BUCKS].positions[person_id][1] == {"roles": []}, n
            await _everyone_holds_the_truth(w, person_id)
            r = await _reverse(w, trust, change_id)
            assert r.status_code == 200 and r.json()["duplicate"] is False, r.text
            assert r.json()["retraction_event_id"] == events[-1]
            events.append(r.json()["event_id"])
            await _settle(w)
            assert w.subscribers[BUCKS].positions[person_id][1] == involved, n
            await _everyone_holds_the_truth(w, person_id)
        assert len(set(events)) == 4  # each retraction and each reversal its own event
        r = await _reverse(w, trust, change_id)  # the latest reversal's answer
        assert r.status_code == 200 and r.json()["duplicate"] is True and r.json()["event_id"] == events[-1]
        async with w.hub.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(change_retraction_reversals)
                                       .where(change_retraction_reversals.c.change_id == change_id))).scalar_one() == 2
        assert await _decisions(w, "retract") == [("allowed", "allowed", person_id)] * 2
        assert await _decisions(w, "reinstate") == [("allowed", "allowed", person_id)] * 3

    loop.run_until_complete(run())


def test_only_those_who_may_retract_may_reverse_and_no_one_else_learns_anything(world) -> None:  # noqa: ANN001
    """Another trust, a council, an unknown id: one identical 404, no sooner than the write refusal
    floor, whether the change is retracted or not; the refusals audited naming no one. A change not
    retracted: 409 naming change_id, to the recording organisation only. The operator may reverse a
    trust's retraction (an operator action)."""
    loop, w = world

    async def run() -> None:
        engine = w.hub.engine
        trust = await _key(w, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])
        same_org = await _key(w, "Oxford Health RiO", "RNU", "trust", ["register:write"])
        other_trust = await _key(w, "Worcs trust", "R1A", "trust", ["register:write", "s117:read"])
        council = await _key(w, "Bucks", BUCKS, "council", ["register:write", "s117:read"])
        reader = await _key(w, "Bucks reader", BUCKS, "council", ["s117:read"])
        operator = await _key(w, "Operator", "HUB", "hub-operator", ["hub:admin"])
        ids = []
        for run_ in ("access-1", "access-2"):
            r = await w.http.post("/v1/register-changes", headers={"X-API-Key": trust},
                                  json=_wrong_patient_detention(run_))
            assert r.status_code == 202, r.text
            ids.append(r.json()["change_id"])
        floor = w.hub.settings.write_refusal_floor_ms / 1000

        started = time.monotonic()
        unknown = await _reverse(w, trust, UNKNOWN)
        assert time.monotonic() - started >= floor
        assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("application/problem+json")
        # Not retracted: the recording organisation hears so; anyone else, the unknown id's answer.
        r = await _reverse(w, trust, ids[0])
        assert r.status_code == 409, r.text
        assert r.json()["errors"] == [{"field": "change_id", "reason": "not retracted"}]
        for key in (other_trust, council):
            started = time.monotonic()
            r = await _reverse(w, key, ids[0])
            assert time.monotonic() - started >= floor
            assert r.status_code == 404 and _comparable(r.json()) == _comparable(unknown.json()), r.text
        assert (await _retract(w, trust, ids[0])).status_code == 200
        assert (await _retract(w, trust, ids[1])).status_code == 200
        for key in (other_trust, council):  # retracted: still the unknown id's answer
            started = time.monotonic()
            r = await _reverse(w, key, ids[0])
            assert time.monotonic() - started >= floor
            assert r.status_code == 404 and _comparable(r.json()) == _comparable(unknown.json()), r.text
        for change_id in (ids[0], UNKNOWN):  # no register:write: the scope's 403, whatever the change
            assert (await _reverse(w, reader, change_id)).status_code == 403
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(change_retraction_reversals))).scalar_one() == 0
        denied = [d for d in await _decisions(w, "reinstate") if d[0] == "denied"]
        assert denied == [("denied", "no-relationship", None)] * 5

        # Another key of the organisation may; so may the operator (audited as an operator action).
        r = await _reverse(w, same_org, ids[0])
        assert r.status_code == 200 and r.json()["reinstated_by"] == "RNU", r.text
        r = await _reverse(w, operator, ids[1])
        assert r.status_code == 200 and r.json()["reinstated_by"] == "HUB", r.text
        async with engine.connect() as conn:
            actions = (await conn.execute(select(operator_actions.c.action, operator_actions.c.target)
                                          .where(operator_actions.c.action.like("register-change-%")))).all()
        assert [tuple(a) for a in actions] == [("register-change-reinstate", ids[1])]
        r = await _reverse(w, other_trust, ids[0])  # reversed: still the unknown id's answer
        assert r.status_code == 404 and _comparable(r.json()) == _comparable(unknown.json())

    loop.run_until_complete(run())


def test_bad_reversal_requests_are_named(world) -> None:  # noqa: ANN001
    loop, w = world

    async def run() -> None:
        trust = await _key(w, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])
        r = await w.http.post("/v1/register-changes", headers={"X-API-Key": trust},
                              json=_wrong_patient_detention("bad-reversal"))
        change_id = r.json()["change_id"]
        assert (await _retract(w, trust, change_id)).status_code == 200
        for reason in (None, "", "   ", "x" * 1001, 5, "a\x00b"):
            r = await _reverse(w, trust, change_id, reason)
            assert r.status_code == 422, (reason, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert [e["field"] for e in r.json()["errors"]] == ["reason"], (reason, r.json())
        r = await w.http.post(f"/v1/register-changes/{change_id}/retraction/reversal", json={"reason": "x"})
        assert r.status_code == 401
        r = await _reverse(w, trust, change_id, "x" * 1000)
        assert r.status_code == 200, r.text

    loop.run_until_complete(run())


async def _transfer_history(w: World, run: str) -> tuple[str, str]:
    """The worked example's history (README): its last change, the September re-detention from
    Buckinghamshire, moves the council (Worcs 4.3.3) and opens a transfer case. (person, that change)"""
    person_id, last = "", ""
    for change in materialise(late_correction_history(), run, seed=hash(run) % 10_000):
        body = await w.post(change)
        person_id, last = body["person_id"], body["change_id"]
    return person_id, last


async def _transfer_states(w: World, person_id: str) -> list[str]:
    async with w.hub.engine.connect() as conn:
        return [r.state for r in (await conn.execute(select(workflow_cases.c.state).where(
            workflow_cases.c.person_id == person_id, workflow_cases.c.kind == "transfer")
            .order_by(workflow_cases.c.opened_on, workflow_cases.c.case_id))).all()]


def test_a_retraction_that_withdrew_a_transfer_case_is_not_reversed_by_the_hub(world) -> None:  # noqa: ANN001
    """The retraction withdrew the transfer case the change opened (final): the reversal is refused
    with 409 naming change_id, and nothing changes."""
    loop, w = world

    async def run() -> None:
        person_id, last = await _transfer_history(w, "withdrawn")
        await _settle(w)
        assert await _transfer_states(w, person_id) == ["awaiting-acknowledgement"]
        assert (await _retract(w, w.trust_key, last)).status_code == 200
        await _settle(w)
        assert await _transfer_states(w, person_id) == ["withdrawn"]
        r = await _reverse(w, w.trust_key, last)
        assert r.status_code == 409, r.text
        assert [e["field"] for e in r.json()["errors"]] == ["change_id"]
        assert "withdrawn or reopened" in r.json()["detail"]
        async with w.hub.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(change_retractions))).scalar_one() == 1
            assert (await conn.execute(select(func.count()).select_from(change_retraction_reversals))).scalar_one() == 0

    loop.run_until_complete(run())


def test_reversed_before_the_workflows_read_the_retraction_the_transfer_case_stands(world) -> None:  # noqa: ANN001
    """Retracted and reinstated before the workflows' consumer read the retraction's event: reading it
    then withdraws nothing (the store decides), and the case the change opened stands."""
    loop, w = world

    async def run() -> None:
        person_id, last = await _transfer_history(w, "standing")
        await _settle(w)
        assert (await _retract(w, w.trust_key, last)).status_code == 200
        assert (await _reverse(w, w.trust_key, last)).status_code == 200
        await _settle(w)
        assert await _transfer_states(w, person_id) == ["awaiting-acknowledgement"]
        await _everyone_holds_the_truth(w, person_id)

    loop.run_until_complete(run())


def test_a_transfer_case_the_retraction_kept_from_opening_opens_once_reinstated(world) -> None:  # noqa: ANN001
    """The change retracted before the workflows read its hand-over's event: it opened no case. Reinstated,
    the hand-over is on the register again and its case opens, once."""
    loop, w = world

    async def run() -> None:
        person_id, last = await _transfer_history(w, "kept")
        assert (await _retract(w, w.trust_key, last)).status_code == 200
        await _settle(w)
        assert await _transfer_states(w, person_id) == []
        assert (await _reverse(w, w.trust_key, last)).status_code == 200
        await _settle(w)
        assert await _transfer_states(w, person_id) == ["awaiting-acknowledgement"]
        await _settle(w)
        assert await _transfer_states(w, person_id) == ["awaiting-acknowledgement"]
        await _everyone_holds_the_truth(w, person_id)

    loop.run_until_complete(run())


def test_a_retraction_made_before_a_merge_is_reversed_on_the_person_now_holding_the_change(world) -> None:  # noqa: ANN001
    """The superseded number's detention retracted, then the two numbers merged (PDS): the reversal
    reinstates the change in the retained person's history (the person now holding it), re-evaluated and
    told there; the kept reversal follows the change's person, back again when the merge is reversed."""
    loop, w = world

    async def run() -> None:
        kept_pid, change_id, gone_pid, (kept_nhs, gone_nhs) = await _two_numbers(w, "merge")
        assert (await _retract(w, w.trust_key, change_id)).status_code == 200
        await _settle(w)
        r = await w.http.post("/v1/persons/merge", headers={"X-API-Key": w.trust_key},
                              json={"retained_nhs_number": kept_nhs,
                                    "superseded_nhs_number": gone_nhs, "force": True})
        assert r.status_code == 200, r.text
        merge_id = r.json()["merge_id"]
        await _settle(w)
        r = await _reverse(w, w.trust_key, change_id)
        assert r.status_code == 200, r.text
        assert r.json()["person_id"] == kept_pid
        await _settle(w)
        async with w.hub.engine.connect() as conn:
            assert (await conn.execute(select(register_changes.c.person_id).where(
                register_changes.c.change_id == change_id))).scalar_one() == kept_pid
            assert (await conn.execute(select(change_retraction_reversals.c.person_id))).scalar_one() == kept_pid
        await _everyone_holds_the_truth(w, kept_pid)

        # The merge itself made in error and reversed: the change, and its kept reversal, go back.
        r = await w.http.post(f"/v1/persons/merges/{merge_id}/reversal", headers={"X-API-Key": w.trust_key},
                              json={"reason": "two patients"})
        assert r.status_code == 200, r.text
        await _settle(w)
        async with w.hub.engine.connect() as conn:
            assert (await conn.execute(select(register_changes.c.person_id).where(
                register_changes.c.change_id == change_id))).scalar_one() == gone_pid
            assert (await conn.execute(select(change_retraction_reversals.c.person_id))).scalar_one() == gone_pid
        await _everyone_holds_the_truth(w, gone_pid)

    loop.run_until_complete(run())


def test_two_reversals_at_once_reinstate_once_and_a_retraction_racing_a_reversal_leaves_everyone_right(world) -> None:  # noqa: ANN001
    """Two requests for the same reversal at once: one reinstates, the other answers it (`duplicate`), one
    reinstatement on the log, each body told once. A retraction and a reversal at once, three times: whichever
    goes first, every body ends holding the position the store's history gives."""
    loop, w = world

    async def run() -> None:
        trust = await _key(w, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])
        r = await w.http.post("/v1/register-changes", headers={"X-API-Key": trust},
                              json=_wrong_patient_detention("at-once"))
        change_id, person_id = r.json()["change_id"], r.json()["person_id"]
        await _settle(w)
        assert (await _retract(w, trust, change_id)).status_code == 200
        await _settle(w)
        told = {org: len(s.messages) for org, s in w.subscribers.items()}
        a, b = await asyncio.gather(_reverse(w, trust, change_id), _reverse(w, trust, change_id))
        assert (a.status_code, b.status_code) == (200, 200), (a.text, b.text)
        assert sorted([a.json()["duplicate"], b.json()["duplicate"]]) == [False, True]
        assert a.json()["event_id"] == b.json()["event_id"]
        await _settle(w)
        new = {org: len(s.messages) - told[org] for org, s in w.subscribers.items()}
        assert new == {org: 1 if org in (BUCKS, BOB_ICB) else 0 for org in w.subscribers}, new
        async with w.hub.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(change_retraction_reversals))).scalar_one() == 1
        for _ in range(3):
            a, b = await asyncio.gather(_retract(w, trust, change_id), _reverse(w, trust, change_id))
            assert (a.status_code, b.status_code) == (200, 200), (a.text, b.text)
            await _settle(w)
            await _everyone_holds_the_truth(w, person_id)

    loop.run_until_complete(run())


def test_an_icb_or_council_with_register_write_gets_the_unknown_ids_404_and_bad_bodies_never_echo_the_reason(world) -> None:  # noqa: ANN001
    loop, w = world

    async def run() -> None:
        trust = await _key(w, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])
        icb = await _key(w, "BOB ICB", BOB_ICB, "icb", ["register:write", "s117:read"])
        r = await w.http.post("/v1/register-changes", headers={"X-API-Key": trust},
                              json=_wrong_patient_detention("icb"))
        change_id = r.json()["change_id"]
        await _settle(w)  # the ICB is told of the person: still not its change
        unknown = await _reverse(w, icb, UNKNOWN)
        for retracted in (False, True):
            r = await _reverse(w, icb, change_id)
            assert r.status_code == 404 and _comparable(r.json()) == _comparable(unknown.json()), (retracted, r.text)
            if not retracted:
                assert (await _retract(w, trust, change_id)).status_code == 200
        personal = "Zebedee Quux 9434765919"
        url = f"/v1/register-changes/{change_id}/retraction/reversal"
        for body, field in (({"reason": "fine", "nhs_number": "9434765919"}, "nhs_number"),
                            ({"reason": [personal]}, "reason"), ({"reason": {"a": personal}}, "reason"),
                            ({"reason": True}, "reason"), ({"reason": personal * 50}, "reason"),
                            ({"reason": personal + "\x07"}, "reason")):
            r = await w.http.post(url, headers={"X-API-Key": trust}, json=body)
            assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == [field], r.text
            assert "9434765919" not in r.text and "Zebedee" not in r.text
        r = await w.http.post(url, headers={"X-API-Key": trust, "content-type": "application/json"}, content=b"{x")
        assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["(body)"], r.text
        async with w.hub.engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(change_retraction_reversals))).scalar_one() == 0

    loop.run_until_complete(run())
