"""A split decision is agreed by the bodies responsible over the days it
covers (outside review). A split divides the s117 aftercare costs between the
council and the ICB jointly responsible for the person (Worcs 8.5, A2.3): when
responsibility moves between the proposal and the agreement (re-detention
from another area, Worcs 4.3.3), the body that is no longer responsible can
no longer agree it, nor can the new one agree a proposal made to its
predecessor: the proposal is superseded, and the bodies responsible now
propose again. Through the real API, the hub on SQLite."""

from __future__ import annotations

import random
from dataclasses import replace as dc_replace
from datetime import date

from hub.domain.agreements import FundingAgreement, FundingKind
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import access_decisions, split_decisions
from tests.unit.test_money_access import _clients, _rows
from tests.unit.test_money_moves_api import BUCKS, QU9, WORCS, _grant_funding
from tests.unit.test_packages_api import start

EXCEPTIONS = FundingAgreement(FundingKind.DEFAULT_WITH_EXCEPTIONS, "60:40 with exceptions", "Worcs A2.1, A2.2",
                              council_share_bp=6_000)


async def _setup(app_hub, seed: int) -> tuple[dict[str, str], str, dict]:  # noqa: ANN001
    """Both pairs' arrangements take exceptions; a person Bucks and BOB ICB (QU9) are responsible for."""
    book = app_hub.hub.agreements
    book = dc_replace(book, funding={**book.funding, (BUCKS, QU9): EXCEPTIONS, (WORCS, QU9): EXCEPTIONS})
    app_hub.hub.agreements = app_hub.hub.packages._agreements = book
    key = {org: k for org, (_, k) in (await _clients(app_hub)).items()}
    _grant_funding(app_hub, BUCKS, QU9, WORCS)
    changes = detention_to_move_scenario(random.Random(seed), f"sr-{seed}", date(2025, 1, 6))
    for c in changes[:3]:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    return key, r.json()["person_id"], changes[0]["person"]


async def _redetained_from_worcs(app_hub, person: dict, seed: int, day: str) -> None:  # noqa: ANN001
    """Re-detained while living in Worcestershire: the council moves (Worcs 4.3.3), the ICB stays (4.4.2)."""
    again = {"source_system": "RiO (demo)", "person": person, "source_message_id": f"sr-{seed}-re",
             "change_type": "detained", "effective_date": day, "legal_status_code": "03",
             "hospital_ods": "RNU", "gp_practice_ods": "M81001", "residence_la_gss": WORCS}
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=again)
    assert r.status_code == 202, r.text


def _propose(app_hub, key: str, pid: str, day: str, ref: str):  # noqa: ANN001, ANN202
    return app_hub.http.post("/v1/split-decisions", headers={"X-API-Key": key}, json={
        "person_id": pid, "kind": "exception", "council_share_percent": "30", "effective_from": day,
        "reference": ref})


def _agree(app_hub, key: str, decision_id: str):  # noqa: ANN001, ANN202
    return app_hub.http.post(f"/v1/split-decisions/{decision_id}/agree", headers={"X-API-Key": key})


def _moved(r, side: str) -> None:  # noqa: ANN001
    """The superseded proposal's answer: 409 problem details naming the side that moved."""
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"].endswith("/responsibility-moved") and body["status"] == 409
    assert [e["field"] for e in body["errors"]] == [side]
    assert "propose a new one" in body["errors"][0]["reason"]
    assert WORCS not in r.text and BUCKS not in r.text  # who is responsible now is not told


async def test_a_proposal_to_a_council_no_longer_responsible_cannot_be_agreed(app_hub):
    key, pid, person = await _setup(app_hub, 61)
    r = await _propose(app_hub, key[QU9], pid, "2027-01-01", "panel 2026-12-01")
    assert r.status_code == 201 and r.json()["awaiting"] == BUCKS, r.text
    did = r.json()["decision_id"]
    # Before Bucks agrees, the trust reports a re-detention from Worcestershire (after the proposal, or
    # notified late: the register is what it is when the agreement is asked).
    await _redetained_from_worcs(app_hub, person, 61, "2026-11-20")

    _moved(await _agree(app_hub, key[BUCKS], did), "council")  # was: 200, Bucks agreeing for Worcestershire's days
    _moved(await _agree(app_hub, key[WORCS], did), "council")  # the new council cannot agree its predecessor's either
    async with app_hub.hub.engine.connect() as conn:
        assert (await conn.execute(split_decisions.select().where(
            split_decisions.c.decision_id == did))).first().agreed_at is None
        await conn.rollback()
    # The bodies responsible now propose again: the ICB asks Worcestershire, which agrees.
    again = await _propose(app_hub, key[QU9], pid, "2027-01-01", "panel 2026-12-01")
    assert again.status_code == 201 and again.json()["awaiting"] == WORCS, again.text
    ok = await _agree(app_hub, key[WORCS], again.json()["decision_id"])
    assert ok.status_code == 200 and ok.json()["status"] == "agreed", ok.text
    # Audited: Bucks is no longer responsible (denied, no relationship); Worcestershire is, with `funding`
    # (allowed both times: its first agreement was refused on the proposal, not by the access policy).
    rows = [r for r in await _rows(app_hub, access_decisions) if r.change_type == "split-decision-agree"]
    assert sorted((r.org_code, r.decision, r.rule, r.role) for r in rows) == sorted([
        (BUCKS, "denied", "no-relationship", None), (WORCS, "allowed", "allowed", "responsible-council"),
        (WORCS, "allowed", "allowed", "responsible-council")])


