"""POST /v1/council-files through the in-process app: a council's nightly
export after the trust has put the people on the register; per-row report,
quarantine of the bad rows, idempotent re-sends, file-level rejections."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import func, select

from hub.clients import add_client
from hub.store.schema import bus_messages, file_receipts, quarantine, register_changes

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "council_files"
PERSON_A = {"nhs_number": "9991100016", "given_name": "Alex", "family_name": "Testpatient", "birth_date": "1971-03-14",
            "postcode": "HP20 1AA"}
PERSON_C = {"nhs_number": "9991100032", "given_name": "Robin", "family_name": "Synthetic", "birth_date": "1985-07-04",
            "postcode": "HP20 1AA"}


def trust_changes(person: dict, run: str) -> list[dict]:
    """A qualifying detention (s3) in Buckinghamshire and leaving hospital: the person is on the register."""
    base = {"source_system": "RiO", "person": person}
    return [
        {**base, "source_message_id": f"{run}-1", "change_type": "detained", "effective_date": "2025-01-06",
         "legal_status_code": "03", "hospital_ods": "RNU", "gp_practice_ods": "K82001",
         "residence_la_gss": "E06000060"},
        {**base, "source_message_id": f"{run}-2", "change_type": "left-hospital", "effective_date": "2025-04-07",
         "hospital_ods": "RNU"},
    ]


async def count(hub, table, *where) -> int:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()


@pytest.fixture
async def council(app_hub):  # noqa: ANN001, ANN201
    """Buckinghamshire's case system, allowed to write to the register; both people already on it."""
    _, key = await add_client(app_hub.hub.engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    for person, run in ((PERSON_A, "a"), (PERSON_C, "c")):
        for change in trust_changes(person, run):
            r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                        json=change)
            assert r.status_code == 202, r.text
    return {"X-API-Key": key}


async def send(app_hub, headers, data: bytes, fmt: str = "swift_csv", content_type: str = "text/csv"):  # noqa: ANN001, ANN201
    """POST the file; once it is accepted (202), wait for its rows and answer with its receipt (GET)."""
    r = await app_hub.http.post(f"/v1/council-files?format={fmt}", content=data,
                                headers={**headers, "Content-Type": content_type})
    if r.status_code != 202:
        return r
    assert r.json()["status"] == "processing" and r.headers["location"] == f"/v1/council-files/{r.json()['file_id']}"
    await app_hub.hub.files.wait(r.json()["file_id"])
    return await app_hub.http.get(r.headers["location"], headers=headers)


def statuses(body: dict) -> list[tuple[str | None, str]]:
    return [(e["record_id"], e["status"]) for e in body["report"]]


