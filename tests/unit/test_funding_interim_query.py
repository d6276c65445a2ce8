"""The person query's `funding` part shows agreed interim dispute shares: each
disputing body's share of the side in dispute for the period it applies, with
the citation the statements use, and the same parts of each line the monthly
statements charge (between ICBs: Worcs 4.4.8, 15.6; between councils: Worcs
4.3.4). A body whose agreement does not grant `funding` sees neither."""

from __future__ import annotations

from datetime import date

from tests.unit.test_money_moves_api import BUCKS, QGH, QU9, WORCS, _clients, _grant_funding, _lines, _person, _statement
from tests.unit.test_packages_api import start
from hub.domain.dates import england_day


def _on(app_hub, day: str) -> None:  # noqa: ANN001
    app_hub.hub.workflows.clock.offset_days = (date.fromisoformat(day) - england_day()).days


async def _agreed_interim(app_hub, keys: dict, pid: str, kind: str, parties: list[str], shares: dict[str, str]) -> tuple[str, str]:  # noqa: ANN001, E501
    """A dispute raised on 6 October, interim terms proposed and agreed on 10 October: (case id, dispute id)."""
    lead = parties[0]
    _on(app_hub, "2026-10-06")
    r = await app_hub.http.post("/v1/disputes", headers={"X-API-Key": keys[lead]}, json={
        "person_id": pid, "kind": kind, "parties": parties, "reason": "where the person was ordinarily resident"})
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]
    _on(app_hub, "2026-10-10")
    terms = {"lead_body": lead, "shares": shares}
    for party in parties:
        r = await app_hub.http.post(f"/v1/disputes/{case_id}/interim", headers={"X-API-Key": keys[party]}, json=terms)
        assert r.status_code == 200, r.text
    assert r.json()["interims"][-1]["agreed"] is True
    app_hub.hub.workflows.clock.offset_days = 0
    return case_id, r.json()["dispute_id"]


