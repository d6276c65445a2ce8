"""Issue #6 items 1-3, replayed as an attacker and a careless client would:
who may write and read a person, reads cut to the agreements, and no
membership oracle on any channel. Each test names the probe and asserts the
safe outcome (the old answer is in its docstring)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from hub.clients import add_client
from hub.ingest.nhs_number import with_check_digit
from hub.mllp import MllpServer
from hub.sample_data import WORCS
from hub.store.schema import access_decisions, persons, quarantine, register_changes
from tests.support import council_file_done, detention

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

NAMED = {"given_name": "Alex", "family_name": "Testpatient"}  # synthetic: the people probed have names to leak


def nhs(n: int) -> str:
    """A distinct test-range NHS number for each n (some 9-digit stems have no check digit)."""
    return next(v for k in range(n * 10, n * 10 + 10) if (v := with_check_digit(f"999{k:06d}")))



async def post(app_hub, key: str, change: dict):  # noqa: ANN001, ANN201
    return await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": key}, json=change)


async def count(hub, table, *where) -> int:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()


@pytest.fixture
async def world(app_hub):  # noqa: ANN001, ANN201
    """RNU has put a Buckinghamshire person (A) on the register; R1A a Worcestershire one (W)."""
    hub = app_hub.hub
    keys = dict(app_hub.keys)
    keys["R1A"] = (await add_client(hub.engine, "Herefordshire and Worcestershire HC", "R1A", "trust",
                                    ["register:write", "s117:read"]))[1]
    keys["bucks-writer"] = (await add_client(hub.engine, "Bucks SWIFT", "E06000060", "council",
                                             ["register:write", "s117:read"]))[1]
    keys["worcs-writer"] = (await add_client(hub.engine, "Worcs case system", "E10000034", "council",
                                             ["register:write", "s117:read"]))[1]
    ids = {}
    for change in detention(nhs(1001), "a", **NAMED):
        r = await post(app_hub, keys["trust"], change)
        assert r.status_code == 202, r.text
    ids["A"] = r.json()["person_id"]
    for change in detention(nhs(1002), "w", **NAMED, hospital=WORCS.hospital_ods, council=WORCS.council_gss,
                            gp=WORCS.gp_practice_ods):
        r = await post(app_hub, keys["R1A"], change)
        assert r.status_code == 202, r.text
    ids["W"] = r.json()["person_id"]
    return keys, ids


def without_ids(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("correlation_id", "quarantine_id")}


# --- 1. Access by relationship ---------------------------------------------

async def test_trust_a_cannot_write_about_or_read_trust_bs_person(app_hub, world):
    """Old: RV3 posted left-hospital and died for RNU's person: 202, 202, then GET 200 with the whole history.
    New: 403 naming no-relationship, nothing recorded, GET 404."""
    keys, ids = world
    before = await count(app_hub.hub, register_changes)
    for change_type in ("left-hospital", "died"):
        change = {"source_system": "x", "source_message_id": f"evil-{change_type}", "change_type": change_type,
                  "effective_date": "2025-05-01", "person": {"nhs_number": nhs(1001)}}
        if change_type == "left-hospital":
            change["hospital_ods"] = "RV3"  # even naming its own hospital
        r = await post(app_hub, keys["other-trust"], change)
        assert r.status_code == 403, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["rule"] == "no-relationship"
    assert await count(app_hub.hub, register_changes) == before
    r = await app_hub.http.get(f"/v1/persons/{ids['A']}/s117", headers={"X-API-Key": keys["other-trust"]})
    assert r.status_code == 404
    # Audited, with nothing personal: the hub person id, the rule, the caller. The read is refused
    # before the person is read (the trust has no agreement: its answer's time must not say who is on
    # the register), so it names no person.
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(access_decisions).where(access_decisions.c.decision == "denied"))).all()
    assert {(r.action, r.rule, r.person_id) for r in rows} >= {("write", "no-relationship", ids["A"]),
                                                               ("read", "no-agreement", None)}
    assert all(nhs(1001) not in str(tuple(r)) for r in rows)


async def test_council_review_request_for_another_councils_person_by_file(app_hub, world):
    """Old: Worcestershire's file row REVIEW_REQ for Buckinghamshire's person was accepted.
    New: the row is rejected with the one no-relationship text, identical to a row for someone not on
    the register; nothing recorded, nothing kept."""
    keys, _ = world
    header = ("RECORD_ID,EVENT,EFFECTIVE_DATE,NOTIFIED_DATE,NHS_NO,SURNAME,FORENAME,DOB,POSTCODE,LA_GSS,NFA,"
              "GP_ODS,REVIEW_REASON,LA_AGREES,NHS_AGREES,PERSON_INVOLVED,END_REASONS,PARTICIPANTS\n")
    rows = (f"WO-1,REVIEW_REQ,01/08/2025,04/08/2025,{nhs(1001)},,,,,,,,housing,,,,,\n"
            f"WO-2,REVIEW_REQ,01/08/2025,04/08/2025,{nhs(1999)},,,,,,,,housing,,,,,\n"
            f"WO-3,REVIEW_REQ,01/08/2025,04/08/2025,{nhs(1002)},,,,,,,,housing,,,,,\n")
    before = await count(app_hub.hub, register_changes)
    r = await app_hub.http.post("/v1/council-files?format=swift_csv", content=(header + rows).encode(),
                                headers={"X-API-Key": keys["worcs-writer"], "Content-Type": "text/csv"})
    r = await council_file_done(app_hub.http, r, {"X-API-Key": keys["worcs-writer"]})  # rows in the background
    assert r.status_code == 200, r.text
    report = {e["record_id"]: e for e in r.json()["report"]}
    assert report["WO-1"]["status"] == report["WO-2"]["status"] == "rejected"
    assert report["WO-3"]["status"] == "accepted"  # its own person: Worcestershire is responsible
    not_yours = [{**e, "field": e["field"].replace("row 1", "row N")} for e in report["WO-1"]["errors"]]
    unknown = [{**e, "field": e["field"].replace("row 2", "row N")} for e in report["WO-2"]["errors"]]
    assert not_yours == unknown == [{"field": "row N, column NHS_NO", "reason": unknown[0]["reason"]}]
    assert set(report["WO-1"]) == set(report["WO-2"])  # same keys: no quarantine id for one only
    assert await count(app_hub.hub, register_changes) == before + 1
    assert await count(app_hub.hub, quarantine) == 0


async def test_council_key_posting_detained_over_rest_and_fhir(app_hub, world):
    """Old: a council key posted `detained` on REST: 202. New: 403 trust-only-change-type on REST and FHIR."""
    keys, _ = world
    change = detention(nhs(1003), "council", **NAMED)[0]
    r = await post(app_hub, keys["bucks-writer"], change)
    assert r.status_code == 403 and r.json()["rule"] == "trust-only-change-type", r.text
    bundle = (FIXTURES / "fhir_inbound" / "detained.json").read_bytes()
    r = await app_hub.http.post("/v1/fhir/$process-message", content=bundle,
                                headers={"X-API-Key": keys["bucks-writer"], "Content-Type": "application/fhir+json"})
    assert r.status_code == 403, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.json()["issue"][0]["diagnostics"].startswith("trust-only-change-type")
    assert await count(app_hub.hub, persons) == 2  # nobody new


async def test_trust_reporting_a_detention_in_another_trusts_hospital(app_hub, world):
    """Old: RNU reported a detention in R1A's hospital: 202. New: 403 hospital-not-run-by-source, on REST
    and over MLLP (AR naming the rule); a site code of its own (RNU01) is its own."""
    keys, _ = world
    change = detention(nhs(1004), "x", **NAMED, hospital="R1A", council="E10000034", gp="M81001")[0]
    r = await post(app_hub, keys["trust"], change)
    assert r.status_code == 403 and r.json()["rule"] == "hospital-not-run-by-source", r.text
    assert r.json()["errors"][0]["field"] == "hospital_ods"
    r = await post(app_hub, keys["trust"], {**change, "hospital_ods": "RNU01", "source_message_id": "own-site"})
    assert r.status_code == 202, r.text
    r = await post(app_hub, keys["trust"], {**change, "hospital_ods": "R1A07", "source_message_id": "their-site"})
    assert r.status_code == 403 and r.json()["rule"] == "hospital-not-run-by-source", r.text

    server = MllpServer(app_hub.hub.engine, app_hub.hub.ingest, "127.0.0.1", 0)
    a01 = (FIXTURES / "hl7v2" / "ADT_A01_s3_detained.hl7").read_text().replace("^WARD1^BED1^RNU", "^WARD1^BED1^R1A")
    ack = await server.handle(a01.encode())
    assert "|AR|" in ack and "hospital-not-run-by-source" in ack, ack


async def test_writing_never_makes_a_reader(app_hub, world):
    """Old: any source that had written was a party and could read. New: a trust whose write was refused
    reads nothing; a detention in its own hospital makes it a care provider, not a writer's prize."""
    keys, ids = world
    r = await app_hub.http.get(f"/v1/persons/{ids['W']}/s117", headers={"X-API-Key": keys["trust"]})
    assert r.status_code == 404  # RNU has no part in W's care


