"""POST /v1/fhir/$process-message with a merge of two NHS numbers (PDS): eventCoding `nhs-numbers-merged`
of the hub's s117-person-event CodeSystem, the focused Patient's NHS number retained, its `link` of type
`replaces` the superseded one (R4 Patient.link). Before, a trust sending FHIR could not send a merge (the
eventCoding was refused). Now it merges through the one PersonMergeService (hub/merges.py) as HL7 A40 and
POST /v1/persons/merge do: a response message `ok` naming the retained person, the same message again the
first answer; refused for what it asks: an OperationOutcome naming the element, held in quarantine; by the
access policy: 403 naming the rule, nothing kept. Real ingest and API on SQLite, in process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from sqlalchemy import func, select

from hub.fhir.namespaces import DEFAULT_NAMESPACES, NHS_NUMBER_SYSTEM
from hub.store.schema import person_merges, quarantine, register_changes
from tests.support import detention
from tests.unit.test_person_merges import _with_bad_check, nhs_number

URL = "/v1/fhir/$process-message"
FHIR_JSON = "application/fhir+json"
ROOT = Path(__file__).resolve().parents[2]
PATIENT = "Bundle.entry[1].resource"


def merge_message(retained: str, superseded: str, message_id: str, **patient: Any) -> dict[str, Any]:
    return {
        "resourceType": "Bundle", "type": "message", "identifier": {"value": message_id},
        "timestamp": "2026-12-05T09:00:00Z",
        "entry": [
            {"fullUrl": "urn:uuid:5d0d1b8e-3c1e-4b7a-8d2f-000000000001", "resource": {
                "resourceType": "MessageHeader", "id": f"mh-{message_id}",
                "eventCoding": {"system": DEFAULT_NAMESPACES.person_event_codesystem, "code": "nhs-numbers-merged"},
                "source": {"name": "RiO", "endpoint": "https://rio.example.nhs.uk/fhir"},
                "focus": [{"reference": "urn:uuid:5d0d1b8e-3c1e-4b7a-8d2f-000000000002"}]}},
            {"fullUrl": "urn:uuid:5d0d1b8e-3c1e-4b7a-8d2f-000000000002", "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": retained}],
                "link": [{"type": "replaces", "other": {"identifier": {"system": NHS_NUMBER_SYSTEM,
                                                                        "value": superseded}}}],
                **patient}},
        ],
    }


async def _post(app_hub, bundle: dict, who: str = "trust"):  # noqa: ANN001, ANN202
    return await app_hub.http.post(URL, content=orjson.dumps(bundle),
                                   headers={"X-API-Key": app_hub.keys[who], "Content-Type": FHIR_JSON})


async def _on_register(app_hub, nhs: str, run: str, **person: str) -> str:  # noqa: ANN001
    for change in detention(nhs, run, **person):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=change)
        assert r.status_code == 202, r.text
    return r.json()["person_id"]


async def _count(app_hub, table, *where) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()
        await conn.rollback()
    return n


def _issues(r) -> list[tuple[str, str, str]]:  # noqa: ANN001
    body = r.json()
    OperationOutcome.model_validate(body)
    return [(i["severity"], i["code"], (i.get("expression") or [""])[0]) for i in body["issue"]
            if i["severity"] == "error"]


def test_the_person_event_codesystem_is_shipped_and_published() -> None:
    from hub.fhir.conformance import build_package

    cs = json.loads((ROOT / "schemas" / "CodeSystem-s117-person-event.json").read_text())
    assert cs["url"] == DEFAULT_NAMESPACES.person_event_codesystem and [c["code"] for c in cs["concept"]] == [
        "nhs-numbers-merged"]
    files = build_package()
    assert "package/MessageDefinition-s117-person-merge.json" in files
    assert "package/CodeSystem-s117-person-event.json" in files
    capability = json.loads(files["package/CapabilityStatement-s117-hub.json"])
    received = {m["definition"] for m in capability["messaging"][0]["supportedMessage"] if m["mode"] == "receiver"}
    assert DEFAULT_NAMESPACES.canonical("MessageDefinition", "s117-person-merge") in received


async def test_a_fhir_merge_joins_the_superseded_number_to_the_retained_person_once(app_hub) -> None:  # noqa: ANN001
    a, b = nhs_number(7201), nhs_number(7203)
    gone = await _on_register(app_hub, a, "a", birth_date="1980-02-14")
    kept = await _on_register(app_hub, b, "b", birth_date="1980-02-14")
    message = merge_message(b, a, "merge-1", birthDate="1980-02-14")
    Bundle.model_validate(message)  # a well-formed R4 message

    r = await _post(app_hub, message)
    assert r.status_code == 200, r.text
    Bundle.model_validate(r.json())
    header = r.json()["entry"][0]["resource"]
    assert header["response"]["code"] == "ok" and header["response"]["identifier"] == "mh-merge-1"
    assert header["eventCoding"] == {"system": DEFAULT_NAMESPACES.person_event_codesystem,
                                     "code": "nhs-numbers-merged"}
    assert [f["identifier"]["value"] for f in header["focus"]] == [kept]
    assert a not in r.text and b not in r.text
    assert await _count(app_hub, register_changes, register_changes.c.person_id == kept) == 4
    assert await _count(app_hub, register_changes, register_changes.c.person_id == gone) == 0
    async with app_hub.hub.engine.connect() as conn:
        row = (await conn.execute(select(person_merges.c.channel, person_merges.c.retained_person_id))).one()
        await conn.rollback()
    assert tuple(row) == ("fhir", kept)

    # The same message again, or the same merge in another message: the first answer, nothing merged again.
    again = await _post(app_hub, message)
    assert again.status_code == 200 and again.json()["entry"][0]["resource"]["id"] == header["id"], again.text
    assert "Duplicate" in again.text
    other = await _post(app_hub, merge_message(b, a, "merge-2"))
    assert other.status_code == 200 and "Duplicate" in other.text, other.text
    assert await _count(app_hub, person_merges) == 1
    # The superseded number resolves to the retained person.
    r = await app_hub.http.post("/v1/persons/lookup", headers={"X-API-Key": app_hub.keys["E06000060"]},
                                json={"nhs_number": a})
    assert r.status_code == 200 and r.json()["person_id"] == kept, r.text


async def test_a_fhir_merge_refused_names_the_element_and_is_held(app_hub) -> None:  # noqa: ANN001
    a, b, c = nhs_number(7205), nhs_number(7207), nhs_number(7209)
    await _on_register(app_hub, a, "a", birth_date="1980-02-14")
    await _on_register(app_hub, b, "b", birth_date="1979-11-30")
    held = await _count(app_hub, quarantine)

    r = await _post(app_hub, merge_message(b, _with_bad_check(a), "bad-check"))
    assert r.status_code == 422 and _issues(r) == [
        ("error", "value", f"{PATIENT}.link[0].other.identifier.value")], r.text
    r = await _post(app_hub, merge_message(b, a, "dob", birthDate="1979-11-30"))
    assert r.status_code == 422 and _issues(r) == [("error", "business-rule", f"{PATIENT}.birthDate")], r.text
    assert "1980" not in r.text and "1979" not in r.text and a not in r.text
    no_link = merge_message(b, a, "no-link")
    no_link["entry"][1]["resource"]["link"] = []
    r = await _post(app_hub, no_link)
    assert r.status_code == 422 and _issues(r) == [("error", "required", f"{PATIENT}.link")], r.text
    backwards = merge_message(b, a, "backwards")
    backwards["entry"][1]["resource"]["link"][0]["type"] = "replaced-by"
    r = await _post(app_hub, backwards)
    assert r.status_code == 422 and _issues(r) == [("error", "business-rule", f"{PATIENT}.link[0].type")], r.text
    assert await _count(app_hub, quarantine) == held + 4
    assert await _count(app_hub, person_merges) == 0

    # The access policy: a trust with no role for the persons, and numbers not on the register: one 403.
    r1 = await _post(app_hub, merge_message(b, a, "other"), who="other-trust")
    r2 = await _post(app_hub, merge_message(nhs_number(7301), nhs_number(7303), "nobody"))
    assert r1.status_code == r2.status_code == 403, (r1.text, r2.text)
    assert _issues(r1) == _issues(r2) and "no-relationship" in r1.text
    assert await _count(app_hub, quarantine) == held + 4

    # Merged into another number already: 409 naming the superseded number's element, held.
    await _on_register(app_hub, c, "c", birth_date="1980-02-14")
    assert (await _post(app_hub, merge_message(c, a, "first"))).status_code == 200
    r = await _post(app_hub, merge_message(b, a, "conflict"))
    assert r.status_code == 409 and _issues(r) == [
        ("error", "conflict", f"{PATIENT}.link[0].other.identifier.value")], r.text
