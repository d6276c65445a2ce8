"""POST /v1/fhir/$process-message in-process: a detention and a discharge
pushed as FHIR messages give an entitlement; duplicates get the first answer;
bad input gets an OperationOutcome naming the FHIR location and is
quarantined; nothing answers 500 and no answer echoes the NHS number."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome

from adapters.fhir_inbound import CHANGE_TYPE_SYSTEM
from hub.fhir.namespaces import HUB_PERSON_ID_SYSTEM

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir_inbound"
URL = "/v1/fhir/$process-message"
FHIR_JSON = "application/fhir+json"
NHS = "9990000018"
PAT = "Bundle.entry[1].resource"
ENC = "Bundle.entry[2].resource"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def headers(app_hub, who: str = "trust", ctype: str = FHIR_JSON) -> dict[str, str]:  # noqa: ANN001
    return {"X-API-Key": app_hub.keys[who], "Content-Type": ctype}


async def post(app_hub, bundle: dict | bytes, who: str = "trust", ctype: str = FHIR_JSON):  # noqa: ANN001, ANN201
    body = bundle if isinstance(bundle, bytes) else orjson.dumps(bundle)
    return await app_hub.http.post(URL, content=body, headers=headers(app_hub, who, ctype))


def response_parts(r) -> tuple[dict, dict]:  # noqa: ANN001
    body = r.json()
    Bundle.model_validate(body)
    assert body["type"] == "message"
    header, outcome = (e["resource"] for e in body["entry"])
    assert header["resourceType"] == "MessageHeader" and outcome["resourceType"] == "OperationOutcome"
    return header, outcome


def person_id_of(header: dict) -> str:
    return next(f["identifier"]["value"] for f in header["focus"]
                if f["identifier"]["system"] == HUB_PERSON_ID_SYSTEM)


async def test_detention_then_left_hospital_gives_an_entitlement(app_hub):
    detained, left = load("detained.json"), load("left_hospital.json")
    r = await post(app_hub, detained)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(FHIR_JSON)
    header, outcome = response_parts(r)
    assert header["response"]["code"] == "ok"
    assert header["response"]["identifier"] == detained["entry"][0]["resource"]["id"]
    assert header["response"]["details"]["reference"] == r.json()["entry"][1]["fullUrl"]
    assert header["eventCoding"] == {"system": CHANGE_TYPE_SYSTEM, "code": "detained"}
    assert header["destination"][0]["endpoint"] == "https://rio.example-trust.nhs.uk/fhir"
    assert outcome["issue"][0]["severity"] == "information"
    person_id = person_id_of(header)
    assert person_id in outcome["issue"][0]["diagnostics"]
    assert NHS not in r.text and "TESTPATIENT" not in r.text

    r = await post(app_hub, left)
    assert r.status_code == 200, r.text
    header, _ = response_parts(r)
    assert person_id_of(header) == person_id

    s = await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": app_hub.keys["E06000060"]})
    assert s.status_code == 200, s.text
    status = s.json()
    assert status["entitled"] is True
    assert status["responsible_council"]["org"]["code"] == "E06000060"
    assert status["responsible_commissioner"]["org"]["code"] == "QU9"


async def test_plain_application_json_is_accepted_too(app_hub):
    r = await post(app_hub, load("detained.json"), ctype="application/json; charset=utf-8")
    assert r.status_code == 200, r.text


async def test_a_duplicate_gets_the_first_answer(app_hub):
    detained = load("detained.json")
    first = await post(app_hub, detained)
    again = await post(app_hub, detained)
    assert first.status_code == again.status_code == 200
    h1, _ = response_parts(first)
    h2, o2 = response_parts(again)
    assert first.json()["id"] == again.json()["id"]
    assert h1["focus"] == h2["focus"]
    assert any("Duplicate" in i["diagnostics"] for i in o2["issue"])
    async with app_hub.hub.engine.connect() as conn:
        from sqlalchemy import func, select

        from hub.store.schema import register_changes
        n = (await conn.execute(select(func.count()).select_from(register_changes))).scalar_one()
    assert n == 1


def _bad_nhs_and_unknown_hospital(d: dict) -> None:
    d["identifier"]["value"] = "RIO-MSG-BAD-1"
    d["entry"][1]["resource"]["identifier"][0]["value"] = "9990000010"  # fails the check digit
    d["entry"][2]["resource"]["serviceProvider"]["identifier"]["value"] = "ZZZ99"


async def test_ingest_problems_are_named_by_fhir_location_and_quarantined(app_hub):
    bad = copy.deepcopy(load("detained.json"))
    _bad_nhs_and_unknown_hospital(bad)
    r = await post(app_hub, bad)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(FHIR_JSON)
    body = r.json()
    OperationOutcome.model_validate(body)
    errors = {i["expression"][0]: i for i in body["issue"] if i["severity"] == "error"}
    assert errors[f"{PAT}.identifier[0].value"]["code"] == "value"
    assert "check digit" in errors[f"{PAT}.identifier[0].value"]["diagnostics"]
    assert f"{ENC}.serviceProvider.identifier.value" in errors
    assert "9990000010" not in r.text and "ZZZ99" not in r.text

    q = await app_hub.http.get("/v1/quarantine", headers={"X-API-Key": app_hub.keys["trust"]})
    items = q.json()["items"]
    assert len(items) == 1 and items[0]["channel"] == "fhir"
    assert items[0]["source_message_id"] == "RIO-MSG-BAD-1"
    assert items[0]["quarantine_id"] in r.text
    assert "9990000010" not in q.text


async def test_unmappable_message_gets_an_operation_outcome_and_is_quarantined(app_hub):
    bad = load("detained.json")
    del bad["entry"][2]["resource"]["subject"]
    r = await post(app_hub, bad)
    assert r.status_code == 422
    body = r.json()
    OperationOutcome.model_validate(body)
    issue = next(i for i in body["issue"] if i["severity"] == "error")
    assert issue["code"] == "required" and issue["expression"] == [f"{ENC}.subject"]
    assert issue["diagnostics"].startswith("is required")
    q = await app_hub.http.get("/v1/quarantine", headers={"X-API-Key": app_hub.keys["trust"]})
    items = q.json()["items"]
    assert items[0]["errors"] == [{"field": f"{ENC}.subject", "reason": issue["diagnostics"]}]
    assert items[0]["source_message_id"] == "RIO-MSG-0001"
    assert NHS not in r.text and NHS not in q.text
    # The corrected message (same id) is then accepted.
    r = await post(app_hub, load("detained.json"))
    assert r.status_code == 200


GARBAGE = [
    b"", b"null", b"[]", b"{}", b"{not json", b'{"resourceType": "Bundle"}',
    b'{"resourceType": "Bundle", "type": "message"}',
    b'{"resourceType": "Bundle", "type": "message", "entry": 5}',
    b'{"resourceType": "Bundle", "type": "message", "entry": [1, {"resource": []}]}',
    b'{"resourceType": "Bundle", "type": "message", "entry": [{"resource": {"resourceType": 7}}]}',
    b'{"resourceType": "Bundle", "type": "message", "entry": [{"resource": {"resourceType": "MessageHeader"}}]}',
    b'{"resourceType": "Bundle", "type": "message", "timestamp": {"a": 1}, "entry": []}',
    "\u00e9\u0000".encode("utf-16"),
]


@pytest.mark.parametrize("body", GARBAGE)
async def test_garbage_never_answers_500(app_hub, body: bytes):
    r = await post(app_hub, body)
    assert r.status_code == 422, r.text
    OperationOutcome.model_validate(r.json())


async def test_wrong_content_type_and_size_are_refused_without_recording(app_hub):
    r = await post(app_hub, load("detained.json"), ctype="application/xml")
    assert r.status_code == 415 and r.json()["resourceType"] == "OperationOutcome"
    r = await post(app_hub, b"{" + b" " * (300 * 1024) + b"}")
    assert r.status_code == 413 and r.json()["issue"][0]["code"] == "too-long"
    q = await app_hub.http.get("/v1/quarantine", headers={"X-API-Key": app_hub.keys["trust"]})
    assert q.json()["items"] == []


async def test_needs_an_api_key_with_register_write(app_hub):
    r = await app_hub.http.post(URL, content=orjson.dumps(load("detained.json")), headers={"Content-Type": FHIR_JSON})
    assert r.status_code == 401
    r = await post(app_hub, load("detained.json"), who="E06000060")
    assert r.status_code == 403
