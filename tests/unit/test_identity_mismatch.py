"""Hazard H-01 (docs/clinical-safety/hazard-log.yaml): wrong person. A change for an NHS number already on
the register that carries another date of birth, or another family name with no date of birth to confirm
who the person is, is most likely about someone else (an NHS number keyed wrongly that still passes the
modulus-11 check, a record picked from the wrong patient list). The hub used to record it against the
person held and overwrite their details with the sender's ("a field the source sent replaces what is
held"): the wrong person's entitlement, responsible bodies and reviews changed, and every council and ICB
told so. Now such a change is not recorded: it is held in quarantine and the source is told, naming the
field (never the value), on every channel: REST, FHIR, MLLP (PID-7 / PID-5) and council files (DOB / SURNAME).
A family name that differs only in case, spacing or punctuation is the same name; a new family name sent
with the date of birth held is taken (people change their names)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sqlalchemy import func, select

from hub.clients import add_client
from hub.ingest.service import load_person_details
from hub.mllp import MllpServer
from hub.store.schema import access_decisions, persons, register_changes
from tests.support import council_file_done, detention

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NHS = "9990001006"  # the HL7 fixture's patient (TESTPATIENT^ALEX, born 1980-02-14)
HELD = {"given_name": "Alex", "family_name": "Testpatient", "birth_date": "1980-02-14"}


async def _on_register(app_hub, nhs: str = NHS, **person: str) -> None:  # noqa: ANN001
    for change in detention(nhs, "held", **(person or HELD)):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                    json=change)
        assert r.status_code == 202, r.text


async def _changes(app_hub) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(register_changes))).scalar_one()


async def _held_details(app_hub) -> dict:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        (row,) = (await conn.execute(select(persons.c.details))).all()
    return load_person_details(app_hub.hub.protector, row.details)


async def _quarantined(app_hub, key: str = "trust") -> list[dict]:  # noqa: ANN001
    r = await app_hub.http.get("/v1/quarantine", headers={"X-API-Key": app_hub.keys[key]})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def _review_requested(smid: str, **person: str) -> dict:
    return {"source_system": "RiO", "source_message_id": smid, "change_type": "review-requested",
            "effective_date": "2025-05-01", "review_reason": "family asked", "person": {"nhs_number": NHS, **person}}


async def test_rest_a_change_with_another_date_of_birth_is_quarantined_not_applied(app_hub):
    await _on_register(app_hub)
    before = await _changes(app_hub)
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                json=_review_requested("dob-1", birth_date="1981-02-14", family_name="Testpatient"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    errors = r.json()["errors"]
    assert [e["field"] for e in errors] == ["person.birth_date"]
    assert "does not match the date of birth held" in errors[0]["reason"]
    assert "1981" not in r.text  # the value is never quoted
    assert r.json()["quarantine_id"] in {q["quarantine_id"] for q in await _quarantined(app_hub)}
    assert await _changes(app_hub) == before  # nothing recorded against the person held
    assert (await _held_details(app_hub))["birth_date"] == "1980-02-14"  # nor their details overwritten


async def test_rest_another_family_name_needs_the_date_of_birth_held(app_hub):
    await _on_register(app_hub)
    h = {"X-API-Key": app_hub.keys["trust"]}
    before = await _changes(app_hub)
    # Another family name and no date of birth to say who this is: held.
    r = await app_hub.http.post("/v1/register-changes", headers=h, json=_review_requested("fn-1", family_name="Smith"))
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["person.family_name"]
    assert await _changes(app_hub) == before
    assert (await _held_details(app_hub))["family_name"] == "Testpatient"
    # The same name in another case, spacing or punctuation is the same name.
    r = await app_hub.http.post("/v1/register-changes", headers=h,
                                json=_review_requested("fn-2", family_name=" TEST-PATIENT "))
    assert r.status_code == 202, r.text
    # A new family name with the date of birth held: a change of name, taken.
    r = await app_hub.http.post("/v1/register-changes", headers=h,
                                json=_review_requested("fn-3", family_name="Smith", birth_date="1980-02-14"))
    assert r.status_code == 202, r.text
    assert (await _held_details(app_hub))["family_name"] == "Smith"
    assert await _changes(app_hub) == before + 2


async def test_mllp_a_message_with_another_date_of_birth_is_ae_naming_pid_7(app_hub):
    await _on_register(app_hub)
    before = await _changes(app_hub)
    text = (FIXTURES / "hl7v2" / "ADT_A01_s3_detained.hl7").read_text().replace("\n", "\r")
    text = text.replace("||19800214|", "||19810214|").replace("RNU-A01-0001", "ID-MLLP-1")
    server = MllpServer(app_hub.hub.engine, app_hub.hub.ingest, "127.0.0.1", 0)
    try:
        ack = await server.handle(text.encode())
    finally:
        server._sock.close()
    assert "MSA|AE|ID-MLLP-1" in ack, ack
    assert re.search(r"ERR\|PID\^1\^7\^", ack), ack
    (entry,) = [q for q in await _quarantined(app_hub) if q["source_message_id"] == "ID-MLLP-1"]
    assert entry["errors"][0]["field"] == "PID-7", entry
    assert await _changes(app_hub) == before
    assert (await _held_details(app_hub))["birth_date"] == "1980-02-14"


async def test_fhir_a_message_with_another_birth_date_is_a_422_operation_outcome(app_hub):
    await _on_register(app_hub, "9990000018", given_name="Alex", family_name="TESTPATIENT", birth_date="1980-05-17")
    before = await _changes(app_hub)
    text = (FIXTURES / "fhir_inbound" / "detained.json").read_text().replace('"1980-05-17"', '"1979-05-17"')
    assert "1979-05-17" in text
    r = await app_hub.http.post("/v1/fhir/$process-message", content=text.encode(),
                                headers={"X-API-Key": app_hub.keys["trust"], "Content-Type": "application/fhir+json"})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert any("date of birth" in i.get("diagnostics", "") for i in body["issue"]), body
    assert await _changes(app_hub) == before
    assert (await _held_details(app_hub))["birth_date"] == "1980-05-17"


async def test_council_file_a_row_with_another_date_of_birth_is_rejected_naming_dob(app_hub):
    await _on_register(app_hub)
    _, key = await add_client(app_hub.hub.engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    before = await _changes(app_hub)
    data = "\n".join([
        "RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO,SURNAME,DOB",
        f"SW-1,REVIEW_DONE,01/07/2025,{NHS},TESTPATIENT,14/02/1981",  # another person's date of birth
        f"SW-2,REVIEW_DONE,02/07/2025,{NHS},TESTPATIENT,14/02/1980",  # the person held
        "",
    ]).encode()
    r = await app_hub.http.post("/v1/council-files?format=swift_csv", content=data,
                                headers={"X-API-Key": key, "Content-Type": "text/csv"})
    r = await council_file_done(app_hub.http, r, {"X-API-Key": key})
    assert r.status_code == 200, r.text
    first, second = r.json()["report"]
    assert first["status"] == "rejected", first
    assert [e["field"] for e in first["errors"]] == ["row 1, column DOB"], first
    assert second["status"] == "accepted", second
    assert await _changes(app_hub) == before + 1
    assert (await _held_details(app_hub))["birth_date"] == "1980-02-14"
    assert json.dumps(first).find("1981") == -1


async def test_the_source_confirming_the_identity_corrects_the_date_of_birth_held(app_hub):
    """The date of birth held is the wrong one (keyed wrongly when the person was first registered, corrected
    since in the trust's PAS against PDS): every later message carries the corrected one and would be held.
    The trust resubmits the held change confirming the identity: recorded, the details it sent replace those
    held, the write audited as confirm-identity; its next message matches. Failed before: there was no way to
    correct the date of birth held (a resubmission was held again; one without a date of birth left it wrong)."""
    await _on_register(app_hub)
    h = {"X-API-Key": app_hub.keys["trust"]}
    corrected = _review_requested("dob-c1", birth_date="1981-02-14", family_name="Testpatient")
    r = await app_hub.http.post("/v1/register-changes", headers=h, json=corrected)
    assert r.status_code == 422, r.text
    held_id = r.json()["quarantine_id"]
    before = await _changes(app_hub)
    # Resubmitted as it was, without confirming: held again (the check stands).
    r = await app_hub.http.post(f"/v1/quarantine/{held_id}/resubmit", headers=h,
                                content=json.dumps({**corrected, "source_message_id": "dob-c2"}))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "person.birth_date", r.text
    held_again = r.json()["quarantine_id"]
    # Another trust's key cannot confirm what this trust sent.
    r = await app_hub.http.post(f"/v1/quarantine/{held_again}/resubmit", params={"identity_confirmed": "true"},
                                headers={"X-API-Key": app_hub.keys["other-trust"]},
                                content=json.dumps({**corrected, "source_message_id": "dob-c3"}))
    assert r.status_code == 404, r.text
    r = await app_hub.http.post(f"/v1/quarantine/{held_again}/resubmit", params={"identity_confirmed": "true"},
                                headers=h, content=json.dumps({**corrected, "source_message_id": "dob-c3"}))
    assert r.status_code == 202, r.text
    assert r.json()["resubmission_of"] == held_again
    assert await _changes(app_hub) == before + 1
    assert (await _held_details(app_hub))["birth_date"] == "1981-02-14"
    async with app_hub.hub.engine.connect() as conn:  # who confirmed it, for `audit person`
        confirmed = (await conn.execute(select(access_decisions.c.channel, access_decisions.c.decision)
                                        .where(access_decisions.c.action == "confirm-identity"))).all()
    assert [tuple(c) for c in confirmed] == [("resubmit-rest", "allowed")]
    # The trust's next message, with the corrected date of birth, is recorded as any other.
    r = await app_hub.http.post("/v1/register-changes", headers=h,
                                json=_review_requested("dob-c4", birth_date="1981-02-14", family_name="Testpatient"))
    assert r.status_code == 202, r.text


async def test_identity_confirmed_is_for_a_register_change(app_hub):
    await _on_register(app_hub)
    h = {"X-API-Key": app_hub.keys["trust"]}
    r = await app_hub.http.post("/v1/register-changes", headers=h,
                                json=_review_requested("dob-p1", birth_date="1981-02-14"))
    held_id = r.json()["quarantine_id"]
    r = await app_hub.http.post(f"/v1/quarantine/{held_id}/resubmit", params={"identity_confirmed": "maybe"},
                                headers=h, content=json.dumps(_review_requested("dob-p2", birth_date="1981-02-14")))
    assert r.status_code == 422 and "identity_confirmed" in r.text, r.text