async def test_a_split_from_before_a_move_is_refused_when_proposed_and_when_agreed(app_hub):
    """Its days from the move are another pair's: a split covers the days of one pair, the one agreeing it."""
    key, pid, person = await _setup(app_hub, 62)
    r = await _propose(app_hub, key[BUCKS], pid, "2026-11-01", "panel 2026-10-30")
    assert r.status_code == 201 and r.json()["awaiting"] == QU9, r.text
    await _redetained_from_worcs(app_hub, person, 62, "2026-11-20")  # the council moves from 20 November
    # The ICB is responsible throughout, but the proposal's council is not: superseded.
    _moved(await _agree(app_hub, key[QU9], r.json()["decision_id"]), "council")
    # Proposed again from 1 November by the pair responsible now: 20 November is named, nothing else.
    late = await _propose(app_hub, key[WORCS], pid, "2026-11-01", "panel 2026-10-30")
    assert late.status_code == 422, late.text
    assert late.headers["content-type"].startswith("application/problem+json")
    (err,) = late.json()["errors"]
    assert err["field"] == "effective_from" and "2026-11-20" in err["reason"], err
    ok = await _propose(app_hub, key[WORCS], pid, "2026-11-20", "panel 2026-10-30")
    assert ok.status_code == 201 and ok.json()["awaiting"] == QU9, ok.text
    assert (await _agree(app_hub, key[QU9], ok.json()["decision_id"])).status_code == 200


async def test_a_proposal_with_the_pair_unchanged_is_still_agreed(app_hub):
    """Regression guard: a register change that moves no one (a move of residence: the originating
    council stays responsible) leaves the proposal to be agreed."""
    key, pid, person = await _setup(app_hub, 63)
    r = await _propose(app_hub, key[BUCKS], pid, "2026-06-01", "panel 2026-05-30")
    assert r.status_code == 201, r.text
    moved = detention_to_move_scenario(random.Random(63), "sr-63", date(2025, 1, 6))[3]
    assert (await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                    json=moved)).status_code == 202
    ok = await _agree(app_hub, key[QU9], r.json()["decision_id"])
    assert ok.status_code == 200 and ok.json()["status"] == "agreed", ok.text


def test_sides_moved_and_pair_since_over_the_days_covered():
    from hub.domain.money.responsibility import PairSpan, pair_since, sides_moved
    bucks = PairSpan(date(2026, 1, 1), BUCKS, QU9)
    worcs = PairSpan(date(2026, 11, 20), WORCS, QU9)
    assert sides_moved((bucks,), (BUCKS, QU9)) == () and pair_since((bucks,), (BUCKS, QU9)) is None
    assert sides_moved((bucks, worcs), (BUCKS, QU9)) == ("council",)
    assert sides_moved((bucks, worcs), (WORCS, "QGH")) == ("council", "icb")
    assert pair_since((bucks, worcs), (WORCS, QU9)) == date(2026, 11, 20)
    assert pair_since((bucks, worcs), (BUCKS, QU9)) is None  # the last span is another pair's
    back = PairSpan(date(2026, 12, 1), BUCKS, QU9)  # moved away and back: only the last run counts
    assert pair_since((bucks, worcs, back), (BUCKS, QU9)) == date(2026, 12, 1)
    assert pair_since((), (BUCKS, QU9)) is None


async def test_a_split_agreed_by_one_pair_is_not_applied_to_the_next_pairs_days(app_hub):
    """Was: Worcestershire's November statement showed Bucks and QU9's 30% "agreed exception"
    (PersonDecision had no pair; it applied to whichever pair was charged)."""
    key, pid, person = await _setup(app_hub, 64)
    r = await _propose(app_hub, key[BUCKS], pid, "2026-06-01", "panel 2026-05-30")  # 30% council
    assert (await _agree(app_hub, key[QU9], r.json()["decision_id"])).status_code == 200
    assert (await app_hub.http.post("/v1/packages", headers={"X-API-Key": key[BUCKS]},
                                    json=start(pid, "c-1", "C1", effective_date="2026-06-01"))).status_code == 201
    await _redetained_from_worcs(app_hub, person, 64, "2026-11-20")  # after the agreement
    s = (await app_hub.http.get(f"/v1/statements?month=2026-11&council={WORCS}&icb={QU9}",
                                headers={"X-API-Key": key[QU9]})).json()
    # Worcestershire and QU9 agreed nothing for this person: their area agreement (60:40) applies.
    assert [(i["from"], i["basis"]) for p in s["persons"] for i in p["lines"]] == [("2026-11-20", "area agreement")]
