"""Malformed input about someone the source has no role for: asked of the
access policy before anything is validated into quarantine, on every write
channel. The answer is the one a well-formed message about them gets (MLLP:
the one `AA` "no register change"; council files: the policy's one row error;
REST / FHIR: the `403` naming the rule) and nothing of it is kept. Malformed
input about the source's own person is still quarantined, naming the field.

Each test names the probe; the old answer is in its docstring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from hub.clients import add_client
from hub.domain.access import TEXTS, Rule
from hub.ingest.nhs_number import with_check_digit
from hub.mllp import NO_RELATIONSHIP_ACK, MllpServer
from hub.sample_data import WORCS
from hub.store.schema import care_packages, persons, quarantine, register_changes
from tests.support import council_file_done, detention

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NAMED = {"given_name": "Alex", "family_name": "Testpatient"}  # synthetic: the people probed have names to leak


def nhs(n: int) -> str:
    """A distinct test-range NHS number for each n (some 9-digit stems have no check digit)."""
    return next(v for k in range(n * 10, n * 10 + 10) if (v := with_check_digit(f"999{k:06d}")))


A, W, UNKNOWN, UNKNOWN_2 = nhs(3001), nhs(3002), nhs(3999), nhs(3998)


async def count(hub, table, *where) -> int:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()


async def kept(hub) -> tuple[int, int, int, int]:  # noqa: ANN001
    """What the hub holds: people, register changes, quarantined inputs, package lines."""
    return (await count(hub, persons), await count(hub, register_changes), await count(hub, quarantine),
            await count(hub, care_packages))


@pytest.fixture
async def world(app_hub):  # noqa: ANN001, ANN201
    """RNU has put a Buckinghamshire person (A) on the register, R1A a Worcestershire one (W).
    Buckinghamshire (responsible for A) and Birmingham (no part in either) may write."""
    hub = app_hub.hub
    keys = dict(app_hub.keys)
    keys["R1A"] = (await add_client(hub.engine, "Herefordshire and Worcestershire HC", "R1A", "trust",
                                    ["register:write", "s117:read"]))[1]
    keys["bucks-writer"] = (await add_client(hub.engine, "Bucks SWIFT", "E06000060", "council",
                                             ["register:write", "s117:read"]))[1]
    keys["brum-writer"] = (await add_client(hub.engine, "Birmingham case system", "E08000025", "council",
                                            ["register:write", "s117:read"]))[1]
    for change in detention(A, "a", **NAMED):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
        assert r.status_code == 202, r.text
    for change in detention(W, "w", **NAMED, hospital=WORCS.hospital_ods, council=WORCS.council_gss,
                            gp=WORCS.gp_practice_ods):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": keys["R1A"]}, json=change)
        assert r.status_code == 202, r.text
    return keys


# --- MLLP -------------------------------------------------------------------

def _segments(ack: str, name: str) -> list[str]:
    return [s for s in ack.replace("\n", "\r").split("\r") if s.startswith(name)]


def _answer(ack: str) -> tuple[str, str, list[str]]:
    """The ACK without its ids: MSA-1, MSA-3 and the ERR segments."""
    msa = _segments(ack, "MSA")[0].split("|")
    return msa[1], msa[3], _segments(ack, "ERR")


def _a03(number: str, control_id: str, birth_date: str = "19800214") -> bytes:
    text = (FIXTURES / "hl7v2" / "ADT_A03_discharge.hl7").read_text()
    return (text.replace("9990001006", number).replace("RNU-A03-0001", control_id)
            .replace("||19800214|", f"||{birth_date}|")).encode()


async def test_mllp_a03_with_a_bad_birth_date_about_someone_not_the_trusts(app_hub, world):
    """Old: an A03 from RNU with PID-7 19801345 about someone not on the register, or in R1A's care, got
    `AE` and a quarantine id: the whole message (name, address) kept, and an answer unlike the well-formed
    message's `AA`. New: the very `AA` "no register change" the well-formed one gets; nothing kept."""
    hub = app_hub.hub
    server = MllpServer(hub.engine, hub.ingest, "127.0.0.1", 0)
    before = await kept(hub)
    well_formed = _answer(await server.handle(_a03(UNKNOWN, "OK-1")))
    assert well_formed[0] == "AA" and NO_RELATIONSHIP_ACK.startswith(well_formed[1]) and not well_formed[2]
    for n, number in enumerate((UNKNOWN, W)):
        ack = await server.handle(_a03(number, f"BADDOB-{n}", birth_date="19801345"))
        assert _answer(ack) == well_formed, ack
        assert number not in ack
    assert await kept(hub) == before


