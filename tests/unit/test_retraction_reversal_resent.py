"""A retraction reversed after the change was sent again (POST .../retraction/reversal, hub/unretractions.py).

Until the reversal existed, a trust was told to send a change retracted in error again under a new
`source_message_id`. Reversing the retraction as well would count the same event twice in the person's
history: the reversal is refused (`409` `sent-again` naming `change_id`, the resend named by its ids
only) while a change of the same organisation recorded since the retraction restates it (the same type,
day and identifying facts: hub/domain/retraction.py `restates`). The trust retracts the resend first, or
leaves the original retracted. Real ingest, dispatcher and workflows' consumer on SQLite, through the API.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from hub.store.schema import change_retraction_reversals, change_retractions, not_retracted, register_changes
from tests.contract.test_recipient_views import World, world  # noqa: F401  (the fixture)
from tests.histories import BUCKS, GP, WORCS
from tests.unit.test_retraction import _everyone_holds_the_truth, _settle, _wrong_patient_detention
from tests.unit.test_retraction_reversal import UNKNOWN, _comparable, _decisions, _key, _retract, _reverse


async def _post(w: World, key: str, change: dict[str, Any]) -> dict[str, Any]:
    r = await w.http.post("/v1/register-changes", headers={"X-API-Key": key}, json=change)
    assert r.status_code == 202, r.text
    return r.json()


def _again(change: dict[str, Any], smid: str, **facts: Any) -> dict[str, Any]:
    """`change` sent again under a new source_message_id (with `facts` changed)."""
    return {**change, "source_message_id": smid, **facts}


async def _history(w: World, person_id: str) -> list[str]:
    async with w.hub.engine.connect() as conn:
        return list((await conn.execute(select(register_changes.c.change_id).where(
            register_changes.c.person_id == person_id, not_retracted())
            .order_by(register_changes.c.change_id))).scalars())


async def _counts(w: World) -> tuple[int, int]:
    async with w.hub.engine.connect() as conn:
        return ((await conn.execute(select(func.count()).select_from(change_retractions))).scalar_one(),
                (await conn.execute(select(func.count()).select_from(change_retraction_reversals))).scalar_one())


def _refused_for(r: Any, standing: list[tuple[str, str]]) -> None:
    """`r` is the sent-again refusal naming `change_id`, and names each of `standing` by its ids."""
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"].endswith("/sent-again"), body
    assert [e["field"] for e in body["errors"]] == ["change_id"], body
    reason = body["errors"][0]["reason"]
    assert body["detail"] == f"change_id: {reason}"
    for change_id, smid in standing:
        assert change_id in reason and f"source_message_id {smid}" in reason, reason
    assert body["standing"] == [{"change_id": c, "source_message_id": s} for c, s in standing], body


def test_a_detention_sent_again_since_its_retraction_is_not_reinstated_twice_until_the_resend_is_retracted(world) -> None:  # noqa: ANN001
    """The README's old advice followed: a detention retracted, sent again under a new source_message_id,
    then the retraction reversed: 409 `sent-again` naming change_id and the resend's change id and
    source_message_id, nothing personal; nothing changes, no one is told anything, the refusal audited as
    the reversal's others are. Anyone else still gets the unknown id's 404. The resend retracted, the
    reversal goes through. A resend correcting the residence restates it all the same."""
    loop, w = world

    async def run() -> None:
        trust = await _key(w, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])
        other_trust = await _key(w, "Worcs trust", "R1A", "trust", ["register:write", "s117:read"])
        council = await _key(w, "Bucks", BUCKS, "council", ["register:write", "s117:read"])
        detention = _wrong_patient_detention("resent")
        first = await _post(w, trust, detention)
        change_id, person_id = first["change_id"], first["person_id"]
        await _settle(w)
        assert (await _retract(w, trust, change_id)).status_code == 200
        await _settle(w)
        resent = await _post(w, trust, _again(detention, "resent-again"))
        assert resent["person_id"] == person_id and resent["change_id"] != change_id
        await _settle(w)
        told = {org: len(s.messages) for org, s in w.subscribers.items()}

        r = await _reverse(w, trust, change_id)
        _refused_for(r, [(resent["change_id"], "resent-again")])
        for personal in (detention["person"]["nhs_number"], detention["person"]["family_name"],
                         detention["person"]["birth_date"], person_id):
            assert personal not in r.text, personal
        assert await _counts(w) == (1, 0)
        assert await _history(w, person_id) == [resent["change_id"]]
        await _settle(w)
        assert {org: len(s.messages) for org, s in w.subscribers.items()} == told
        await _everyone_holds_the_truth(w, person_id)
        assert await _decisions(w, "reinstate") == [("allowed", "allowed", person_id)]

        # Those who may not reverse it learn nothing: the unknown id's 404, as before.
        unknown = await _reverse(w, other_trust, UNKNOWN)
        for key in (other_trust, council):
            r = await _reverse(w, key, change_id)
            assert r.status_code == 404 and _comparable(r.json()) == _comparable(unknown.json()), r.text

        # The resend retracted: the reversal goes through, the original alone in the history.
        assert (await _retract(w, trust, resent["change_id"])).status_code == 200
        await _settle(w)
        r = await _reverse(w, trust, change_id)
        assert r.status_code == 200 and r.json()["duplicate"] is False, r.text
        await _settle(w)
        assert await _history(w, person_id) == [change_id]
        await _everyone_holds_the_truth(w, person_id)

        # Retracted again and sent again, its residence corrected: the same detention all the same, refused.
        assert (await _retract(w, trust, change_id)).status_code == 200
        again = await _post(w, trust, _again(detention, "resent-corrected", residence_la_gss=WORCS,
                                             gp_practice_ods=GP[WORCS]))
        _refused_for(await _reverse(w, trust, change_id), [(again["change_id"], "resent-corrected")])
        assert (await _retract(w, trust, again["change_id"])).status_code == 200
        done = await _reverse(w, trust, change_id)
        assert done.status_code == 200, done.text
        # A reversal done is answered as before (duplicate), the check not made, whatever was sent since.
        await _post(w, trust, _again(detention, "resent-after"))
        r = await _reverse(w, trust, change_id)
        assert r.status_code == 200 and r.json() == {**done.json(), "duplicate": True}, r.text

    loop.run_until_complete(run())


def test_a_resend_on_another_day_at_another_hospital_or_under_another_section_does_not_refuse(world) -> None:  # noqa: ANN001
    """Another detention (another day, another of the trust's hospitals, another section) is another
    event: each reversal goes through; the same detention sent again (by another key of the organisation
    too) refuses."""
    loop, w = world

    async def run() -> None:
        trust = await _key(w, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])
        same_org = await _key(w, "Oxford Health RiO", "RNU", "trust", ["register:write"])
        for run_, differs in (("another-day", {"effective_date": "2024-09-03"}),
                              ("another-hospital", {"hospital_ods": "RNU02"}),
                              ("another-section", {"legal_status_code": "02"})):
            detention = _wrong_patient_detention(run_)
            change_id = (await _post(w, trust, detention))["change_id"]
            assert (await _retract(w, trust, change_id)).status_code == 200
            await _post(w, trust, _again(detention, f"{run_}-again", **differs))
            r = await _reverse(w, trust, change_id)
            assert r.status_code == 200, (run_, r.text)
        detention = _wrong_patient_detention("same")
        change_id = (await _post(w, trust, detention))["change_id"]
        assert (await _retract(w, trust, change_id)).status_code == 200
        resent = await _post(w, same_org, _again(detention, "same-again"))
        _refused_for(await _reverse(w, trust, change_id), [(resent["change_id"], "same-again")])

    loop.run_until_complete(run())


def test_a_later_change_of_another_type_on_the_day_does_not_refuse(world) -> None:  # noqa: ANN001
    """A leaving of hospital retracted in error; since, the trust recorded the section ended (the person
    stayed informally) that day at that hospital: another event, the reversal goes through. The leaving
    sent again (its discharge destination corrected) refuses."""
    loop, w = world

    async def run() -> None:
        trust = await _key(w, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])
        outcomes = []
        for run_, other in (("other-type", {"change_type": "section-ended-stayed-informally"}),
                            ("left-again", {"discharge_destination_la_gss": WORCS})):
            detention = _wrong_patient_detention(run_)
            await _post(w, trust, detention)
            left = _again(detention, f"{run_}-left", change_type="left-hospital", effective_date="2024-10-01",
                          discharge_destination_la_gss=BUCKS)
            for name in ("legal_status_code", "residence_la_gss", "gp_practice_ods"):
                left.pop(name)
            change_id = (await _post(w, trust, left))["change_id"]
            assert (await _retract(w, trust, change_id)).status_code == 200
            later = _again(left, f"{run_}-later", **other)
            if later["change_type"] != "left-hospital":  # a fact only a leaving takes
                later.pop("discharge_destination_la_gss")
            posted = await _post(w, trust, later)
            outcomes.append((await _reverse(w, trust, change_id), posted["change_id"], f"{run_}-later"))
        (other_type, _, _), (same, resent, smid) = outcomes
        assert other_type.status_code == 200, other_type.text
        _refused_for(same, [(resent, smid)])

    loop.run_until_complete(run())


def test_another_organisations_record_of_the_same_event_does_not_refuse_the_hub_operators_does(world) -> None:  # noqa: ANN001
    """A GP change the trust recorded, retracted in error; the responsible council has since recorded the
    same change: its own record, the reversal goes through. The trust's own resend (another key) refuses,
    and so does the hub operator's (recorded on a source's behalf, a quarantined input resubmitted)."""
    loop, w = world

    async def run() -> None:
        trust = await _key(w, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])
        same_org = await _key(w, "Oxford Health RiO", "RNU", "trust", ["register:write"])
        council = await _key(w, "Bucks", BUCKS, "council", ["register:write", "s117:read"])
        operator = await _key(w, "Operator", "HUB", "hub-operator", ["hub:admin", "register:write"])
        detention = _wrong_patient_detention("gp")
        person_id = (await _post(w, trust, detention))["person_id"]
        await _settle(w)
        gp = {**detention, "source_message_id": "gp-01", "change_type": "gp-changed", "effective_date": "2024-09-20",
              "gp_practice_ods": "K82004"}
        for name in ("legal_status_code", "hospital_ods", "residence_la_gss"):
            gp.pop(name)
        change_id = (await _post(w, trust, gp))["change_id"]

        assert (await _retract(w, trust, change_id)).status_code == 200
        by_council = await _post(w, council, _again(gp, "council-gp-01"))
        r = await _reverse(w, trust, change_id)
        assert r.status_code == 200, r.text
        assert set(await _history(w, person_id)) >= {change_id, by_council["change_id"]}

        for key, smid in ((same_org, "rio-gp-01"), (operator, "operator-gp-01")):
            assert (await _retract(w, trust, change_id)).status_code == 200
            resent = await _post(w, key, _again(gp, smid))
            _refused_for(await _reverse(w, trust, change_id), [(resent["change_id"], smid)])
            assert (await _retract(w, operator, resent["change_id"])).status_code == 200
            r = await _reverse(w, trust, change_id)
            assert r.status_code == 200, (smid, r.text)
        await _settle(w)
        await _everyone_holds_the_truth(w, person_id)

    loop.run_until_complete(run())
