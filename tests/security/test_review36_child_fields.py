"""Review 36: a child's detention's expected stay over FHIR (Extension-S117-ExpectedStayWeeks) sent as JSON null.
The extension was taken with no value and the detention recorded (200) as if no stay had been said: an
extension with neither a value nor extensions breaks FHIR's ext-1, and the hub refuses the extension without
its valuePositiveInt at the element (422, quarantined); null is no value either. Real HTTP to the in-process app
and its SQLite store."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from adapters.fhir_inbound import EXT_EXPECTED_STAY_WEEKS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir_inbound"
ENC = "Bundle.entry[2].resource"
NHS = "9990000018"  # the fixture's


def detained(value_key: str, value: object, message_id: str) -> bytes:
    bundle = copy.deepcopy(json.loads((FIXTURES / "detained.json").read_text()))
    bundle["identifier"]["value"] = bundle["entry"][0]["resource"]["id"] = message_id
    bundle["entry"][2]["resource"]["extension"].append({"url": EXT_EXPECTED_STAY_WEEKS, value_key: value})
    return json.dumps(bundle).encode()


@pytest.mark.parametrize(("key", "value"), [("valuePositiveInt", None), ("valueInteger", 12)])
async def test_an_expected_stay_extension_without_a_value_is_refused_at_its_element(app_hub, key, value):
    r = await app_hub.http.post("/v1/fhir/$process-message", content=detained(key, value, "stay-no-value"),
                                headers={"X-API-Key": app_hub.keys["trust"], "Content-Type": "application/fhir+json"})
    assert r.status_code == 422, r.text
    issues = r.json()["issue"]
    assert [(i["expression"], i["code"]) for i in issues if i["severity"] == "error"] == [
        ([f"{ENC}.extension[1].valuePositiveInt"], "required")], issues
    assert any(i["severity"] == "information" and "quarantin" in i["diagnostics"] for i in issues), issues
    lookup = await app_hub.http.post("/v1/persons/lookup", headers={"X-API-Key": app_hub.keys["trust"]},
                                     json={"nhs_number": NHS})
    assert lookup.status_code == 404, lookup.text  # nothing recorded