async def test_csv_export_is_recorded_row_by_row_and_bad_rows_are_quarantined(app_hub, council):
    data = (FIXTURES / "bucks_nightly.csv").read_bytes()
    changes_before = await count(app_hub.hub, register_changes)
    r = await send(app_hub, council, data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert statuses(body) == [
        ("SW-1001", "accepted"), ("SW-1002", "accepted"), ("SW-1003", "accepted"), ("SW-1004", "rejected"),
        ("SW-1005", "rejected"), ("SW-1006", "rejected"), ("SW-1007", "rejected"), ("SW-1008", "accepted")]
    assert (body["format"], body["rows"], body["accepted"], body["duplicates"], body["rejected"]) == (
        "swift_csv", 8, 4, 0, 4)
    errors = {e["record_id"]: e.get("errors") for e in body["report"]}
    # A trust's change type: refused by the access policy (trust-only-change-type), nothing kept.
    assert [x["field"] for x in errors["SW-1004"]] == ["row 4, column EVENT"]
    assert "council or commissioner does not report detentions" in errors["SW-1004"][0]["reason"]
    assert next(e for e in body["report"] if e["record_id"] == "SW-1004")["rule"] == "trust-only-change-type"
    assert errors["SW-1005"] == [{"field": "row 5, column NHS_NO", "reason": "fails the modulus-11 check digit"}]
    assert [x["field"] for x in errors["SW-1006"]] == ["row 6, column EFFECTIVE_DATE"]
    assert [x["field"] for x in errors["SW-1007"]] == ["row 7, column NHS_NO"]
    # Not on the register: the access policy's one answer (the same as for another council's person),
    # and nothing of the row is kept.
    assert errors["SW-1007"][0]["reason"].startswith("no person this source may report on or see matches")
    for entry in body["report"]:
        assert ("change_id" in entry) == (entry["status"] == "accepted")
        assert ("quarantine_id" in entry) == (entry["status"] == "rejected"
                                              and entry["record_id"] not in ("SW-1004", "SW-1007"))
    for value in ("9991100017", "9991100024", "Example", "Sample", "31/02/2025"):
        assert value not in r.text  # the report never quotes what the council sent

    assert await count(app_hub.hub, register_changes) == changes_before + 4
    assert await count(app_hub.hub, quarantine, quarantine.c.channel == "file") == 2
    # The council can see its bad rows, raw, to correct them.
    held = (await app_hub.http.get("/v1/quarantine", headers=council)).json()["items"]
    assert {q["source_message_id"] for q in held} == {"SW-1005", "SW-1006"}
    q = next(e for e in body["report"] if e["record_id"] == "SW-1005")["quarantine_id"]
    one = (await app_hub.http.get(f"/v1/quarantine/{q}", headers=council)).json()
    assert one["raw"].startswith("SW-1005,GP_CHANGE,06/08/2025,,9991100017")

    # The council's s117 discharge (SW-1008) awaits the NHS side's own agreement: the care trust, acting
    # for the NHS commissioner, records its decision too, and entitlement ends (Worcs 16.1).
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json={
        "source_system": "RiO", "source_message_id": "a-discharge", "change_type": "s117-discharge-decided",
        "effective_date": "2025-09-01", "person": PERSON_A,
        "discharge": {"council_agrees": True, "commissioner_agrees": True, "reasons": ["no-longer-needs-services"],
                      "participants": ["care coordinator", "consultant psychiatrist"], "person_involved": True}})
    assert r.status_code == 202, r.text

    # The council's changes had their consequences: out of area, review due, entitlement ended.
    async with app_hub.hub.engine.connect() as conn:
        kinds = {row.headers["event_type"] for row in (await conn.execute(select(bus_messages.c.headers))).all()}
    assert {"s117-moved-out-of-area", "s117-review-due", "s117-entitlement-ended"} <= kinds

    receipt = (await app_hub.http.get(f"/v1/council-files/{body['file_id']}", headers=council)).json()
    assert (receipt["status"], receipt["rows"], receipt["accepted"], receipt["rejected"]) == ("processed", 8, 4, 4)
    assert receipt["report"] == body["report"]
    assert receipt["sha256"] == hashlib.sha256(data).hexdigest()
    # Another source cannot read the receipt.
    r = await app_hub.http.get(f"/v1/council-files/{body['file_id']}", headers={"X-API-Key": app_hub.keys["trust"]})
    assert r.status_code == 404
    # ...and is told exactly what an unknown id gets: the answer does not say the file exists.
    unknown = await app_hub.http.get("/v1/council-files/00000000-0000-4000-8000-000000000000",
                                     headers={"X-API-Key": app_hub.keys["trust"]})
    same = ("type", "title", "status", "detail")
    assert unknown.status_code == 404 and {k: unknown.json().get(k) for k in same} == {k: r.json().get(k) for k in same}


async def test_resending_a_file_gives_duplicates_and_changes_nothing(app_hub, council):
    data = (FIXTURES / "bucks_nightly.csv").read_bytes()
    first = (await send(app_hub, council, data)).json()
    changes, held = await count(app_hub.hub, register_changes), await count(app_hub.hub, quarantine)
    second = (await send(app_hub, council, data)).json()
    assert second["duplicate"] is True and second["replay_of"] == first["file_id"]
    assert (second["accepted"], second["duplicates"], second["rejected"]) == (0, 4, 4)
    assert [e.get("change_id") for e in second["report"]] == [e.get("change_id") for e in first["report"]]
    assert [e.get("quarantine_id") for e in second["report"]] == [e.get("quarantine_id") for e in first["report"]]
    assert await count(app_hub.hub, register_changes) == changes
    assert await count(app_hub.hub, quarantine) == held  # no copies of the bad rows
    assert await count(app_hub.hub, file_receipts) == 2  # every file received is on record

    # A different file repeating some RECORD_IDs: those rows are duplicates, the new one is recorded,
    # a corrected row (same RECORD_ID as a rejected one) is accepted now.
    lines = data.decode("utf-8-sig").split("\r\n")
    corrected = lines[6].replace("31/02/2025", "28/07/2025")
    third_file = "\r\n".join([lines[0], lines[1], lines[2], corrected,
                              "SW-1009,PLACEMENT,15/08/2025,,9991100032,,,,,,,,,,,,,"]).encode()
    third = (await send(app_hub, council, third_file)).json()
    assert statuses(third) == [("SW-1001", "duplicate"), ("SW-1002", "duplicate"), ("SW-1006", "accepted"),
                               ("SW-1009", "accepted")]
    assert third["report"][0]["change_id"] == first["report"][0]["change_id"]


