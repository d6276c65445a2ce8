"""Outside review 30 (FHIR R4 / UK Core conformance), in-process.

* `GET /v1/fhir/metadata`: a FHIR client's first call; it was a 404. Now the server's CapabilityStatement
  (R4, kind instance, fhirVersion 4.0.1, JSON, rest mode server with the Task and Subscription resources,
  their interactions and operations, `$process-message`, the messages sent and received).
* `$process-message` content negotiation, before anything is recorded: a `fhirVersion` other than 4.0 in
  the Content-Type (415), an answer asked for in XML (`Accept`, `_format`: 406), `async=true` (422:
  the hub answers synchronously only). Each was recorded and answered 200 in JSON before.
* A modifier extension, `implicitRules`, or an extension breaking ext-1 in an inbound message: refused
  (a modifier changes the meaning of its element; the hub understands none). Before, the change was
  recorded as if the modifier were not there. A plain extension the hub does not know stays ignored.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from sqlalchemy import text

from adapters.fhir_inbound import map_message

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir_inbound"
URL = "/v1/fhir/$process-message"
FHIR_JSON = "application/fhir+json"
ISSUE_TYPES = {"invalid", "structure", "required", "value", "invariant", "security", "login", "unknown",
               "expired", "forbidden", "suppressed", "processing", "not-supported", "duplicate",
               "multiple-matches", "not-found", "deleted", "too-long", "code-invalid", "extension", "too-costly",
               "business-rule", "conflict", "transient", "lock-error", "no-store", "exception", "timeout",
               "incomplete", "throttled", "informational"}


def detained(message_id: str) -> dict[str, Any]:
    bundle = json.loads((FIXTURES / "detained.json").read_text())
    bundle["identifier"]["value"] = message_id
    return bundle


async def changes(app_hub) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        n = (await conn.execute(text("select count(*) from register_changes"))).scalar_one()
        q = (await conn.execute(text("select count(*) from quarantine"))).scalar_one()
    return n + q


async def post(app_hub, bundle: dict, ctype: str = FHIR_JSON, **kw: Any):  # noqa: ANN001, ANN201
    headers = {"X-API-Key": app_hub.keys["trust"], "Content-Type": ctype, **kw.pop("headers", {})}
    return await app_hub.http.post(URL, content=orjson.dumps(bundle), headers=headers, **kw)


def only_issue(r) -> dict[str, Any]:  # noqa: ANN001
    assert r.headers["content-type"].startswith(FHIR_JSON)
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    errors = [i for i in body["issue"] if i["severity"] == "error"]
    assert len(errors) == 1, body
    assert errors[0]["code"] in ISSUE_TYPES
    return errors[0]


# --- the CapabilityStatement ---------------------------------------------------------------------


async def test_metadata_is_the_servers_capability_statement(app_hub) -> None:  # noqa: ANN001
    r = await app_hub.http.get("/v1/fhir/metadata", headers={"X-API-Key": app_hub.keys["E06000060"]})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(FHIR_JSON)
    cs = r.json()
    CapabilityStatement.model_validate(cs)
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["kind"] == "instance" and cs["fhirVersion"] == "4.0.1" and cs["status"] == "active"
    assert "application/fhir+json" in cs["format"] and not any("xml" in f for f in cs["format"])
    assert cs["implementation"]["url"] == "http://hub/v1/fhir"
    assert cs["instantiates"] == ["https://s117-hub.localhost/fhir/CapabilityStatement/s117-hub"]
    (rest,) = cs["rest"]
    assert rest["mode"] == "server"
    assert [o["name"] for o in rest["operation"]] == ["process-message"]
    resources = {r["type"]: r for r in rest["resource"]}
    assert set(resources) == {"Task", "Subscription"}
    assert {i["code"] for i in resources["Task"]["interaction"]} == {"read", "update", "patch"}
    assert resources["Task"]["profile"].endswith("/StructureDefinition/S117-Task")
    assert {i["code"] for i in resources["Subscription"]["interaction"]} == {"create", "read", "delete"}
    assert {o["name"] for o in resources["Subscription"]["operation"]} == {"status", "events"}
    # Every SubscriptionTopic GET /v1/fhir/SubscriptionTopic lists is named.
    topics = (await app_hub.http.get("/v1/fhir/SubscriptionTopic",
                                     headers={"X-API-Key": app_hub.keys["E06000060"]})).json()
    for entry in topics["entry"]:
        assert entry["resource"]["url"] in resources["Subscription"]["documentation"]
    (messaging,) = cs["messaging"]
    assert messaging["endpoint"][0]["address"] == "http://hub/v1/fhir"
    modes = {m["mode"] for m in messaging["supportedMessage"]}
    assert modes == {"sender", "receiver"}


@pytest.mark.parametrize(("params", "headers", "expression"), [
    ({"_format": "xml"}, {}, "_format"),
    ({"_format": "application/fhir+xml"}, {}, "_format"),
    ({}, {"Accept": "application/fhir+xml"}, "Accept"),
    ({}, {"Accept": "application/fhir+json; fhirVersion=5.0"}, "Accept"),
])
async def test_metadata_in_another_format_is_406(app_hub, params, headers, expression) -> None:  # noqa: ANN001
    r = await app_hub.http.get("/v1/fhir/metadata", params=params,
                               headers={"X-API-Key": app_hub.keys["trust"], **headers})
    assert r.status_code == 406, r.text
    issue = only_issue(r)
    assert issue["code"] == "not-supported" and issue["expression"] == [expression]


async def test_metadata_json_and_any_accept_are_served(app_hub) -> None:  # noqa: ANN001
    for params, headers in (({"_format": "json"}, {}), ({}, {"Accept": "application/fhir+json; fhirVersion=4.0"}),
                            ({}, {"Accept": "application/fhir+xml;q=0.9, */*;q=0.1"}), ({"mode": "full"}, {})):
        r = await app_hub.http.get("/v1/fhir/metadata", params=params,
                                   headers={"X-API-Key": app_hub.keys["trust"], **headers})
        assert r.status_code == 200, (params, headers, r.text)
    r = await app_hub.http.get("/v1/fhir/metadata", params={"mode": "terminology"},
                               headers={"X-API-Key": app_hub.keys["trust"]})
    assert r.status_code == 422 and only_issue(r)["expression"] == ["mode"]


# --- $process-message negotiation -----------------------------------------------------------------


@pytest.mark.parametrize(("ctype", "params", "headers", "status", "expression"), [
    ("application/fhir+json; fhirVersion=3.0", {}, {}, 415, "Content-Type"),
    (FHIR_JSON, {}, {"Accept": "application/fhir+xml"}, 406, "Accept"),
    (FHIR_JSON, {"_format": "xml"}, {}, 406, "_format"),
    (FHIR_JSON, {"async": "true"}, {}, 422, "async"),
    (FHIR_JSON, {"async": "yes"}, {}, 422, "async"),
])
async def test_process_message_refuses_what_it_cannot_honour_before_recording(
        app_hub, ctype, params, headers, status, expression) -> None:  # noqa: ANN001
    r = await post(app_hub, detained(f"neg-{status}-{expression}"), ctype, params=params, headers=headers)
    assert r.status_code == status, r.text
    assert only_issue(r)["expression"] == [expression]
    assert await changes(app_hub) == 0  # neither recorded nor quarantined


async def test_process_message_fhir_4_0_json_and_async_false_are_processed(app_hub) -> None:  # noqa: ANN001
    r = await post(app_hub, detained("v40"), "application/fhir+json; fhirVersion=4.0",
                   params={"async": "false", "_format": "json"}, headers={"Accept": "application/fhir+json"})
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "message"


# --- modifier extensions, implicitRules, ext-1 ----------------------------------------------------


def _with(message_id: str, where: str, change) -> dict[str, Any]:  # noqa: ANN001
    bundle = detained(message_id)
    change(bundle)
    return bundle


MODIFIER = [{"url": "https://example.org/fhir/StructureDefinition/not-detained", "valueBoolean": True}]


@pytest.mark.parametrize(("name", "change", "code", "location"), [
    ("encounter-modifier", lambda b: b["entry"][2]["resource"].__setitem__("modifierExtension", MODIFIER),
     "extension", "Bundle.entry[2].resource.modifierExtension"),
    ("patient-modifier", lambda b: b["entry"][1]["resource"].__setitem__("modifierExtension", MODIFIER),
     "extension", "Bundle.entry[1].resource.modifierExtension"),
    ("entry-modifier", lambda b: b["entry"][2].__setitem__("modifierExtension", MODIFIER),
     "extension", "Bundle.entry[2].modifierExtension"),
    ("implicit-rules", lambda b: b["entry"][2]["resource"].__setitem__("implicitRules", "https://example.org/r"),
     "not-supported", "Bundle.entry[2].resource.implicitRules"),
    ("ext-1-neither", lambda b: b["entry"][1]["resource"].__setitem__(
        "extension", [{"url": "https://example.org/fhir/StructureDefinition/x"}]),
     "invalid", "Bundle.entry[1].resource.extension[0]"),
])
async def test_a_modifier_or_malformed_extension_is_refused_not_ignored(
        app_hub, name, change, code, location) -> None:  # noqa: ANN001
    r = await post(app_hub, _with(name, "", change))
    assert r.status_code == 422, r.text
    issue = only_issue(r)
    assert issue["code"] == code and issue["expression"] == [location], issue
    async with app_hub.hub.engine.connect() as conn:
        assert (await conn.execute(text("select count(*) from register_changes"))).scalar_one() == 0


async def test_an_unknown_plain_extension_is_ignored(app_hub) -> None:  # noqa: ANN001
    bundle = detained("plain-ext")
    bundle["entry"][1]["resource"]["extension"] = [{
        "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory",
        "valueCodeableConcept": {"coding": [{"system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-EthnicCategory",
                                             "code": "A"}]}}]
    bundle["entry"][1]["resource"]["identifier"][0]["extension"] = [{
        "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus",
        "valueCodeableConcept": {"coding": [{
            "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland", "code": "01"}]}}]
    bundle["entry"][1]["resource"]["meta"] = {"profile": ["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]}
    r = await post(app_hub, bundle)
    assert r.status_code == 200, r.text


def test_the_mapping_names_a_modifier_inside_a_contained_resource() -> None:
    bundle = detained("contained-mod")
    bundle["entry"][2]["resource"]["contained"] = [{"resourceType": "Organization", "id": "h",
                                                    "modifierExtension": copy.deepcopy(MODIFIER)}]
    result = map_message(orjson.dumps(bundle))
    assert not result.ok
    assert [(p.location, p.code) for p in result.problems] == [
        ("Bundle.entry[2].resource.contained[0].modifierExtension", "extension")]


# --- Task: the same negotiation -------------------------------------------------------------------


@pytest.mark.parametrize(("method", "params", "headers", "expression"), [
    ("GET", {}, {"Accept": "application/fhir+xml"}, "Accept"),
    ("GET", {"_format": "xml"}, {}, "_format"),
    ("PUT", {"_format": "application/fhir+xml"}, {}, "_format"),
    ("PATCH", {}, {"Accept": "application/xml"}, "Accept"),
])
async def test_a_task_in_another_format_is_406(app_hub, method, params, headers, expression) -> None:  # noqa: ANN001
    body = {"GET": None, "PUT": orjson.dumps({"resourceType": "Task", "status": "accepted"}),
            "PATCH": orjson.dumps([{"op": "replace", "path": "/status", "value": "accepted"}])}[method]
    r = await app_hub.http.request(method, "/v1/fhir/Task/no-such-case", params=params, content=body,
                                   headers={"X-API-Key": app_hub.keys["E06000060"], **headers})
    assert r.status_code == 406, r.text
    assert only_issue(r)["expression"] == [expression]


# --- the detention Encounter's status -------------------------------------------------------------


@pytest.mark.parametrize(("status", "code"), [
    ("entered-in-error", "business-rule"), ("cancelled", "business-rule"), ("planned", "business-rule"),
    ("zzz", "code-invalid"), ("In-Progress", "code-invalid"),
])
async def test_an_encounter_withdrawn_or_with_no_encounter_status_records_no_detention(
        app_hub, status, code) -> None:  # noqa: ANN001
    """Encounter.status was not read: a detention the trust's EPR had marked entered-in-error (or cancelled,
    or only planned, or with a code outside R4's required EncounterStatus) was recorded as a detention."""
    bundle = detained(f"status-{status}")
    bundle["entry"][2]["resource"]["status"] = status
    r = await post(app_hub, bundle)
    assert r.status_code == 422, r.text
    issue = only_issue(r)
    assert issue["code"] == code and issue["expression"] == ["Bundle.entry[2].resource.status"], issue
    async with app_hub.hub.engine.connect() as conn:
        assert (await conn.execute(text("select count(*) from register_changes"))).scalar_one() == 0