async def test_mllp_a08_with_an_unreadable_legal_status_about_someone_not_the_trusts(app_hub, world):
    """Old: an A08 whose ZU5-2 is not a legal status code, about someone not on the register, was
    quarantined (AE). New: the one `AA` "no register change" (a change of legal status, whatever it
    was, is the care provider's to report); nothing kept."""
    hub = app_hub.hub
    server = MllpServer(hub.engine, hub.ingest, "127.0.0.1", 0)
    before = await kept(hub)
    a08 = (FIXTURES / "hl7v2" / "ADT_A08_s2_to_s3_update.hl7").read_text()
    for n, number in enumerate((UNKNOWN, W)):
        bad = a08.replace("9990001006", number).replace("RNU-A08-0001", f"A08-{n}").replace(
            "ZU5|2025|2|3|", "ZU5|2025|77|3|")
        ack = await server.handle(bad.encode())
        code, text, errors = _answer(ack)
        assert code == "AA" and NO_RELATIONSHIP_ACK.startswith(text) and not errors, ack
    assert await kept(hub) == before


async def test_mllp_malformed_message_about_the_trusts_own_patient_is_still_quarantined(app_hub, world):
    """The trust has a role for A (it detained them): a bad PID-7 is `AE` naming PID-7, kept for correction."""
    hub = app_hub.hub
    server = MllpServer(hub.engine, hub.ingest, "127.0.0.1", 0)
    before = await count(hub, quarantine)
    ack = await server.handle(_a03(A, "MINE-1", birth_date="19801345"))
    code, text, errors = _answer(ack)
    assert code == "AE" and "quarantine id" in text, ack
    assert any("PID-7" in e for e in errors), errors
    assert await count(hub, quarantine) == before + 1


# --- Council files -----------------------------------------------------------

HEADER = ("RECORD_ID,EVENT,EFFECTIVE_DATE,NOTIFIED_DATE,NHS_NO,SURNAME,FORENAME,DOB,POSTCODE,LA_GSS,NFA,"
          "PACKAGE_ID,SERVICE_TYPE,PROVIDER_TYPE,PROVIDER,NEED,WEEKLY_COST\n")


def _row(record_id: str, event: str, number: str, dob: str = "14/03/1971") -> str:
    if event == "PKG_START":
        return f"{record_id},PKG_START,01/08/2025,,{number},,,,,,,L-{record_id},support worker,LA,P1,SC,250.00\n"
    return f"{record_id},{event},01/08/2025,04/08/2025,{number},Testpatient,Alex,{dob},HP20 1AA,E08000025,N,,,,,,\n"


async def _send(app_hub, key: str, rows: str) -> dict:  # noqa: ANN001
    headers = {"X-API-Key": key}
    r = await app_hub.http.post("/v1/council-files?format=swift_csv", content=(HEADER + rows).encode(),
                                headers={**headers, "Content-Type": "text/csv"})
    r = await council_file_done(app_hub.http, r, headers)
    assert r.status_code == 200, r.text
    return {e["record_id"]: e for e in r.json()["report"]}