async def test_fixed_width_export_with_header_and_trailer(app_hub, council):
    r = await send(app_hub, council, (FIXTURES / "bucks_nightly.txt").read_bytes(), "swift_fixed", "text/plain")
    assert r.status_code == 200, r.text
    body = r.json()
    assert statuses(body) == [
        ("MOS-2001", "accepted"), ("MOS-2002", "accepted"), ("MOS-2003", "accepted"), ("MOS-2004", "rejected"),
        ("MOS-2005", "rejected"), ("MOS-2006", "accepted"), ("MOS-2007", "accepted")]
    assert {e["field"] for e in body["report"][4]["errors"]} == {"row 5, column END_REASONS",
                                                                 "row 5, column PARTICIPANTS"}
    # The dispute's outcome (MOS-2006) stands once the other party, Worcestershire, records it too.
    _, worcs = await add_client(app_hub.hub.engine, "Worcs", "E10000034", "council", ["register:write"])
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": worcs}, json={
        "source_system": "Mosaic", "source_message_id": "or-77-worcs", "change_type": "dispute-resolved",
        "effective_date": "2025-08-01", "person": PERSON_C,
        "dispute": {"dispute_id": "OR-77", "kind": "council", "parties": ["E06000060", "E10000034"],
                    "resolved_responsible": "E06000060"}})
    assert r.status_code == 202, r.text
    async with app_hub.hub.engine.connect() as conn:
        kinds = [row.headers["event_type"] for row in (await conn.execute(select(bus_messages.c.headers))).all()]
    assert {"s117-dispute-raised", "s117-dispute-resolved", "s117-entitlement-ended"} <= set(kinds)


async def test_the_hubs_own_checks_are_named_in_the_files_columns(app_hub, council):
    data = ("RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO,LA_GSS,GP_ODS\n"
            "X-1,ADDR_CHANGE,01/06/2025,9991100016,E99999999,\n"  # well formed, not a council
            "X-2,REVIEW_DONE,01/06/2099,9991100016,,\n"  # in the future
            "X-3,GP_CHANGE,01/06/2025,9991100016,,Q99999\n").encode()  # not a practice
    body = (await send(app_hub, council, data)).json()
    assert [e["errors"] for e in body["report"]] == [
        [{"field": "row 1, column LA_GSS", "reason": "is not an English social services authority (GSS) code"}],
        [{"field": "row 2, column EFFECTIVE_DATE", "reason": "is in the future"}],
        [{"field": "row 3, column GP_ODS", "reason": "is not a GP practice in the ODS reference data"}]]


@pytest.mark.parametrize(("data", "fmt", "reason"), [
    (b"", "swift_csv", "the file is empty"),
    ("RECORD_ID,EVENT\n".encode("utf-16"), "swift_csv", "the file is UTF-16"),
    (b"RECORD_ID,EVENT,EFFECTIVE_DATE\n", "swift_csv", "the header has no NHS_NO column (required)"),
    (b"HS117REG1E0600006020250302\nT000000003\n", "swift_fixed", "trailer record: RECORD_COUNT says 3"),
    (b"HS117REG1E1000003420250302\nT000000000\n", "swift_fixed",
     "header record: COUNCIL_GSS is not the council of the sending client"),
])
async def test_file_level_problems_reject_the_whole_file(app_hub, council, data, fmt, reason):
    changes = await count(app_hub.hub, register_changes)
    r = await send(app_hub, council, data, fmt, "application/octet-stream")
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["type"].endswith("/invalid-council-file")
    assert problem["errors"][0]["field"] == "(file)" and problem["errors"][0]["reason"].startswith(reason)
    assert await count(app_hub.hub, register_changes) == changes
    receipt = (await app_hub.http.get(f"/v1/council-files/{problem['file_id']}", headers=council)).json()
    assert receipt["status"] == "rejected" and receipt["problems"] == problem["errors"]