# --- 2. Reads follow the agreements ----------------------------------------

async def test_council_with_identity_and_responsibility_reads_only_those(app_hub, world):
    """Old: Worcestershire (agreement: identity + responsibility) read the qualifying section, the
    explanations and five history entries. New: the entitlement, its period and the responsible bodies
    (names and codes), nothing else; the read is audited with its groups."""
    keys, ids = world
    worcs = {"X-API-Key": keys["worcs-writer"]}
    r = await app_hub.http.get(f"/v1/persons/{ids['W']}/s117", headers=worcs)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["entitled"] is True
    assert body["responsible_council"]["org"]["code"] == "E10000034"
    for hidden in ("qualifying_section_code", "entitling_section_code", "history", "entitlement",
                   "register_service_level", "detained", "refused_discharges"):
        assert hidden not in body, hidden
    assert "explanation" not in body["responsible_council"] and "citation" not in body["responsible_council"]
    assert "explanation" not in json.dumps(body)
    # The same person read by Buckinghamshire's full agreement? Bucks has no role: 404.
    r = await app_hub.http.get(f"/v1/persons/{ids['W']}/s117", headers={"X-API-Key": app_hub.keys["E06000060"]})
    assert r.status_code == 404
    async with app_hub.hub.engine.connect() as conn:
        row = (await conn.execute(select(access_decisions).where(
            access_decisions.c.action == "read", access_decisions.c.org_code == "E10000034"))).one()
    assert (row.decision, row.role, row.agreement_id) == ("allowed", "responsible-council", "DSA-HW-S117-HOST-2024")
    assert {"identity", "responsibility"} <= set(row.field_groups)
    assert not {"legal-status", "explanations", "demographics", "address"} & set(row.field_groups)


