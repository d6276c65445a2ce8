"""Over the API: a package moves with a transfer of responsibility (re-detention
elsewhere) in the middle of a month; agreed interim dispute shares in the
statements of both ICBs; the reimbursement statement costed from the real
packages; a closed month restated after a late change says so."""

from __future__ import annotations

import csv
import io
import random
from datetime import date
from decimal import Decimal

import yaml

from hub.clients import add_client
from hub.domain.money.statements import period_cost
from hub.sample_data import detention_to_move_scenario
from hub.settings import REPO_ROOT
from hub.sharing import SharingAgreements
from hub.domain.dates import england_day
from tests.unit.test_packages_api import start

BUCKS, WORCS, QU9, QGH = "E06000060", "E10000034", "QU9", "QGH"


async def _person(app_hub, seed: int, moved: bool = False) -> tuple[str, dict]:  # noqa: ANN001
    changes = detention_to_move_scenario(random.Random(seed), f"mv-{seed}", date(2025, 1, 6))
    for c in changes[:4] if moved else changes[:3]:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    r = await app_hub.http.post("/v1/persons/lookup", headers={"X-API-Key": app_hub.keys["trust"]},
                                json={"nhs_number": changes[0]["person"]["nhs_number"]})
    return r.json()["person_id"], changes[0]["person"]


async def _clients(app_hub) -> dict[str, str]:  # noqa: ANN001
    keys = {}
    for org, kind in ((BUCKS, "council"), (QU9, "icb"), (QGH, "icb"), (WORCS, "council")):
        keys[org] = (await add_client(app_hub.hub.engine, f"{org} finance", org, kind,
                                      ["packages:write", "s117:read", "workflows:write"]))[1]
    keys["admin"] = (await add_client(app_hub.hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]
    return keys


def _grant_funding(app_hub, *orgs: str) -> None:  # noqa: ANN001
    """The H&W host agreement with `funding` added for these bodies (the sample one does not grant it)."""
    doc = yaml.safe_load((REPO_ROOT / "contracts" / "data-sharing-agreements.yaml").read_text())
    for ag in doc["agreements"]:
        for rec in ag.get("recipients") or []:
            if rec["org_code"] in orgs:
                rec["field_groups"] = sorted({*rec["field_groups"], "responsibility", "funding"})
    app_hub.hub.sharing = SharingAgreements.from_document(doc)


def _statement(app_hub, key: str, month: str, council: str, icb: str, fmt: str = "json"):  # noqa: ANN001, ANN202
    return app_hub.http.get(f"/v1/statements?month={month}&council={council}&icb={icb}&format={fmt}",
                            headers={"X-API-Key": key})


def _lines(body: dict) -> list[dict]:
    return [i for p in body["persons"] for i in p["lines"]]


async def test_a_transfer_mid_month_moves_the_package_and_a_stated_month_is_restated_openly(app_hub):
    keys = await _clients(app_hub)
    pid, person = await _person(app_hub, 21, moved=True)  # lives in Worcestershire now; Bucks + BOB ICB responsible
    body = start(pid, "t-1", "L1", effective_date="2026-09-01")  # 700.00 a week, paid by the council
    assert (await app_hub.http.post("/v1/packages", headers={"X-API-Key": keys[BUCKS]}, json=body)).status_code == 201

    # October stated before anyone knew of the re-detention: all of it Bucks / BOB ICB. Issue 1.
    first = (await _statement(app_hub, keys[QU9], "2026-10", BUCKS, QU9)).json()
    assert [(i["from"], i["to"], i["days"]) for i in _lines(first)] == [("2026-10-01", "2026-10-31", 31)]
    assert first["issue"]["number"] == 1 and first["issue"]["restated"] is False
    sept = (await _statement(app_hub, keys[QU9], "2026-09", BUCKS, QU9)).json()
    assert sept["issue"]["number"] == 1

    # Re-detained from Worcestershire on 15 October, notified late: the council moves (Worcs 4.3.3),
    # the ICB stays (already receiving aftercare, Worcs 4.4.2).
    redetained = {"source_system": "RiO (demo)", "person": person, "source_message_id": "mv-21-re",
                  "change_type": "detained", "effective_date": "2026-10-15", "legal_status_code": "03",
                  "hospital_ods": "RNU", "gp_practice_ods": "M81001", "residence_la_gss": WORCS}
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=redetained)
    assert r.status_code == 202, r.text

    old = (await _statement(app_hub, keys[QU9], "2026-10", BUCKS, QU9)).json()
    new = (await _statement(app_hub, keys[QU9], "2026-10", WORCS, QU9)).json()
    (o,), (n,) = _lines(old), _lines(new)
    assert (o["from"], o["to"], o["days"], o["cost_pence"]) == ("2026-10-01", "2026-10-14", 14, 140_000)
    assert (n["from"], n["to"], n["days"], n["cost_pence"]) == ("2026-10-15", "2026-10-31", 17, 170_000)
    assert "responsible on the register from 2026-10-15" in n["note"] and "Worcs 4.3.3" in n["note"]
    assert n["council_pence"] + n["icb_pence"] == n["eligible_pence"] == 170_000
    # The month already stated is not rewritten silently: a second issue that says what it restates.
    assert old["issue"]["number"] == 2 and old["issue"]["restated"] is True
    assert old["issue"]["restates"]["number"] == 1
    assert old["issue"]["difference"]["cost_pence"] == -170_000
    assert "restates issue 1" in old["issue"]["explanation"]
    again = (await _statement(app_hub, keys[QU9], "2026-10", BUCKS, QU9)).json()
    assert again["issue"]["number"] == 2  # the same content is the same issue
    # September is untouched by a move from 15 October: still its first issue, nothing for the new pair.
    assert (await _statement(app_hub, keys[QU9], "2026-09", BUCKS, QU9)).json()["issue"]["number"] == 1
    assert (await _statement(app_hub, keys[QU9], "2026-09", WORCS, QU9)).json()["persons"] == []
    csv_rows = list(csv.DictReader(io.StringIO((await _statement(app_hub, keys[QU9], "2026-10", BUCKS, QU9,
                                                                 "csv")).text)))
    assert csv_rows[-1]["person_id"] == "TOTAL" and "restates issue 1" in csv_rows[-1]["note"]
    # The statement is for the two bodies with `funding` granted: Worcestershire has no funding grant.
    assert (await _statement(app_hub, keys[WORCS], "2026-10", WORCS, QU9)).status_code == 404
    assert (await _statement(app_hub, keys[BUCKS], "2026-10", WORCS, QU9)).status_code == 404