@pytest.mark.parametrize("status", ["in-progress", "finished", "onleave", "arrived", "unknown"])
def test_an_encounter_that_happened_maps(status: str) -> None:
    bundle = detained(f"ok-{status}")
    bundle["entry"][2]["resource"]["status"] = status
    assert map_message(orjson.dumps(bundle)).ok


# --- the Patient's modifier elements: active, Identifier.use ---------------------------------------


def _patient(bundle: dict[str, Any]) -> dict[str, Any]:
    return bundle["entry"][1]["resource"]


async def test_an_inactive_patient_record_or_an_old_nhs_number_records_nothing(app_hub) -> None:  # noqa: ANN001
    """Patient.active and Identifier.use are modifier elements the mapping did not read: a change about an
    inactive (merged) record, or carrying only a superseded NHS number (use old), was recorded."""
    inactive = detained("inactive")
    _patient(inactive)["active"] = False
    old = detained("old-number")
    _patient(old)["identifier"][0]["use"] = "old"
    for bundle, where in ((inactive, "Bundle.entry[1].resource.active"),
                          (old, "Bundle.entry[1].resource.identifier[0].use")):
        r = await post(app_hub, bundle)
        assert r.status_code == 422, r.text
        issue = only_issue(r)
        assert issue["code"] == "business-rule" and issue["expression"] == [where], issue
        assert "9990000018" not in r.text
    async with app_hub.hub.engine.connect() as conn:
        assert (await conn.execute(text("select count(*) from register_changes"))).scalar_one() == 0


def test_an_old_nhs_number_beside_the_current_one_is_passed_over() -> None:
    bundle = detained("old-and-current")
    ids = _patient(bundle)["identifier"]
    ids.insert(0, {"use": "old", "system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9990000026"})
    _patient(bundle)["active"] = True
    result = map_message(orjson.dumps(bundle))
    assert result.ok, result.problems
    assert result.change["person"]["nhs_number"] == "9990000018"
    assert result.origins["person.nhs_number"] == "Bundle.entry[1].resource.identifier[1].value"
