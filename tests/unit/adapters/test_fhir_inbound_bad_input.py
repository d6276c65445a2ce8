"""FHIR inbound bad input accepted before an outside review (200): two entries
with one fullUrl (FHIR bdl-7), control characters in FHIR strings (FHIR allows
none below U+0020 but tab, CR and LF), bidirectional-formatting characters
and a postcode that is not one in the mapped fields, a MessageHeader.id with
a line break. Each is a 422 OperationOutcome naming the FHIR location and
never quoting the value."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome

from adapters.fhir_inbound import map_message

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "fhir_inbound"
URL = "/v1/fhir/$process-message"
MH = "Bundle.entry[0].resource"
PAT = "Bundle.entry[1].resource"
ENC = "Bundle.entry[2].resource"
OTHER_NHS = "9990001006"


def detained() -> dict[str, Any]:
    return copy.deepcopy(json.loads((FIXTURES / "detained.json").read_text()))


def second_patient(d: dict[str, Any], full_url: str | None = None, rid: str | None = None) -> dict[str, Any]:
    """`d` with a second Patient entry (another NHS number) appended."""
    entry = copy.deepcopy(d["entry"][1])
    entry["resource"]["identifier"][0]["value"] = OTHER_NHS
    if full_url is not None:
        entry["fullUrl"] = full_url
    if rid is not None:
        entry["resource"]["id"] = rid
    d["entry"].append(entry)
    return d


def problems(d: dict[str, Any]) -> dict[str, str]:
    result = map_message(orjson.dumps(d))
    assert not result.ok
    return {p.location: p.reason for p in result.problems}


async def post(app_hub, d: dict[str, Any]):  # noqa: ANN001, ANN201
    return await app_hub.http.post(URL, content=orjson.dumps(d),
                                   headers={"X-API-Key": app_hub.keys["trust"], "Content-Type": "application/fhir+json"})


def errors_of(r) -> dict[str, dict[str, Any]]:  # noqa: ANN001
    assert r.status_code == 422, r.text
    body = r.json()
    OperationOutcome.model_validate(body)
    return {i["expression"][0]: i for i in body["issue"] if i["severity"] == "error"}


# ----------------------------------------------------------- bdl-7: fullUrl

def test_two_entries_with_one_full_url_are_refused_naming_the_second():
    d = detained()
    second_patient(d, full_url=d["entry"][1]["fullUrl"], rid="another-id")
    found = problems(d)
    assert list(found) == ["Bundle.entry[3].fullUrl"]
    assert "bdl-7" in found["Bundle.entry[3].fullUrl"] and "entry[1]" in found["Bundle.entry[3].fullUrl"]


def test_a_repeated_full_url_is_refused_even_with_another_version():
    d = detained()
    d["entry"][1]["resource"]["meta"] = {"versionId": "1"}
    second_patient(d, full_url=d["entry"][1]["fullUrl"], rid="another-id")
    d["entry"][3]["resource"]["meta"] = {"versionId": "2"}
    assert list(problems(d)) == ["Bundle.entry[3].fullUrl"]


def test_two_entries_of_one_type_and_id_are_refused():
    d = detained()
    second_patient(d, full_url="urn:uuid:9d9d9d9d-0000-4000-8000-000000000009")
    found = problems(d)
    assert list(found) == ["Bundle.entry[3].resource.id"]


def test_distinct_full_urls_are_fine():
    d = detained()
    second_patient(d, full_url="urn:uuid:9d9d9d9d-0000-4000-8000-000000000009", rid="another-id")
    assert map_message(orjson.dumps(d)).ok


async def test_over_http_a_repeated_full_url_is_a_422_naming_it(app_hub):
    d = detained()
    second_patient(d, full_url=d["entry"][1]["fullUrl"], rid="another-id")
    r = await post(app_hub, d)
    errors = errors_of(r)
    assert list(errors) == ["Bundle.entry[3].fullUrl"] and errors["Bundle.entry[3].fullUrl"]["code"] == "invalid"
    assert OTHER_NHS not in r.text


# ------------------------------------------------ control characters anywhere

@pytest.mark.parametrize("char", ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f"],
                         ids=lambda c: f"U+{ord(c):04X}")
def test_a_control_character_in_any_fhir_string_is_refused_at_its_location(char):
    d = detained()
    d["entry"][1]["resource"]["name"][0]["family"] = f"TEST{char}PATIENT"
    d["entry"][2]["resource"]["class"]["display"] = f"inpatient{char}"
    found = problems(d)
    assert list(found) == [f"{PAT}.name[0].family", f"{ENC}.class.display"]
    assert all("U+0020" in reason and "TEST" not in reason for reason in found.values())


def test_tab_cr_and_lf_are_fhir_string_characters():
    d = detained()
    d["entry"][2]["resource"]["class"]["display"] = "inpatient\tencounter\r\n"
    assert map_message(orjson.dumps(d)).ok


def test_a_json_escaped_backslash_is_not_a_control_character():
    d = detained()
    d["entry"][2]["resource"]["class"]["display"] = "in\\u0000patient\\b"  # backslashes, not controls
    assert map_message(orjson.dumps(d)).ok


def test_a_message_header_id_with_a_line_break_is_not_an_id():
    d = detained()
    del d["identifier"]
    d["entry"][0]["resource"]["id"] = "msg-1\n"
    found = problems(d)
    assert f"{MH}.id" in found


# ------------------------------- mapped fields: checked by the contract, named by FHIR location

@pytest.mark.parametrize(("where", "location"), [
    (lambda d: d["entry"][1]["resource"]["name"][0].__setitem__("family", "TEST\u202ePATIENT"),
     f"{PAT}.name[0].family"),
    (lambda d: d["identifier"].__setitem__("value", "RIO-\u202eMSG"), "Bundle.identifier.value"),
    (lambda d: d["entry"][0]["resource"]["source"].__setitem__("name", "Ri\x00O"), f"{MH}.source.name"),
    (lambda d: d["entry"][1]["resource"]["address"][0].__setitem__("postalCode", "<script>"),
     f"{PAT}.address[0].postalCode"),
], ids=["bidi-family", "bidi-message-id", "nul-source", "postcode"])
async def test_over_http_bad_characters_in_mapped_fields_are_a_422_at_the_fhir_location(app_hub, where, location):
    d = detained()
    where(d)
    r = await post(app_hub, d)
    errors = errors_of(r)
    assert location in errors, errors
    for secret in ("TEST", "RIO-", "script", "9990000018"):
        assert secret not in r.text


async def test_a_message_id_with_a_nul_is_named_and_not_kept_with_the_quarantined_message(app_hub):
    d = detained()
    d["identifier"]["value"] = "RIO-MSG\x00-1"
    errors = errors_of(await post(app_hub, d))
    assert list(errors) == ["Bundle.identifier.value"]
    q = await app_hub.http.get("/v1/quarantine", headers={"X-API-Key": app_hub.keys["trust"]})
    items = q.json()["items"]
    assert len(items) == 1 and items[0]["source_message_id"] is None