def _as_row_n(entry: dict) -> dict:
    """A report entry with its own row number taken out of the field names."""
    return {**entry, "row": "N", "record_id": "-",
            "errors": [{**e, "field": e["field"].replace(f"row {entry['row']},", "row N,")}
                       for e in entry["errors"]]}


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "row-by-row"])
async def test_council_rows_about_someone_not_the_councils(app_hub, world, bulk):
    """Old: Birmingham's ADDR_CHANGE rows with DOB 31/02/1970, about someone unknown and about
    Buckinghamshire's person, were rejected naming DOB with a quarantine id (the rows kept), where the
    same rows with a good DOB get the policy's one row error; PKG_START rows about them were quarantined
    with the package's own wording. New: every one gets the policy's one row error, nothing kept."""
    app_hub.hub.files._bulk = bulk
    before = await kept(app_hub.hub)
    report = await _send(app_hub, world["brum-writer"], "".join([
        _row("B-1", "ADDR_CHANGE", UNKNOWN), _row("B-2", "ADDR_CHANGE", A),
        _row("B-3", "ADDR_CHANGE", UNKNOWN_2, dob="31/02/1970"), _row("B-4", "ADDR_CHANGE", A, dob="31/02/1970"),
        _row("B-5", "PKG_START", UNKNOWN), _row("B-6", "PKG_START", A), _row("B-7", "ADDR_CHANGE", W, dob="31/02/1970"),
    ]))
    one = _as_row_n(report["B-1"])
    assert one["status"] == "rejected" and "quarantine_id" not in one and one["rule"] == "no-relationship"
    assert one["errors"] == [{"field": "row N, column NHS_NO", "reason": TEXTS[Rule.NO_RELATIONSHIP]}]
    for record_id in ("B-2", "B-3", "B-4", "B-5", "B-6", "B-7"):
        assert _as_row_n(report[record_id]) == one, record_id
    assert await kept(app_hub.hub) == before


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "row-by-row"])
async def test_a_council_row_claiming_a_detention_is_refused_by_the_rule(app_hub, world, bulk):
    """Old: a DETAINED row from a council was quarantined as "is a trust event". New: refused under
    trust-only-change-type, as on every channel: a row error naming EVENT, nothing kept (whoever the
    person is, even with a number that cannot be read)."""
    app_hub.hub.files._bulk = bulk
    before = await kept(app_hub.hub)
    report = await _send(app_hub, world["bucks-writer"], "".join([
        _row("D-1", "DETAINED", A), _row("D-2", "DETAINED", UNKNOWN), _row("D-3", "DETAINED", "123"),
        _row("D-4", "LEFT_HOSPITAL", A, dob="31/02/1970")]))
    for record_id, entry in report.items():
        entry = _as_row_n(entry)
        assert entry["status"] == "rejected" and "quarantine_id" not in entry, record_id
        assert entry["rule"] == "trust-only-change-type"
        assert entry["errors"] == [{"field": "row N, column EVENT", "reason": TEXTS[Rule.TRUST_ONLY_CHANGE_TYPE]}]
    assert await kept(app_hub.hub) == before


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "row-by-row"])
async def test_a_bad_row_about_the_councils_own_person_is_still_quarantined(app_hub, world, bulk):
    """Buckinghamshire is A's responsible council: its bad DOB is a row error naming DOB, kept to correct."""
    app_hub.hub.files._bulk = bulk
    held = await count(app_hub.hub, quarantine)
    report = await _send(app_hub, world["bucks-writer"], _row("M-1", "ADDR_CHANGE", A, dob="31/02/1970"))
    assert report["M-1"]["status"] == "rejected" and "quarantine_id" in report["M-1"]
    assert [e["field"] for e in report["M-1"]["errors"]] == ["row 1, column DOB"]
    assert await count(app_hub.hub, quarantine) == held + 1


# --- REST and FHIR -------------------------------------------------------------

