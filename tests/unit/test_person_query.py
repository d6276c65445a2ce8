"""GET /v1/persons/{person_id}/s117 and POST /v1/persons/lookup."""

from __future__ import annotations

import random
from datetime import date

from hub.sample_data import detention_to_move_scenario


async def _record_scenario(app_hub) -> tuple[str, dict]:  # noqa: ANN001
    changes = detention_to_move_scenario(random.Random(3), "q", date(2025, 1, 6))
    h = {"X-API-Key": app_hub.keys["trust"]}
    for c in changes:
        r = await app_hub.http.post("/v1/register-changes", headers=h, json=c)
        assert r.status_code == 202
    return r.json()["person_id"], changes[0]["person"]


async def test_responsible_council_sees_entitlement_with_explanations(app_hub):
    person_id, _ = await _record_scenario(app_hub)
    r = await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": app_hub.keys["E06000060"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["entitled"] is True
    assert body["responsible_council"]["org"]["code"] == "E06000060"
    assert "Worcs 4.3" in body["responsible_council"]["citation"]
    assert body["responsible_commissioner"]["org"]["code"] == "QU9"
    assert body["responsible_commissioner"]["explanation"]
    # Every pending review with its trigger: the overdue first review does not
    # hide the unscheduled one the move to Worcestershire set off (Worcs 14.1, 17.1).
    pending = [(r["kind"], r["due_on"], r["trigger"], r["citation"]) for r in body["pending_reviews"]]
    assert pending == [("unscheduled", "2025-06-05", "moved", "Worcs 14.1, 17.1"),
                       ("first", "2025-07-06", "left-hospital", "Worcs 14.1 (within 3 months of discharge)")]
    assert body["next_review"] == body["pending_reviews"][0]
    assert len(body["register_service_level"]) == 4
    # Moving to Worcestershire did not move responsibility (Worcs 4.3: moves after discharge do not change it).
    assert body["residence_la_gss"] == "E10000034"


async def test_history_answers_as_of_a_date(app_hub):
    person_id, _ = await _record_scenario(app_hub)
    h = {"X-API-Key": app_hub.keys["E06000060"]}
    before = (await app_hub.http.get(f"/v1/persons/{person_id}/s117?as_of=2025-02-01", headers=h)).json()
    assert before["entitled"] is False and before["detained"] is True


async def test_an_organisation_not_party_to_the_care_cannot_see_the_person(app_hub):
    person_id, person = await _record_scenario(app_hub)
    h = {"X-API-Key": app_hub.keys["E08000025"]}  # Birmingham: no part in this person's care
    r = await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers=h)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    r = await app_hub.http.post("/v1/persons/lookup", headers=h, json={"nhs_number": person["nhs_number"]})
    assert r.status_code == 404


async def test_lookup_by_nhs_number_is_a_post_with_the_number_in_the_body(app_hub):
    person_id, person = await _record_scenario(app_hub)
    h = {"X-API-Key": app_hub.keys["E06000060"]}
    r = await app_hub.http.post("/v1/persons/lookup", headers=h, json={"nhs_number": person["nhs_number"]})
    assert r.json() == {"person_id": person_id}
    r = await app_hub.http.post("/v1/persons/lookup", headers=h, json={"nhs_number": "9990000010"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "nhs_number"
    assert "9990000010" not in r.text


async def test_the_reporting_trust_can_see_its_patient(app_hub):
    person_id, _ = await _record_scenario(app_hub)
    r = await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": app_hub.keys["trust"]})
    assert r.status_code == 200
    r = await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": app_hub.keys["other-trust"]})
    assert r.status_code == 404
