"""POST /v1/fhir/$process-message with the focused Encounter entered-in-error: the one change it names
(a detention, a discharge) is retracted, as an HL7 A11 / A13 retracts it (hub/retraction.py
`retract_cancelled`); none matching: 422 business-rule, held in quarantine; the access policy first (a trust
about someone it has no role for gets the 403 any message gets, nothing kept); the same message again gets
the first answer."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from sqlalchemy import func, select

from hub.fhir.namespaces import HUB_PERSON_ID_SYSTEM
from hub.store.schema import access_decisions, change_retractions, quarantine

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir_inbound"
URL = "/v1/fhir/$process-message"
FHIR_JSON = "application/fhir+json"
NHS = "9990000018"
ENC_STATUS = "Bundle.entry[2].resource.status"


def detained(message_id: str, header_id: str) -> dict[str, Any]:
    bundle = json.loads((FIXTURES / "detained.json").read_text())
    bundle["identifier"]["value"] = message_id
    bundle["entry"][0]["resource"]["id"] = header_id
    return bundle


def in_error(original: dict[str, Any], message_id: str, header_id: str) -> dict[str, Any]:
    bundle = copy.deepcopy(original)
    bundle["identifier"]["value"] = message_id
    bundle["entry"][0]["resource"]["id"] = header_id
    bundle["entry"][2]["resource"]["status"] = "entered-in-error"
    return bundle


async def post(app_hub, bundle: dict, who: str = "trust"):  # noqa: ANN001, ANN201
    return await app_hub.http.post(URL, content=orjson.dumps(bundle),
                                   headers={"X-API-Key": app_hub.keys[who], "Content-Type": FHIR_JSON})


def header_of(r) -> dict[str, Any]:  # noqa: ANN001
    body = r.json()
    Bundle.model_validate(body)
    assert body["type"] == "message"
    return body["entry"][0]["resource"]


def change_id_of(header: dict[str, Any]) -> str:
    ids = [f["identifier"]["value"] for f in header["focus"]
           if f["identifier"]["system"].endswith("/Id/register-change-id")]
    assert len(ids) == 1, header
    return ids[0]


async def recorded(app_hub) -> tuple[int, int, int]:  # noqa: ANN001
    """(retractions, quarantined messages, access decisions) kept."""
    async with app_hub.hub.engine.connect() as conn:
        return tuple([(await conn.execute(select(func.count()).select_from(t))).scalar_one()  # type: ignore[return-value]
                      for t in (change_retractions, quarantine, access_decisions)])


async def test_an_encounter_entered_in_error_retracts_the_detention_and_answers_again_the_same(app_hub) -> None:  # noqa: ANN001
    sent = detained("RIO-DET-1", "hdr-det-1")
    r = await post(app_hub, sent)
    assert r.status_code == 200, r.text
    header = header_of(r)
    change_id = change_id_of(header)
    person_id = next(f["identifier"]["value"] for f in header["focus"]
                     if f["identifier"]["system"] == HUB_PERSON_ID_SYSTEM)
    trust = {"X-API-Key": app_hub.keys["trust"]}
    assert (await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers=trust)).status_code == 200

    withdrawn = in_error(sent, "RIO-EIE-1", "hdr-eie-1")
    r = await post(app_hub, withdrawn)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(FHIR_JSON)
    header = header_of(r)
    assert header["response"]["code"] == "ok" and header["response"]["identifier"] == "hdr-eie-1"
    assert change_id_of(header) == change_id
    outcome = r.json()["entry"][1]["resource"]
    assert "retracted" in outcome["issue"][0]["diagnostics"] and change_id in outcome["issue"][0]["diagnostics"]
    assert NHS not in r.text and "TESTPATIENT" not in r.text

    # Retracted: the person query answers as for no one; the reason names the message, encrypted.
    assert (await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers=trust)).status_code == 404
    async with app_hub.hub.engine.connect() as conn:
        row = (await conn.execute(select(change_retractions))).one()
    assert row.change_id == change_id and b"hdr-eie-1" not in row.reason
    assert app_hub.hub.protector.decrypt(row.reason).decode() == "FHIR entered-in-error hdr-eie-1"

    # The same message again: the first answer, nothing new recorded.
    before = await recorded(app_hub)
    again = await post(app_hub, withdrawn)
    assert again.status_code == 200, again.text
    repeated = header_of(again)
    assert repeated["id"] == header["id"] and change_id_of(repeated) == change_id
    assert repeated["response"] == header["response"]
    assert (await recorded(app_hub))[:2] == before[:2]


async def test_an_encounter_entered_in_error_matching_nothing_is_refused_and_quarantined(app_hub) -> None:  # noqa: ANN001
    sent = detained("RIO-DET-2", "hdr-det-2")
    assert (await post(app_hub, sent)).status_code == 200
    withdrawn = in_error(sent, "RIO-EIE-2", "hdr-eie-2")
    withdrawn["entry"][2]["resource"]["period"]["start"] = "2024-01-02"  # no detention on that date
    r = await post(app_hub, withdrawn)
    assert r.status_code == 422, r.text
    body = r.json()
    OperationOutcome.model_validate(body)
    errors = [i for i in body["issue"] if i["severity"] == "error"]
    assert len(errors) == 1 and errors[0]["code"] == "business-rule" and errors[0]["expression"] == [ENC_STATUS]
    assert "no detention" in errors[0]["diagnostics"]
    assert NHS not in r.text
    q = await app_hub.http.get("/v1/quarantine", headers={"X-API-Key": app_hub.keys["trust"]})
    items = q.json()["items"]
    assert len(items) == 1 and items[0]["channel"] == "fhir" and items[0]["source_message_id"] == "RIO-EIE-2"
    assert items[0]["quarantine_id"] in r.text
    assert (await recorded(app_hub))[0] == 0  # nothing retracted


async def test_another_trust_entering_in_error_is_refused_as_any_message_and_nothing_is_kept(app_hub) -> None:  # noqa: ANN001
    sent = detained("RIO-DET-3", "hdr-det-3")
    assert (await post(app_hub, sent)).status_code == 200
    # The same person's detention as the other trust sends it: today's refusal.
    as_recorded = await post(app_hub, detained("CNWL-DET-3", "hdr-cnwl-det-3"), who="other-trust")
    assert as_recorded.status_code == 403, as_recorded.text
    before = await recorded(app_hub)
    r = await post(app_hub, in_error(sent, "CNWL-EIE-3", "hdr-cnwl-eie-3"), who="other-trust")
    assert r.status_code == 403, r.text
    assert r.json()["issue"][0]["code"] == "forbidden"
    assert r.json()["issue"][0]["diagnostics"] == as_recorded.json()["issue"][0]["diagnostics"]
    after = await recorded(app_hub)
    assert after[:2] == before[:2]  # nothing retracted, nothing quarantined (the refusal audited)


async def test_cancelled_and_planned_stay_refused(app_hub) -> None:  # noqa: ANN001
    sent = detained("RIO-DET-4", "hdr-det-4")
    assert (await post(app_hub, sent)).status_code == 200
    for status in ("cancelled", "planned"):
        withdrawn = in_error(sent, f"RIO-{status}", f"hdr-{status}")
        withdrawn["entry"][2]["resource"]["status"] = status
        r = await post(app_hub, withdrawn)
        assert r.status_code == 422, r.text
    assert (await recorded(app_hub))[0] == 0


async def test_a_discharge_entered_in_error_retracts_the_discharge_only(app_hub) -> None:  # noqa: ANN001
    assert (await post(app_hub, detained("RIO-DET-5", "hdr-det-5"))).status_code == 200
    left = json.loads((FIXTURES / "left_hospital.json").read_text())
    r = await post(app_hub, left)
    assert r.status_code == 200, r.text
    discharge = change_id_of(header_of(r))
    person_id = next(f["identifier"]["value"] for f in header_of(r)["focus"]
                     if f["identifier"]["system"] == HUB_PERSON_ID_SYSTEM)
    r = await post(app_hub, in_error(left, "RIO-EIE-5", "hdr-eie-5"))
    assert r.status_code == 200, r.text
    assert change_id_of(header_of(r)) == discharge
    assert header_of(r)["eventCoding"]["code"] == "left-hospital"
    async with app_hub.hub.engine.connect() as conn:
        assert [row.change_id for row in (await conn.execute(select(change_retractions))).all()] == [discharge]
    # The detention stands: the person is still on the register.
    r = await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": app_hub.keys["trust"]})
    assert r.status_code == 200, r.text
