"""`order_type` (the CP(I)A 1964 order made with legal status 31) over HL7 v2 and FHIR, as over REST: a hospital
order maps and qualifies, a supervision order maps and does not, an unknown code is refused naming the HL7 field
(AE, quarantined) or the FHIR location (422), and 31 without an order type is refused as REST refuses it.
HL7: ZU5-7 (hub-local); FHIR: Encounter.extension Extension-S117-CpiaOrderType (valueCode)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.fhir_inbound import EXT_CPIA_ORDER_TYPE, map_message
from adapters.hl7v2 import Disposition, map_adt
from hub.ingest.contract import RegisterChangeIn
from hub.mllp import MllpServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ZU5_S3 = "ZU5|2025|3|3|1|202501061000|1"
HL7_NHS = "9990001006"
FHIR_NHS = "9990000018"
ENC = "Bundle.entry[2].resource"
URL = "/v1/fhir/$process-message"


# -- HL7 v2 ----------------------------------------------------------------------------------------------------

def hl7(name: str, control_id: str, zu5: str | None = None) -> str:
    text = (FIXTURES / "hl7v2" / name).read_bytes().decode()
    text = text.replace(text.split("|")[9], control_id, 1)  # MSH-10
    return text.replace(ZU5_S3, zu5) if zu5 is not None else text


def a01_31(order_type: str | None, control_id: str = "RNU-A01-31") -> str:
    zu5 = "ZU5|2025|31|31|1|202501061000|1" + (f"|{order_type}" if order_type is not None else "")
    return hl7("ADT_A01_s3_detained.hl7", control_id, zu5)


def msa(ack: str) -> list[str]:
    return next(s for s in ack.split("\r") if s.startswith("MSA|")).split("|")


def errs(ack: str) -> list[str]:
    return [s for s in ack.split("\r") if s.startswith("ERR|")]


@pytest.mark.parametrize(("sent", "code"), [("hospital-order", "hospital-order"), ("HOSPITAL-ORDER", "hospital-order"),
                                            ("Supervision-Order^Supervision order", "supervision-order"),
                                            ("absolute-discharge", "absolute-discharge")])
def test_hl7_zu5_7_maps_to_order_type(sent, code):
    r = map_adt(a01_31(sent))
    assert r.disposition is Disposition.CHANGE, r.problems
    assert r.change["legal_status_code"] == "31" and r.change["order_type"] == code
    assert r.hl7_field("order_type") == "ZU5-7"
    RegisterChangeIn.model_validate(r.change)


def test_hl7_order_type_goes_with_the_changed_legal_status_on_a08():
    a08 = hl7("ADT_A08_s2_to_s3_update.hl7", "RNU-A08-31")
    zu5 = next(s for s in a08.split("\r") if s.startswith("ZU5|"))
    r = map_adt(a08.replace(zu5, "ZU5|2025|2|31|1|202501061000|1|hospital-order"))
    assert r.disposition is Disposition.CHANGE, r.problems
    assert r.change["change_type"] == "section-changed" and r.change["order_type"] == "hospital-order"


@pytest.mark.parametrize("sent", ["banana", "hospital_order", "s37", "HOSPİTAL-ORDER"])
def test_hl7_unknown_order_type_is_an_error_naming_zu5_7(sent):
    r = map_adt(a01_31(sent))
    assert r.disposition is Disposition.ERROR
    assert [p.field for p in r.problems] == ["ZU5-7"]
    assert sent not in r.problems[0].reason and "hospital-order" in r.problems[0].reason
    assert r.about == {"change_type": "detained", "person": {"nhs_number": HL7_NHS}, "hospital_ods": "RNU"}


def test_hl7_without_zu5_7_nothing_is_mapped_and_an_s3_still_maps():
    assert "order_type" not in map_adt(a01_31(None)).change
    r = map_adt(hl7("ADT_A01_s3_detained.hl7", "RNU-A01-s3"))
    assert r.disposition is Disposition.CHANGE and "order_type" not in r.change


@pytest.fixture
async def mllp(app_hub):
    server = MllpServer(app_hub.hub.engine, app_hub.hub.ingest, "127.0.0.1", 0)
    yield server
    server._sock.close()


async def s117_status(app_hub, nhs: str) -> dict[str, Any]:  # noqa: ANN001
    trust = {"X-API-Key": app_hub.keys["trust"]}
    r = await app_hub.http.post("/v1/persons/lookup", headers=trust, json={"nhs_number": nhs})
    assert r.status_code == 200, r.text
    s = await app_hub.http.get(f"/v1/persons/{r.json()['person_id']}/s117", headers=trust)
    assert s.status_code == 200, s.text
    return s.json()


@pytest.mark.parametrize(("order_type", "entitled"), [("hospital-order", True), ("supervision-order", False)])
async def test_hl7_code_31_detention_and_discharge_through_the_hub(app_hub, mllp, order_type, entitled):
    ack = await mllp.handle(a01_31(order_type, "A01-31").encode())
    assert msa(ack)[1:3] == ["AA", "A01-31"], ack
    ack = await mllp.handle(hl7("ADT_A03_discharge.hl7", "A03-31").encode())
    assert msa(ack)[1:3] == ["AA", "A03-31"], ack
    status = await s117_status(app_hub, HL7_NHS)
    assert status["entitled"] is entitled, status


async def test_hl7_unknown_order_type_is_ae_naming_zu5_7_and_quarantined(app_hub, mllp):
    ack = await mllp.handle(a01_31("banana", "A01-bad").encode())
    assert msa(ack)[1:3] == ["AE", "A01-bad"] and "quarantine id" in msa(ack)[3], ack
    (err,) = errs(ack)
    assert err.startswith("ERR|ZU5^1^7^103&ZU5-7 is not a CP(I)A 1964 order code"), ack
    assert "banana" not in ack and HL7_NHS not in ack and "TESTPATIENT" not in ack
    q = await app_hub.http.get("/v1/quarantine", headers={"X-API-Key": app_hub.keys["trust"]})
    assert q.status_code == 200, q.text
    assert "A01-bad" in q.text


async def test_hl7_code_31_without_an_order_type_is_ae_naming_zu5_7_as_rest_refuses_it(app_hub, mllp):
    ack = await mllp.handle(a01_31(None, "A01-none").encode())
    assert msa(ack)[1:3] == ["AE", "A01-none"], ack
    assert any(e.startswith("ERR|ZU5^1^7^") and "order_type" in e and "required" in e for e in errs(ack)), ack


# -- FHIR ------------------------------------------------------------------------------------------------------

def fhir(name: str, order_type: Any = None, message_id: str | None = None, code: str = "31") -> dict[str, Any]:
    bundle = copy.deepcopy(json.loads((FIXTURES / "fhir_inbound" / name).read_text()))
    enc = bundle["entry"][2]["resource"]
    for ext in enc["extension"]:
        for part in ext["extension"]:
            if part["url"] == "legalStatusClassification":
                part["valueCodeableConcept"]["coding"][0].update(code=code, display="CP(I)A 1964")
    if order_type is not None:
        enc["extension"].append({"url": EXT_CPIA_ORDER_TYPE, "valueCode": order_type})
    if message_id is not None:
        bundle["identifier"]["value"] = message_id
        bundle["entry"][0]["resource"]["id"] = message_id
    return bundle


def test_fhir_extension_maps_to_order_type():
    r = map_message(orjson.dumps(fhir("detained.json", "hospital-order")))
    assert r.ok, r.problems
    assert r.change["legal_status_code"] == "31" and r.change["order_type"] == "hospital-order"
    assert r.location_of("order_type") == f"{ENC}.extension[1].valueCode"
    RegisterChangeIn.model_validate(r.change)


@pytest.mark.parametrize(("value", "code"), [("banana", "value"), ("Hospital-Order", "value"), (None, "required")])
def test_fhir_unknown_order_type_is_a_problem_at_its_location(value, code):
    bundle = fhir("detained.json", "placeholder")
    ext = bundle["entry"][2]["resource"]["extension"][1]
    if value is None:
        del ext["valueCode"]
        ext["valueString"] = "hospital order"
    else:
        ext["valueCode"] = value
    r = map_message(orjson.dumps(bundle))
    assert not r.ok
    assert [(p.location, p.code) for p in r.problems] == [(f"{ENC}.extension[1].valueCode", code)]
    assert "banana" not in r.problems[0].reason and "hospital-order" in r.problems[0].reason


def test_fhir_two_order_type_extensions_are_refused():
    bundle = fhir("detained.json", "hospital-order")
    bundle["entry"][2]["resource"]["extension"].append({"url": EXT_CPIA_ORDER_TYPE, "valueCode": "hospital-order"})
    r = map_message(orjson.dumps(bundle))
    assert [(p.location, p.code) for p in r.problems] == [(f"{ENC}.extension", "invalid")]


async def post(app_hub, bundle: dict[str, Any]):  # noqa: ANN001, ANN201
    return await app_hub.http.post(URL, content=orjson.dumps(bundle), headers={
        "X-API-Key": app_hub.keys["trust"], "Content-Type": "application/fhir+json"})


@pytest.mark.parametrize(("order_type", "entitled"), [("hospital-order", True), ("supervision-order", False)])
async def test_fhir_code_31_detention_and_discharge_through_the_hub(app_hub, order_type, entitled):
    r = await post(app_hub, fhir("detained.json", order_type))
    assert r.status_code == 200, r.text
    r = await post(app_hub, fhir("left_hospital.json", order_type))
    assert r.status_code == 200, r.text
    status = await s117_status(app_hub, FHIR_NHS)
    assert status["entitled"] is entitled, status


async def test_fhir_unknown_order_type_is_422_naming_the_location(app_hub):
    r = await post(app_hub, fhir("detained.json", "banana", message_id="cpia-bad"))
    assert r.status_code == 422, r.text
    issues = r.json()["issue"]
    errors = [i for i in issues if i["severity"] == "error"]
    assert [(i["code"], i["expression"]) for i in errors] == [("value", [f"{ENC}.extension[1].valueCode"])], issues
    assert any(i["severity"] == "information" and "quarantin" in i["diagnostics"] for i in issues), issues
    assert "banana" not in r.text and FHIR_NHS not in r.text


async def test_fhir_code_31_without_an_order_type_is_422_at_the_encounter_extensions(app_hub):
    r = await post(app_hub, fhir("detained.json", message_id="cpia-none"))
    assert r.status_code == 422, r.text
    errors = [i for i in r.json()["issue"] if i["severity"] == "error"]
    assert [i["expression"] for i in errors] == [[f"{ENC}.extension"]], errors
    assert "order_type" in errors[0]["diagnostics"] or "31" in errors[0]["diagnostics"], errors
