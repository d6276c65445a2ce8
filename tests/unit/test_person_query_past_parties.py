"""The person query's transfers and funding, for past parties and by caller
(README "Roles and access": a past party reads "as_of dates inside its own
period, nothing later"; "Packages and money": each pair's own lines).

With `as_of`, transfers are those opened by then, in the state they had then,
and only the caller's own cases; funding lines are those begun by then and
charged to a pair the caller belongs to (on some day up to then). Without
`as_of`, the same caller filter."""

from __future__ import annotations

import random
from datetime import date, timedelta

from sqlalchemy import select

from hub.clients import add_client
from hub.store.schema import disclosures
from hub.sample_data import detention_to_move_scenario
from hub.domain.dates import england_day
from tests.unit.test_money_moves_api import BUCKS, QU9, WORCS, _grant_funding
from tests.unit.test_packages_api import start
from tests.unit.test_workflows_api import drain


async def _scenario(app_hub, seed: int):  # noqa: ANN001, ANN202
    """Bucks' lines from May 2025 (one ended in September); re-detained from Worcestershire on 15 October 2025 (the transfer case
    Bucks -> Worcestershire opens today); Worcestershire's line from November 2026; the transfer
    accepted three days from today."""
    keys = {}
    for org, kind in ((BUCKS, "council"), (QU9, "icb"), (WORCS, "council")):
        keys[org] = (await add_client(app_hub.hub.engine, org, org, kind,
                                      ["packages:write", "s117:read", "workflows:write"]))[1]
    keys["admin"] = (await add_client(app_hub.hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]
    _grant_funding(app_hub, WORCS)
    changes = detention_to_move_scenario(random.Random(seed), f"pp-{seed}", date(2025, 1, 6))
    trust = {"X-API-Key": app_hub.keys["trust"]}
    for c in changes[:4]:
        r = await app_hub.http.post("/v1/register-changes", headers=trust, json=c)
        assert r.status_code == 202, r.text
    pid = r.json()["person_id"]
    for body in (start(pid, "pb-1", "BL", effective_date="2025-05-01"),  # Bucks', while it is responsible
                 {**start(pid, "pb-2", "BE", effective_date="2025-05-01"), "end_date": "2025-09-30"}):
        r = await app_hub.http.post("/v1/packages", headers={"X-API-Key": keys[BUCKS]}, json=body)
        assert r.status_code == 201, r.text
    again = {"source_system": "RiO (demo)", "person": changes[0]["person"], "source_message_id": f"pp-{seed}-re",
             "change_type": "detained", "effective_date": "2025-10-15", "legal_status_code": "03",
             "hospital_ods": "RNU", "gp_practice_ods": "M81001", "residence_la_gss": WORCS}
    r = await app_hub.http.post("/v1/register-changes", headers=trust, json=again)
    assert r.status_code == 202, r.text
    await drain(app_hub)
    r = await app_hub.http.post("/v1/packages", headers={"X-API-Key": keys[WORCS]},
                                json=start(pid, "pw-1", "WL", effective_date="2026-11-01",
                                           provider={"kind": "council", "code": "WCC-PRV-9"}))
    assert r.status_code == 201 and (r.json()["council"], r.json()["icb"]) == (WORCS, QU9), r.text
    (case,) = (await app_hub.http.get("/v1/transfers", headers={"X-API-Key": keys[WORCS]})).json()["items"]
    assert (case["outgoing"], case["incoming"], case["role"]) == (BUCKS, WORCS, "council")
    today = england_day()
    app_hub.hub.workflows.clock.offset_days = 3
    r = await app_hub.http.post(f"/v1/transfers/{case['case_id']}/accept", headers={"X-API-Key": keys[WORCS]})
    assert r.status_code == 200, r.text
    app_hub.hub.workflows.clock.offset_days = 0
    return keys, pid, today


async def _query(app_hub, key: str, pid: str, as_of: date | str | None = None) -> dict:  # noqa: ANN001
    q = f"/v1/persons/{pid}/s117" + (f"?as_of={as_of}" if as_of else "")
    r = await app_hub.http.get(q, headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    return r.json()


def _lines(body: dict) -> list[str]:
    return sorted(p["package_id"] for p in body["funding"]["packages"])


async def test_a_past_party_sees_its_own_period_and_nothing_later(app_hub):
    keys, pid, _ = await _scenario(app_hub, 51)
    body = await _query(app_hub, keys[BUCKS], pid, "2025-06-01")
    assert body["responsible_council"]["org"]["code"] == BUCKS
    assert body["transfers"] == []  # opened after 1 June 2025, and accepted later still
    assert _lines(body) == ["BE", "BL"]  # not Worcestershire's line of November 2026
    assert WORCS not in str(body["funding"]) and "WCC-PRV-9" not in str(body)
    # Before anything: no responsible body, no transfer, no line.
    early = await _query(app_hub, keys[QU9], pid, "1900-01-01")
    assert early["responsible_council"] is None
    assert early["transfers"] == [] and early["funding"]["packages"] == []
    # The hub operator sees every case, but as of a date nothing later either.
    assert (await _query(app_hub, keys["admin"], pid, "2025-06-01"))["transfers"] == []
    assert len((await _query(app_hub, keys["admin"], pid))["transfers"]) == 1


async def test_transfers_are_the_callers_own_in_the_state_they_had_on_the_date(app_hub):
    keys, pid, today = await _scenario(app_hub, 52)
    # BOB ICB is responsible throughout but no party to the councils' transfer.
    assert (await _query(app_hub, keys[QU9], pid))["transfers"] == []
    assert (await _query(app_hub, keys[QU9], pid, today + timedelta(days=5)))["transfers"] == []
    # Worcestershire, the incoming council: pending on the day after it opened, accepted from the third day.
    (pending,) = (await _query(app_hub, keys[WORCS], pid, today + timedelta(days=1)))["transfers"]
    assert pending["state"] == "awaiting-acknowledgement"
    assert pending["text"].startswith(f"transfer pending: council responsibility from {BUCKS} to {WORCS}, to be "
                                      f"accepted by {WORCS} by 20")
    (accepted,) = (await _query(app_hub, keys[WORCS], pid, today + timedelta(days=3)))["transfers"]
    assert accepted["state"] == "accepted"
    assert accepted["text"] == f"transfer accepted by {WORCS} on {(today + timedelta(days=3)).isoformat()}"
    assert (await _query(app_hub, keys[WORCS], pid))["transfers"] == [accepted]
    assert (await _query(app_hub, keys[WORCS], pid, today - timedelta(days=1)))["transfers"] == []


async def test_each_body_sees_the_lines_charged_to_its_own_pairs(app_hub):
    keys, pid, _ = await _scenario(app_hub, 53)
    # Both bodies of a pair see the pair's lines: BOB ICB is in both pairs, Bucks and Worcestershire's.
    assert _lines(await _query(app_hub, keys[QU9], pid)) == ["BE", "BL", "WL"]
    # Worcestershire sees its own line, and Bucks' open line from the day it is charged to Worcestershire's
    # pair (the re-detention of 15 October 2025 moved it: README "A package moves with responsibility"),
    # not Bucks' line that ended before the move.
    assert _lines(await _query(app_hub, keys[WORCS], pid)) == ["BL", "WL"]
    assert _lines(await _query(app_hub, keys[WORCS], pid, "2026-06-01")) == ["BL"]
    assert _lines(await _query(app_hub, keys[BUCKS], pid, "2025-10-01")) == ["BE", "BL"]
    # The hub operator reads everything (audited), the costs too: every pair's lines.
    assert _lines(await _query(app_hub, keys["admin"], pid)) == ["BE", "BL", "WL"]


async def test_asked_with_no_date_a_read_is_the_read_as_of_today(app_hub):
    """A body the hub told of the person reads it up to the day it was last told. Asked with no
    `as_of`, the date is today: the same answer as `as_of=today` (before, a body told of the person
    today got the unknown person's 404 with no date and the person with today's date)."""
    bucks_feed = (await add_client(app_hub.hub.engine, "bucks feed", BUCKS, "council", ["subscriptions:write"]))[1]
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": bucks_feed}, json={"channel": "feed"})
    assert r.status_code == 201, r.text
    keys, pid, today = await _scenario(app_hub, 54)
    async with app_hub.hub.engine.connect() as conn:
        told = (await conn.execute(select(disclosures.c.at).where(
            disclosures.c.person_id == pid, disclosures.c.recipient_org == BUCKS,
            disclosures.c.decision == "allowed"))).all()
        await conn.rollback()
    assert told, "Bucks, the outgoing council, is told of the transfer"
    # Bucks is no longer responsible (the transfer to Worcestershire was accepted).
    assert (await _query(app_hub, keys[WORCS], pid))["responsible_council"]["org"]["code"] == WORCS
    with_date = await _query(app_hub, keys[BUCKS], pid, today)
    without = await _query(app_hub, keys[BUCKS], pid)
    # (The scenario accepts the transfer three days ahead: as of today it is still pending.)
    assert [t["case_id"] for t in without.pop("transfers")] == [t["case_id"] for t in with_date.pop("transfers")]
    assert without == with_date
    assert without["responsible_council"]["org"]["code"] == WORCS
    # A body never told of the person and with no role gets the one 404 either way.
    brum = (await add_client(app_hub.hub.engine, "brum", "E08000025", "council", ["s117:read"]))[1]
    for q in (f"/v1/persons/{pid}/s117", f"/v1/persons/{pid}/s117?as_of={today}"):
        assert (await app_hub.http.get(q, headers={"X-API-Key": brum})).status_code == 404


async def test_a_body_told_of_the_person_reads_what_it_was_told_and_no_change_received_since(app_hub):
    """A body with no part in the person's care reads the register as the hub had it when it last
    told the body: not a change received after (the same day's, or a late report about an earlier
    day). Before, Bucks, told of the transfer today, read a discharge recorded after it was told."""
    bucks_feed = (await add_client(app_hub.hub.engine, "bucks feed", BUCKS, "council", ["subscriptions:write"]))[1]
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": bucks_feed}, json={"channel": "feed"})
    assert r.status_code == 201, r.text
    keys, pid, today = await _scenario(app_hub, 55)
    await drain(app_hub)
    told_before = await _told(app_hub, pid, BUCKS)
    assert told_before, "Bucks, the outgoing council, is told of the transfer"
    before = await _query(app_hub, keys[BUCKS], pid)
    before_dated = await _query(app_hub, keys[BUCKS], pid, "2025-11-01")
    assert before["in_hospital"] is True
    # The trust reports the person left hospital yesterday: Bucks has no part now and is not told.
    trust = {"X-API-Key": app_hub.keys["trust"]}
    assert (await _query(app_hub, keys["admin"], pid))["in_hospital"] is True
    person = detention_to_move_scenario(random.Random(55), "pp-55", date(2025, 1, 6))[0]["person"]
    base = {"source_system": "RiO (demo)", "person": person, "hospital_ods": "RNU"}
    r = await app_hub.http.post("/v1/register-changes", headers=trust, json={
        **base, "source_message_id": "pp-55-left", "change_type": "left-hospital",
        "effective_date": (today - timedelta(days=1)).isoformat()})
    assert r.status_code == 202, r.text
    await drain(app_hub)
    assert await _told(app_hub, pid, BUCKS) == told_before, "Bucks is not told of the discharge"
    assert (await _query(app_hub, keys["admin"], pid))["in_hospital"] is False
    after = await _query(app_hub, keys[BUCKS], pid)
    assert after["in_hospital"] is True
    assert after["history"] == before["history"]
    assert after == before
    assert await _query(app_hub, keys[BUCKS], pid, "2025-11-01") == before_dated


async def _told(app_hub, pid: str, org: str) -> list:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        told = (await conn.execute(select(disclosures.c.event_id).where(
            disclosures.c.person_id == pid, disclosures.c.recipient_org == org,
            disclosures.c.decision == "allowed").order_by(disclosures.c.event_id))).scalars().all()
        await conn.rollback()
    return list(told)