async def test_interim_shares_in_both_icbs_statements_and_reimbursement_from_the_packages(app_hub):
    keys = await _clients(app_hub)
    sample = app_hub.hub.sharing
    _grant_funding(app_hub, QGH)
    pid, _ = await _person(app_hub, 22)  # Bucks + BOB ICB (QU9) responsible
    body = start(pid, "i-1", "L1", effective_date="2026-09-20")  # 700.00 a week, council-paid
    assert (await app_hub.http.post("/v1/packages", headers={"X-API-Key": keys[BUCKS]}, json=body)).status_code == 201
    wf = app_hub.hub.workflows
    real = england_day()

    def on(day: str) -> None:
        wf.clock.offset_days = (date.fromisoformat(day) - real).days

    on("2026-10-06")
    r = await app_hub.http.post("/v1/disputes", headers={"X-API-Key": keys[QU9]}, json={
        "person_id": pid, "kind": "commissioner", "parties": [QU9, QGH], "reason": "GP registration at detention"})
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]
    on("2026-10-10")
    terms = {"lead_body": QU9, "shares": {QU9: "60", QGH: "40"}}
    assert (await app_hub.http.post(f"/v1/disputes/{case_id}/interim", headers={"X-API-Key": keys[QU9]},
                                    json=terms)).status_code == 200
    # Proposed, not agreed: the statements still charge the current arrangements (Worcs 8.5).
    assert (await _statement(app_hub, keys[QGH], "2026-10", BUCKS, QGH)).json()["persons"] == []
    r = await app_hub.http.post(f"/v1/disputes/{case_id}/interim", headers={"X-API-Key": keys[QGH]}, json=terms)
    assert r.status_code == 200 and r.json()["interims"][-1]["agreed"] is True

    lead = _lines((await _statement(app_hub, keys[QU9], "2026-10", BUCKS, QU9)).json())
    other = _lines((await _statement(app_hub, keys[QGH], "2026-10", BUCKS, QGH)).json())
    assert [(i["from"], i["to"], i["dispute_id"]) for i in lead] == [
        ("2026-10-01", "2026-10-09", None), ("2026-10-10", "2026-10-31", r.json()["dispute_id"])]
    (b,) = other
    a = lead[1]
    cost = period_cost(Decimal(70_000), 22)  # 220,000
    council = round(cost * 0.5393)  # Bucks aligned budget: the council's share stays whole
    nhs = cost - council
    assert (a["council_pence"], a["icb_pence"]) == (council, nhs - round(nhs * 0.4))
    assert (b["council_pence"], b["icb_pence"], b["cost_pence"]) == (0, round(nhs * 0.4), round(nhs * 0.4))
    assert a["cost_pence"] + b["cost_pence"] == cost
    assert b["icb_owes_council_pence"] == b["icb_pence"] and b["interim_share_percent"] == "40.00"
    assert "Worcs 4.4.8, 15.6" in b["note"] and "reimburse" in b["note"]
    # Only the bodies party to a statement, with funding granted, see it; others the same 404.
    assert (await _statement(app_hub, keys[QGH], "2026-10", BUCKS, QU9)).status_code == 404
    assert (await _statement(app_hub, app_hub.keys["E08000025"], "2026-10", BUCKS, QGH)).status_code == 404

    # Resolved on 25 October: BOB ICB was not responsible; H&W ICB was, from the day the dispute arose.
    on("2026-10-25")
    outcome = {"responsible": QGH, "responsible_from": "2026-10-06"}
    r = await app_hub.http.post(f"/v1/disputes/{case_id}/resolve", headers={"X-API-Key": keys[QU9]}, json=outcome)
    assert r.status_code == 202, r.text  # proposed: H&W ICB must agree it (Worcs 15.5)
    r = await app_hub.http.post(f"/v1/disputes/{case_id}/resolve", headers={"X-API-Key": keys[QGH]}, json=outcome)
    assert r.status_code == 200, r.text
    s = (await app_hub.http.get(f"/v1/disputes/{case_id}/reimbursement", headers={"X-API-Key": keys[QGH]})).json()
    # 6-9 Oct: no terms agreed, BOB carried the NHS share (4 days of 100.00 x 46.07%);
    # 10-24 Oct: 60% of it. H&W ICB owed all of it and reimburses BOB what BOB carried.
    four = 40_000 - round(40_000 * 0.5393)
    fifteen = 150_000 - round(150_000 * 0.5393)
    assert s["payer"] == QGH and s["payees"] == [QU9] and s["side"] == "NHS"
    assert [(x["carried_by"], x["start"], x["end"], x["amount_pence"]) for x in s["lines"]] == [
        (QU9, "2026-10-06", "2026-10-09", four), (QU9, "2026-10-10", "2026-10-24", fifteen - round(fifteen * 0.4))]
    assert s["total_pence"] == four + fifteen - round(fifteen * 0.4)
    bodies = {x["org"]: x for x in s["bodies"]}
    assert bodies[QU9]["balance_pence"] == s["total_pence"] and bodies[QU9]["owed_pence"] == 0
    assert bodies[QGH]["owed_pence"] == four + fifteen and bodies[QGH]["balance_pence"] == -s["total_pence"]
    # A party whose agreement does not grant `funding` sees the periods and shares, not the amounts.
    granted = app_hub.hub.sharing
    app_hub.hub.sharing = sample
    hidden = (await app_hub.http.get(f"/v1/disputes/{case_id}/reimbursement", headers={"X-API-Key": keys[QGH]})).json()
    assert hidden["total_pence"] is None and hidden["bodies"] == [] and "funding" in hidden["amounts"]
    assert [x["amount_pence"] for x in hidden["lines"]] == [None, None] and hidden["lines"][1]["share_bp"] == 6_000
    app_hub.hub.sharing = granted
    # From the resolution, the package is charged to Bucks and H&W ICB; the interim days stay as charged.
    after = _lines((await _statement(app_hub, keys[QGH], "2026-10", BUCKS, QGH)).json())
    assert [(i["from"], i["to"], i["dispute_id"] is not None) for i in after] == [
        ("2026-10-10", "2026-10-24", True), ("2026-10-25", "2026-10-31", False)]
    wf.clock.offset_days = 0
