"""Money review (statements): who is charged a line's days after the register
moved responsibility, when the line is later changed, or when the move reached
the hub after the line (README "A package moves with responsibility")."""

from __future__ import annotations

import random
from datetime import date

from hub.sample_data import detention_to_move_scenario
from tests.unit.test_money_moves_api import BUCKS, QU9, WORCS, _clients, _grant_funding, _lines, _statement
from tests.unit.test_packages_api import start


async def _person(app_hub, seed: int) -> tuple[str, dict]:  # noqa: ANN001
    """Bucks and BOB ICB (QU9) responsible from 2025 (lives in Worcestershire since June 2025), every change
    sent on the day it happened (`notified_on` its effective date, as a source sending at once does)."""
    changes = detention_to_move_scenario(random.Random(seed), f"rv-{seed}", date(2025, 1, 6))[:4]
    for c in changes:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                    json={**c, "notified_on": c["effective_date"]})
        assert r.status_code == 202, r.text
    return r.json()["person_id"], changes[0]["person"]


def _redetained(person: dict, smid: str, day: str, notified: str | None = None) -> dict:
    c = {"source_system": "RiO (demo)", "person": person, "source_message_id": smid, "change_type": "detained",
         "effective_date": day, "legal_status_code": "03", "hospital_ods": "RNU", "gp_practice_ods": "M81001",
         "residence_la_gss": WORCS}
    return {**c, "notified_on": notified} if notified else c


async def _days(app_hub, key: str, month: str, council: str) -> list[tuple[str, str, int]]:  # noqa: ANN001
    r = await _statement(app_hub, key, month, council, QU9)
    assert r.status_code == 200, r.text
    return [(i["package_id"], i["from"], i["to"], i["days"]) for i in _lines(r.json())]


async def test_a_change_after_a_move_stays_with_the_pair_the_register_names(app_hub):
    """QU9 records a line for Bucks and QU9 from September; the person is moved to Worcestershire from
    15 October (the ICB stays, Worcs 4.4.2); QU9 (still responsible) changes the line's cost from
    1 November. November's days are Worcestershire's, as October's second half is: the new version is
    charged by the register, not put back on the pair the line was first recorded against."""
    keys = await _clients(app_hub)
    _grant_funding(app_hub, WORCS)
    pid, person = await _person(app_hub, 31)
    r = await app_hub.http.post("/v1/packages", headers={"X-API-Key": keys[QU9]},
                                json=start(pid, "c-1", "L1", effective_date="2026-09-01", paid_by="icb"))
    assert r.status_code == 201, r.text
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                json=_redetained(person, "c-31-re", "2026-10-15", notified="2026-10-15"))
    assert r.status_code == 202, r.text
    change = {"source_message_id": "c-2", "action": "change", "package_id": "L1", "person_id": pid,
              "effective_date": "2026-11-01", "weekly_cost_pence": 77_000}
    r = await app_hub.http.post("/v1/packages", headers={"X-API-Key": keys[QU9]}, json=change)
    assert r.status_code == 201, r.text

    assert await _days(app_hub, keys[QU9], "2026-10", BUCKS) == [("L1", "2026-10-01", "2026-10-14", 14)]
    assert await _days(app_hub, keys[QU9], "2026-10", WORCS) == [("L1", "2026-10-15", "2026-10-31", 17)]
    assert await _days(app_hub, keys[QU9], "2026-11", BUCKS) == []
    assert await _days(app_hub, keys[QU9], "2026-11", WORCS) == [("L1", "2026-11-01", "2026-11-30", 30)]


async def test_a_move_received_after_the_line_from_before_its_start_is_charged_by_the_register(app_hub):
    """The register learns late that Worcestershire has been responsible since 25 September (notified then),
    after Bucks recorded a line from 1 October. Every day of the line is charged once, to the pair the
    register names (as the person query and any person with a later change already had it), not left with
    Bucks because nothing took effect or was notified after the line began."""
    keys = await _clients(app_hub)
    _grant_funding(app_hub, WORCS)
    pid, person = await _person(app_hub, 32)
    r = await app_hub.http.post("/v1/packages", headers={"X-API-Key": keys[BUCKS]},
                                json=start(pid, "m-1", "M1", effective_date="2026-10-01"))
    assert r.status_code == 201, r.text
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                json=_redetained(person, "m-32-re", "2026-09-25", notified="2026-09-25"))
    assert r.status_code == 202, r.text
    before = (await _days(app_hub, keys[QU9], "2026-10", BUCKS), await _days(app_hub, keys[QU9], "2026-10", WORCS))
    assert before == ([], [("M1", "2026-10-01", "2026-10-31", 31)])