async def test_who_may_send_what(app_hub, council):
    data = (FIXTURES / "bucks_nightly.csv").read_bytes()
    r = await app_hub.http.post("/v1/council-files?format=swift_csv", content=data)
    assert r.status_code == 401
    r = await send(app_hub, {"X-API-Key": app_hub.keys["trust"]}, data)
    assert r.status_code == 403 and "councils" in r.json()["detail"]
    r = await send(app_hub, {"X-API-Key": app_hub.keys["E06000060"]}, data)  # a council without register:write
    assert r.status_code == 403
    r = await send(app_hub, council, data, fmt="swift_xml")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "format"
    r = await send(app_hub, council, data, content_type="application/json")
    assert r.status_code == 415
    r = await send(app_hub, council, b"x" * (20 * 1024 * 1024 + 1))
    assert r.status_code == 413 and r.headers["content-type"].startswith("application/problem+json")
    assert await count(app_hub.hub, file_receipts) == 0


async def test_a_record_id_reused_for_another_change_is_a_row_error_and_nothing_is_recorded(app_hub, council):
    data = (FIXTURES / "bucks_nightly.csv").read_bytes()
    first = (await send(app_hub, council, data)).json()
    assert first["report"][0]["status"] == "accepted"
    changes = await count(app_hub.hub, register_changes)
    lines = data.decode("utf-8-sig").split("\r\n")
    record_id = lines[1].split(",")[0]
    fields = lines[1].split(",")
    fields[2] = "01/01/2025" if fields[2] != "01/01/2025" else "02/01/2025"  # another effective date
    changed = "\r\n".join([lines[0], ",".join(fields)]).encode()
    body = (await send(app_hub, council, changed)).json()
    row = body["report"][0]
    assert (row["record_id"], row["status"]) == (record_id, "rejected")
    assert row["errors"][0]["field"].endswith("column RECORD_ID")
    assert "already used" in row["errors"][0]["reason"]
    assert await count(app_hub.hub, register_changes) == changes


async def test_a_file_interrupted_by_a_restart_is_resumed_with_the_same_report(app_hub, council):
    from sqlalchemy import delete, update

    from hub.file_jobs import FileJobs
    from hub.store.schema import file_rows

    data = (FIXTURES / "bucks_nightly.csv").read_bytes()
    first = (await send(app_hub, council, data)).json()
    changes = await count(app_hub.hub, register_changes)
    # As if the hub had been killed after committing the first chunk (rows 1-3) while rows 4-8 were
    # being recorded: their changes and quarantine entries are in, their report entries are not.
    hub = app_hub.hub
    async with hub.engine.begin() as conn:
        await conn.execute(delete(file_rows).where(file_rows.c.file_id == first["file_id"], file_rows.c.row > 3))
        await conn.execute(update(file_receipts).where(file_receipts.c.file_id == first["file_id"]).values(
            status="processing", rows_done=3, accepted=3, rejected=0, content=hub.protector.encrypt(data)))
    progress = (await app_hub.http.get(f"/v1/council-files/{first['file_id']}", headers=council)).json()
    assert (progress["status"], progress["rows_done"], progress["rows"], progress["report"]) == (
        "processing", 3, 8, [])

    jobs = FileJobs(hub.engine, hub.ingest, hub.protector)  # the restarted hub
    await jobs.resume()
    await jobs.wait(first["file_id"])
    again = (await app_hub.http.get(f"/v1/council-files/{first['file_id']}", headers=council)).json()
    assert statuses(again) == statuses(first)  # SW-1008, recorded before the "crash", is still "accepted"
    assert [e.get("change_id") for e in again["report"]] == [e.get("change_id") for e in first["report"]]
    assert (again["status"], again["rows_done"], again["accepted"], again["rejected"]) == ("processed", 8, 4, 4)
    assert await count(app_hub.hub, register_changes) == changes  # nothing recorded twice
    async with hub.engine.connect() as conn:
        assert (await conn.execute(select(file_receipts.c.content)
                                   .where(file_receipts.c.file_id == first["file_id"]))).scalar_one() is None