async def test_full_agreement_reads_everything_and_admin_sees_all(app_hub, world):
    keys, ids = world
    r = await app_hub.http.get(f"/v1/persons/{ids['A']}/s117", headers={"X-API-Key": app_hub.keys["E06000060"]})
    assert r.status_code == 200
    assert {"qualifying_section_code", "history", "entitlement", "register_service_level"} <= set(r.json())
    _, admin = await add_client(app_hub.hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"])
    r = await app_hub.http.get(f"/v1/persons/{ids['W']}/s117", headers={"X-API-Key": admin})
    assert r.status_code == 200 and "history" in r.json()
    assert await count(app_hub.hub, access_decisions, access_decisions.c.role == "hub-operator") == 1


async def test_a_body_responsible_in_the_past_reads_its_own_period_only(app_hub, world):
    """Worcestershire stops being responsible when a dispute is resolved in Herefordshire's favour:
    it may then read as_of dates inside its own period, and nothing later."""
    keys, ids = world
    resolve = {"source_system": "x", "source_message_id": "res-1", "person": {"nhs_number": nhs(1002)},
               "change_type": "dispute-raised", "effective_date": "2025-05-01",
               "dispute": {"dispute_id": "OR-1", "kind": "council", "parties": ["E10000034", "E06000019"]}}
    r = await post(app_hub, keys["worcs-writer"], resolve)
    assert r.status_code == 202, r.text
    # The outcome stands once both parties have recorded it: Worcestershire, then Herefordshire.
    _, hereford = await add_client(app_hub.hub.engine, "Herefordshire", "E06000019", "council", ["register:write"])
    for key in (keys["worcs-writer"], hereford):
        r = await post(app_hub, key, {
            **resolve, "source_message_id": "res-2", "change_type": "dispute-resolved", "effective_date": "2025-06-01",
            "dispute": {**resolve["dispute"], "resolved_responsible": "E06000019"}})
        assert r.status_code == 202, r.text
    worcs = {"X-API-Key": keys["worcs-writer"]}
    now = await app_hub.http.get(f"/v1/persons/{ids['W']}/s117", headers=worcs)
    assert now.status_code == 404
    inside = await app_hub.http.get(f"/v1/persons/{ids['W']}/s117?as_of=2025-05-15", headers=worcs)
    assert inside.status_code == 200, inside.text
    assert inside.json()["as_of"] == "2025-05-15"
    later = await app_hub.http.get(f"/v1/persons/{ids['W']}/s117?as_of=2025-07-01", headers=worcs)
    assert later.status_code == 404
    assert without_ids(later.json()) == without_ids(now.json())


# --- 3. No membership oracle ---------------------------------------------

async def test_lookup_answers_alike_for_unknown_and_not_yours(app_hub, world):
    """Old: an unknown NHS number and one on the register but not the caller's answered with different
    texts. New: one identical 404 body; the caller's own person is found."""
    keys, ids = world
    brum = {"X-API-Key": app_hub.keys["E08000025"]}
    unknown = await app_hub.http.post("/v1/persons/lookup", headers=brum, json={"nhs_number": nhs(1999)})
    not_yours = await app_hub.http.post("/v1/persons/lookup", headers=brum, json={"nhs_number": nhs(1001)})
    assert unknown.status_code == not_yours.status_code == 404
    assert unknown.content == not_yours.content
    # GET by id: unknown id and someone else's person give the very same body as lookup does.
    by_id = await app_hub.http.get(f"/v1/persons/{ids['A']}/s117", headers=brum)
    no_id = await app_hub.http.get("/v1/persons/00000000-0000-0000-0000-000000000000/s117", headers=brum)
    assert by_id.content == no_id.content == unknown.content
    # The responsible council finds its own person.
    mine = await app_hub.http.post("/v1/persons/lookup", headers={"X-API-Key": app_hub.keys["E06000060"]},
                                   json={"nhs_number": nhs(1001)})
    assert mine.json() == {"person_id": ids["A"]}


async def test_rest_and_fhir_writes_answer_alike_for_unknown_and_not_yours(app_hub, world):
    keys, _ = world
    base = {"source_system": "x", "change_type": "review-requested", "effective_date": "2025-05-01"}
    a = await post(app_hub, keys["worcs-writer"], {**base, "source_message_id": "p1",
                                                   "person": {"nhs_number": nhs(1001)}})
    b = await post(app_hub, keys["worcs-writer"], {**base, "source_message_id": "p2",
                                                   "person": {"nhs_number": nhs(1999)}})
    assert a.status_code == b.status_code == 403
    assert a.content == b.content
    # FHIR: RV3 reports left-hospital (its own hospital) for RNU's person and for someone unknown.
    bundle = json.loads((FIXTURES / "fhir_inbound" / "left_hospital.json").read_text())
    answers = []
    for n, number in enumerate((nhs(1001), nhs(1998))):
        text = json.dumps(bundle).replace("9990000018", number).replace('"RNU"', '"RV3"')
        text = text.replace(bundle["id"], f"probe-{n}") if "id" in bundle else text
        r = await app_hub.http.post("/v1/fhir/$process-message", content=text.encode(),
                                    headers={"X-API-Key": keys["other-trust"], "Content-Type": "application/fhir+json"})
        answers.append(r)
    assert answers[0].status_code == answers[1].status_code == 403, answers[0].text
    assert answers[0].content == answers[1].content
    assert answers[0].json()["issue"][0]["diagnostics"].startswith("no-relationship")


async def test_mllp_a03_answers_alike_for_unknown_and_not_yours(app_hub, world):
    """Old: an A03 for someone not on the register got "no register change: the person is not on the s117
    register", one for someone else's patient "register change accepted". New: one identical ACK."""
    keys, _ = world
    server = MllpServer(app_hub.hub.engine, app_hub.hub.ingest, "127.0.0.1", 0)
    a03 = (FIXTURES / "hl7v2" / "ADT_A03_discharge.hl7").read_text().replace("RNU", "RV3")
    acks = []
    for number in (nhs(1001), nhs(1997)):
        ack = await server.handle(a03.replace("9990001006", number).encode())
        msa = next(seg for seg in ack.replace("\n", "\r").split("\r") if seg.startswith("MSA"))
        err = [seg for seg in ack.replace("\n", "\r").split("\r") if seg.startswith("ERR")]
        acks.append((msa, err))
    assert acks[0] == acks[1]
    assert acks[0][0].startswith("MSA|AA|") and "no register change" in acks[0][0]
    assert await count(app_hub.hub, persons) == 2 and await count(app_hub.hub, quarantine) == 0


async def test_a_body_without_an_agreement_is_refused_before_the_person_is_read(app_hub, world, monkeypatch):
    """A lookup by a body with no agreement took longer for a number on the
    register (its history read and evaluated) than for one not on it: a
    membership oracle by time. Now neither the number nor the person is read."""
    import hub.api.persons as persons

    keys, ids = world
    read: list[str] = []
    real_changes, real_lookup = persons._changes, persons.person_id_for_nhs_number

    async def changes(hub, person_id):  # noqa: ANN001, ANN202
        read.append(person_id)
        return await real_changes(hub, person_id)

    async def lookup(hub, number):  # noqa: ANN001, ANN202
        read.append("number")
        return await real_lookup(hub, number)

    monkeypatch.setattr(persons, "_changes", changes)
    monkeypatch.setattr(persons, "person_id_for_nhs_number", lookup)
    headers = {"X-API-Key": keys["other-trust"]}
    known = await app_hub.http.post("/v1/persons/lookup", headers=headers, json={"nhs_number": nhs(1001)})
    unknown = await app_hub.http.post("/v1/persons/lookup", headers=headers, json={"nhs_number": nhs(1999)})
    query = await app_hub.http.get(f"/v1/persons/{ids['A']}/s117", headers=headers)
    assert known.status_code == unknown.status_code == query.status_code == 404
    assert known.json()["detail"] == unknown.json()["detail"]
    assert read == []