async def test_council_key_posting_detained_without_a_hospital_over_rest(app_hub, world):
    """Old: Buckinghamshire's `detained` without a hospital: 422 and quarantined. New: 403
    trust-only-change-type (refused on every channel), the body a well-formed one gets; nothing kept."""
    before = await kept(app_hub.hub)
    well_formed = detention(UNKNOWN, "council", **NAMED)[0]
    bare = {k: v for k, v in well_formed.items() if k not in ("hospital_ods", "legal_status_code")}
    answers = []
    for n, change in enumerate((well_formed, bare, {**bare, "person": {"nhs_number": A}},
                                {**bare, "person": {"nhs_number": "123"}})):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": world["bucks-writer"]},
                                    json={**change, "source_message_id": f"det-{n}"})
        assert r.status_code == 403, r.text
        answers.append(r.content)
    assert len(set(answers)) == 1 and json.loads(answers[0])["rule"] == "trust-only-change-type"
    assert await kept(app_hub.hub) == before


async def test_rest_malformed_change_about_someone_not_the_councils(app_hub, world):
    """Old: Birmingham's review request with a bad date about someone unknown or Buckinghamshire's person:
    422, quarantined. New: the 403 no-relationship a well-formed one gets, byte for byte; nothing kept.
    Buckinghamshire's own person: 422 naming the field, quarantined."""
    base = {"source_system": "x", "change_type": "review-requested", "effective_date": "2025-05-01"}
    before = await kept(app_hub.hub)
    brum = {"X-API-Key": world["brum-writer"]}
    answers = []
    for n, (number, date) in enumerate(((UNKNOWN, "2025-05-01"), (UNKNOWN, "2025-13-45"), (A, "2025-13-45"),
                                        (W, "not a date"))):
        r = await app_hub.http.post("/v1/register-changes", headers=brum, json={
            **base, "source_message_id": f"r-{n}", "effective_date": date, "person": {"nhs_number": number}})
        assert r.status_code == 403, r.text
        answers.append(r.content)
    assert len(set(answers)) == 1 and json.loads(answers[0])["rule"] == "no-relationship"
    assert await kept(app_hub.hub) == before
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": world["bucks-writer"]}, json={
        **base, "source_message_id": "mine", "effective_date": "2025-13-45", "person": {"nhs_number": A}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "effective_date", r.text
    assert await count(app_hub.hub, quarantine) == before[2] + 1


def _bundle(number: str, message_id: str, birth_date: str = "1980-05-17") -> bytes:
    bundle = json.loads((FIXTURES / "fhir_inbound" / "left_hospital.json").read_text())
    bundle["identifier"]["value"] = message_id
    text = json.dumps(bundle).replace("9990000018", number).replace('"1980-05-17"', json.dumps(birth_date))
    return text.encode()


async def test_fhir_malformed_message_about_someone_not_the_trusts(app_hub, world):
    """Old: RNU's left-hospital Bundle with a Patient.birthDate that is not a date, about someone unknown
    or in R1A's care: 422 and quarantined. New: the 403 OperationOutcome a well-formed one gets; nothing
    kept. RNU's own patient: 422 naming the element, quarantined."""
    before = await kept(app_hub.hub)
    fhir = {"X-API-Key": world["trust"], "Content-Type": "application/fhir+json"}
    answers = []
    for n, (number, birth_date) in enumerate(((UNKNOWN, "1980-05-17"), (UNKNOWN, "1980-13-45"), (W, "1980-13-45"))):
        r = await app_hub.http.post("/v1/fhir/$process-message", content=_bundle(number, f"f-{n}", birth_date),
                                    headers=fhir)
        assert r.status_code == 403, r.text
        answers.append(r.content)
    assert len(set(answers)) == 1 and json.loads(answers[0])["issue"][0]["diagnostics"].startswith("no-relationship")
    assert await kept(app_hub.hub) == before
    r = await app_hub.http.post("/v1/fhir/$process-message", content=_bundle(A, "f-mine", "1980-13-45"), headers=fhir)
    assert r.status_code == 422, r.text
    assert await count(app_hub.hub, quarantine) == before[2] + 1