async def test_true_or_false_is_not_an_amount(app_hub):
    """JSON `true` as a weekly or unit cost was read as 1 penny and recorded: now a 422 naming the field."""
    from tests.unit.test_packages_api import _person as person_of

    keys = await _clients(app_hub)
    pid, _ = await person_of(app_hub)
    h = {"X-API-Key": keys[BUCKS]}
    for n, body in enumerate((start(pid, "b-1", "B1", weekly_cost_pence=True),
                              start(pid, "b-2", "B2", weekly_cost_pence=None, unit_cost_pence=False,
                                    units_per_week="2"))):
        r = await app_hub.http.post("/v1/packages", headers=h, json=body)
        assert r.status_code == 422, r.text
        field = ("weekly_cost_pence", "unit_cost_pence")[n]
        assert r.json()["errors"] == [{"field": field, "reason": "must be a whole number of pence, not true or false"}]
    r = await app_hub.http.post("/v1/packages", headers=h, json=start(pid, "b-3", "B3", weekly_cost_pence=1))
    assert r.status_code == 201, r.text


async def test_a_string_or_a_decimal_point_is_not_an_amount_of_pence(app_hub):
    """"1250" (pence, or pounds?) and 1250.0 were read as 1,250 pence and recorded: now a 422 naming
    the field and why, never the value; nothing recorded. Whole numbers still are amounts."""
    from tests.unit.test_packages_api import _person as person_of

    keys = await _clients(app_hub)
    pid, _ = await person_of(app_hub)
    h = {"X-API-Key": keys[BUCKS]}
    refused = (
        (start(pid, "s-1", "S1", weekly_cost_pence="125000"), "weekly_cost_pence",
         "must be a whole number of pence as a JSON number, not a string"),
        (start(pid, "s-2", "S2", weekly_cost_pence=125000.0), "weekly_cost_pence",
         "must be a whole number of pence, without a decimal point"),
        (start(pid, "s-3", "S3", weekly_cost_pence=None, unit_cost_pence="9000", units_per_week="2"),
         "unit_cost_pence", "must be a whole number of pence as a JSON number, not a string"),
    )
    for body, field, reason in refused:
        r = await app_hub.http.post("/v1/packages", headers=h, json=body)
        assert r.status_code == 422, r.text
        assert r.json()["errors"] == [{"field": field, "reason": reason}]
        assert "125000" not in r.text and "9000" not in r.text
    r = await app_hub.http.post("/v1/packages", headers=h, json=start(pid, "s-4", "S4", weekly_cost_pence=125000))
    assert r.status_code == 201, r.text


async def test_package_dates_and_flags_are_not_coerced(app_hub):
    """As the register-change contract: a date only as a YYYY-MM-DD string (a Unix time, 1789862400, or
    "20260920" was read as a date and recorded), a flag only true or false ("yes", 1 were read as true)."""
    from tests.unit.test_packages_api import _person as person_of

    keys = await _clients(app_hub)
    pid, _ = await person_of(app_hub)
    h = {"X-API-Key": keys[BUCKS]}
    refused = ((start(pid, "d-1", "D1", effective_date=1789862400), "effective_date"),
               (start(pid, "d-2", "D2", effective_date="20260920"), "effective_date"),
               (start(pid, "d-3", "D3", end_date=1789862400), "end_date"),
               (start(pid, "d-4", "D4", s117_eligible="yes"), "s117_eligible"),
               (start(pid, "d-5", "D5", s17_leave=1), "s17_leave"))
    for body, field in refused:
        r = await app_hub.http.post("/v1/packages", headers=h, json=body)
        assert r.status_code == 422, r.text
        assert [e["field"] for e in r.json()["errors"]] == [field], r.text
        assert "1789862400" not in r.text and "20260920" not in r.text
    r = await app_hub.http.post("/v1/packages", headers=h,
                                json=start(pid, "d-6", "D6", s117_eligible=True, s17_leave=False))
    assert r.status_code == 201, r.text