async def _funding(app_hub, key: str, pid: str, as_of: str = "2026-10-20") -> dict | None:  # noqa: ANN001
    r = await app_hub.http.get(f"/v1/persons/{pid}/s117?as_of={as_of}", headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    return r.json().get("funding")


def _agrees(query_part: dict, statement: dict, item: dict, side: str) -> None:
    """The query's weekly part of a line and the statement's item for the same body: the same pair, share,
    note (policy citation) and, scaled to a week, the same amount to the penny."""
    assert (query_part["council"], query_part["icb"]) == (statement["council"]["code"], statement["icb"]["code"])
    assert query_part["share_percent"] == item["interim_share_percent"]
    assert query_part["note"] == item["note"]
    assert abs(item[side] * 7 / item["days"] - query_part[side]) <= 1


async def test_interim_shares_between_icbs_in_the_person_query_agree_with_the_statements(app_hub):
    keys = await _clients(app_hub)
    _grant_funding(app_hub, QGH)
    pid, _ = await _person(app_hub, 31)  # Bucks + BOB ICB (QU9) responsible
    body = start(pid, "q-1", "L1", effective_date="2026-09-20")  # 700.00 a week, council-paid
    assert (await app_hub.http.post("/v1/packages", headers={"X-API-Key": keys[BUCKS]}, json=body)).status_code == 201
    before = await _funding(app_hub, keys[QU9], pid)
    assert before["interim_shares"] == [] and "interim" not in before["packages"][0]["split_per_week"]

    case_id, dispute_id = await _agreed_interim(app_hub, keys, pid, "commissioner", [QU9, QGH], {QU9: "60", QGH: "40"})

    # Before the terms applied, the query shows no interim; from 10 October both parties see the same terms.
    assert (await _funding(app_hub, keys[QU9], pid, "2026-10-08"))["interim_shares"] == []
    for reader in (QU9, QGH):
        funding = await _funding(app_hub, keys[reader], pid)
        (terms,) = funding["interim_shares"]
        assert (terms["dispute_id"], terms["kind"], terms["side"], terms["from"], terms["to"], terms["in_force"],
                terms["lead_body"]) == (dispute_id, "commissioner", "NHS", "2026-10-10", None, True, QU9)
        assert terms["shares"] == [{"org": QU9, "percent": "60.00", "lead": True},
                                   {"org": QGH, "percent": "40.00", "lead": False}]
        assert terms["citation"].startswith("Worcs 4.4.8, 15.6") and "reimbursed" in terms["citation"]
    week = funding["packages"][0]["split_per_week"]
    nhs = 70_000 - round(70_000 * 0.5393)  # Bucks aligned budget: the NHS side of a 700.00 week
    assert (week["council_pence"], week["icb_pence"]) == (70_000 - nhs, nhs)  # the split itself is unchanged
    parts = {p["org"]: p for p in week["interim"]["parts"]}
    assert week["interim"]["dispute_id"] == dispute_id
    assert (parts[QGH]["icb_pence"], parts[QGH]["council_pence"]) == (round(nhs * 0.4), 0)
    assert (parts[QU9]["icb_pence"], parts[QU9]["council_pence"]) == (nhs - round(nhs * 0.4), 70_000 - nhs)
    assert terms["carried_per_week_pence"] == {QU9: nhs - round(nhs * 0.4), QGH: round(nhs * 0.4)}

    # The October statements of both ICBs charge the same shares to the same pairs, under the same note.
    lead_s = (await _statement(app_hub, keys[QU9], "2026-10", BUCKS, QU9)).json()
    other_s = (await _statement(app_hub, keys[QGH], "2026-10", BUCKS, QGH)).json()
    lead, other = _lines(lead_s), _lines(other_s)
    interim_lead = [i for i in lead if i["dispute_id"] == dispute_id]
    assert [(i["from"], i["to"]) for i in interim_lead] == [("2026-10-10", "2026-10-31")]
    assert [(i["from"], i["to"], i["dispute_id"]) for i in other] == [("2026-10-10", "2026-10-31", dispute_id)]
    _agrees(parts[QU9], lead_s, interim_lead[0], "icb_pence")
    _agrees(parts[QU9], lead_s, interim_lead[0], "council_pence")
    _agrees(parts[QGH], other_s, other[0], "icb_pence")
    assert "Worcs 4.4.8, 15.6" in other[0]["note"] and terms["citation"] in other[0]["note"]

    # A month after the dispute ends nothing is in force; the arrangement is shown with its period.
    _on(app_hub, "2026-10-25")
    outcome = {"responsible": QGH, "responsible_from": "2026-10-06"}
    r = await app_hub.http.post(f"/v1/disputes/{case_id}/resolve", headers={"X-API-Key": keys[QU9]}, json=outcome)
    assert r.status_code == 202, r.text  # proposed: H&W ICB must agree it (Worcs 15.5)
    r = await app_hub.http.post(f"/v1/disputes/{case_id}/resolve", headers={"X-API-Key": keys[QGH]}, json=outcome)
    assert r.status_code == 200, r.text
    app_hub.hub.workflows.clock.offset_days = 0
    later = await _funding(app_hub, keys[QGH], pid, "2026-11-05")
    (terms,) = later["interim_shares"]
    assert (terms["from"], terms["to"], terms["in_force"], terms["carried_per_week_pence"]) == (
        "2026-10-10", "2026-10-24", False, None)
    assert "interim" not in later["packages"][0]["split_per_week"]
    assert [i["dispute_id"] for i in _lines((await _statement(app_hub, keys[QGH], "2026-11", BUCKS, QGH)).json())] \
        == [None]


async def test_interim_shares_between_councils_in_the_query_and_statements_and_gated_by_funding(app_hub):
    keys = await _clients(app_hub)
    sample = app_hub.hub.sharing
    pid, _ = await _person(app_hub, 32)  # Bucks + BOB ICB (QU9) responsible
    body = start(pid, "q-2", "L1", effective_date="2026-09-20")
    assert (await app_hub.http.post("/v1/packages", headers={"X-API-Key": keys[BUCKS]}, json=body)).status_code == 201
    _, dispute_id = await _agreed_interim(app_hub, keys, pid, "council", [BUCKS, WORCS], {BUCKS: "70", WORCS: "30"})

    # Worcestershire, a party to the dispute, has no `funding` in its agreement: the position, no costs,
    # no interim shares; and no statement.
    r = await app_hub.http.get(f"/v1/persons/{pid}/s117?as_of=2026-10-20", headers={"X-API-Key": keys[WORCS]})
    assert r.status_code == 200 and "funding" not in r.json()
    assert WORCS in r.text and "interim" not in r.text
    assert (await _statement(app_hub, keys[WORCS], "2026-10", WORCS, QU9)).status_code == 404
    # The detaining trust reads the person's position, never its funding.
    r = await app_hub.http.get(f"/v1/persons/{pid}/s117?as_of=2026-10-20",
                               headers={"X-API-Key": app_hub.keys["trust"]})
    assert r.status_code == 200 and "funding" not in r.json() and "interim" not in r.text

    _grant_funding(app_hub, WORCS)
    for reader in (BUCKS, WORCS, QU9):
        funding = await _funding(app_hub, keys[reader], pid)
        (terms,) = funding["interim_shares"]
        assert (terms["kind"], terms["side"], terms["lead_body"], terms["in_force"]) == ("council", "council", BUCKS,
                                                                                         True)
        assert [(s["org"], s["percent"]) for s in terms["shares"]] == [(BUCKS, "70.00"), (WORCS, "30.00")]
        assert terms["citation"].startswith("Worcs 4.3.4")
    week = funding["packages"][0]["split_per_week"]
    council = week["council_pence"]
    parts = {p["org"]: p for p in week["interim"]["parts"]}
    # Between councils the council's share is divided; the ICB's share stays with the lead's pair.
    assert (parts[WORCS]["council"], parts[WORCS]["icb"]) == (WORCS, QU9)
    assert (parts[WORCS]["council_pence"], parts[WORCS]["icb_pence"]) == (round(council * 0.3), 0)
    assert (parts[BUCKS]["council_pence"], parts[BUCKS]["icb_pence"]) == (council - round(council * 0.3),
                                                                          week["icb_pence"])

    bucks_s = (await _statement(app_hub, keys[BUCKS], "2026-10", BUCKS, QU9)).json()
    worcs_s = (await _statement(app_hub, keys[WORCS], "2026-10", WORCS, QU9)).json()
    bucks = [i for i in _lines(bucks_s) if i["dispute_id"] == dispute_id]
    worcs = _lines(worcs_s)
    assert [(i["from"], i["to"]) for i in bucks] == [(i["from"], i["to"]) for i in worcs] == [
        ("2026-10-10", "2026-10-31")]
    _agrees(parts[BUCKS], bucks_s, bucks[0], "council_pence")
    _agrees(parts[BUCKS], bucks_s, bucks[0], "icb_pence")
    _agrees(parts[WORCS], worcs_s, worcs[0], "council_pence")
    assert "Worcs 4.3.4" in worcs[0]["note"]
    app_hub.hub.sharing = sample
