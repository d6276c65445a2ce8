"""A council's data officer uploads real exports to the hub running as a real process, over real HTTP
(review 30): a file with CR-only line ends (Excel for Mac) is recorded, a compressed upload is refused
naming what it is (a `Content-Encoding` with 415, a gzip body with 422), a CSV trailer's count is
checked (a wrong one refuses the file, nothing recorded), a row the CSV reader cannot split about
someone the council has no role for gets the access policy's row error and nothing of it is kept, and
the refusals name the header or field at fault."""

from __future__ import annotations

import gzip

import httpx
import pytest

from hub.clients import add_client
from hub.store.db import create_engine
from tests.e2e.conftest import make_clients
from tests.support import HubProcess, council_file_done, cut_off_uploads, put_on_register

pytestmark = pytest.mark.e2e

HDR = "RECORD_ID,EVENT,EFFECTIVE_DATE,NOTIFIED_DATE,NHS_NO,SURNAME,FORENAME,DOB,POSTCODE,LA_GSS,NFA,GP_ODS,REVIEW_REASON"
PERSON = {"nhs_number": "9991100016", "given_name": "Alex", "family_name": "Testpatient",
          "birth_date": "1971-03-14", "postcode": "HP20 1AA"}
NOT_THEIRS = "9991100024"  # a valid NHS number no one has put on the register


def row(rid: str, nhs: str = "9991100016") -> str:
    return f"{rid},REVIEW_DONE,01/07/2025,,{nhs},Testpatient,Alex,14/03/1971,HP20 1AA,,,,"


def csv_file(*rows: str, sep: str = "\n") -> bytes:
    return (sep.join([HDR, *rows]) + sep).encode()


async def test_real_exports_over_http(tmp_path, sharing_file):
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    _, council = await add_client(engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    await engine.dispose()
    await hub.start()
    headers = {"X-API-Key": council}
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            await put_on_register(http, keys["trust"], PERSON)

            async def post(body: bytes, **extra: str) -> httpx.Response:
                return await http.post("/v1/council-files", params={"format": "swift_csv"}, content=body,
                                       headers={**headers, "Content-Type": "text/csv", **extra})

            # CR-only line ends: every row recorded (before: 422 "the header row is not valid CSV").
            r = await council_file_done(http, await post(csv_file(row("MAC-1"), row("MAC-2"), sep="\r")), headers)
            assert r.status_code == 200, r.text
            done = r.json()
            assert (done["status"], done["rows"], done["accepted"]) == ("processed", 2, 2), done

            # A Content-Encoding the hub does not undo: 415 naming it (before: read as the file's text).
            r = await post(gzip.compress(csv_file(row("GZ-1"))), **{"Content-Encoding": "gzip"})
            assert r.status_code == 415, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert [e["field"] for e in r.json()["errors"]] == ["Content-Encoding"], r.text
            # A gzip file sent as the body: 422 saying so (before: "not UTF-8 text on line 1").
            r = await post(gzip.compress(csv_file(row("GZ-2"))))
            assert r.status_code == 422, r.text
            assert "gzip-compressed" in r.json()["errors"][0]["reason"]
            # A form upload: 415 naming Content-Type.
            r = await post(csv_file(row("FORM-1")), **{"Content-Type": "multipart/form-data; boundary=x"})
            assert r.status_code == 415, r.text
            assert r.json()["errors"][0]["field"] == "Content-Type"

            # A trailer whose count is wrong (the export cut short): refused whole, nothing recorded.
            r = await post(csv_file(row("TR-1"), row("TR-2"), "TRAILER,3"))
            assert r.status_code == 422, r.text
            assert r.json()["errors"] == [{"field": "(file)", "reason": "trailer row: TRAILER says 3 data rows; "
                                           "the file has 2: the file may be truncated or padded"}]
            # The right count: the trailer is checked, not reported as a row.
            r = await council_file_done(http, await post(csv_file(row("TR-1"), row("TR-2"), "TRAILER,2")), headers)
            done = r.json()
            assert (done["rows"], done["accepted"], done["rejected"]) == (2, 2, 0), done
            assert [e["record_id"] for e in done["report"]] == ["TR-1", "TR-2"]

            # A row with a field too many, about someone the council has no role for: the access policy's row
            # error, nothing kept (before: quarantined, the person's row held); one about its own person with
            # the same fault is quarantined, named by row.
            r = await council_file_done(http, await post(csv_file(row("FC-1", nhs=NOT_THEIRS) + ",x",
                                                                  row("FC-2") + ",x")), headers)
            done = r.json()
            first, second = done["report"]
            assert (first["status"], first.get("rule"), "quarantine_id" in first) == (
                "rejected", "no-relationship", False), first
            assert first["errors"][0]["field"] == "row 1, column NHS_NO"
            assert (second["status"], "quarantine_id" in second) == ("rejected", True), second
            assert second["errors"] == [{"field": "row 2", "reason": "has 14 fields; the header has 13"}]
            held = (await http.get("/v1/quarantine", headers=headers)).json()["items"]
            assert [q["quarantine_id"] for q in held] == [second["quarantine_id"]]

            # The same record twice in one file (an export's join): the copy is a duplicate of the first, with its
            # change id, nothing quarantined (before: rejected and quarantined though its record was accepted);
            # a RECORD_ID reused for another record in the same file is still rejected naming the first row.
            changed = row("DUP-1").replace("01/07/2025", "02/07/2025")
            r = await council_file_done(http, await post(csv_file(row("DUP-1"), row("DUP-2"), row("DUP-1"),
                                                                  changed)), headers)
            done = r.json()
            assert [e["status"] for e in done["report"]] == ["accepted", "accepted", "duplicate", "rejected"], done
            assert done["report"][2]["change_id"] == done["report"][0]["change_id"]
            assert done["report"][3]["errors"] == [{"field": "row 4, column RECORD_ID", "reason": "repeats the "
                                                    "RECORD_ID of row 1: each record needs its own id"}]
            assert (done["accepted"], done["duplicates"], done["rejected"]) == (2, 1, 1)
            held = (await http.get("/v1/quarantine", headers=headers)).json()["items"]
            assert sorted(q["source_message_id"] or "" for q in held) == ["", "DUP-1"]  # FC-2's, and row 4's

            # A file with no header row: one problem, quoting nothing of the person's row it starts with.
            r = await post((row("NH-1") + "\n").encode())
            assert r.status_code == 422, r.text
            assert [e["reason"] for e in r.json()["errors"]] == [
                "the first row names none of the layout's columns: the file has no header row, or names its "
                "columns otherwise (the header names the layout's columns, e.g. RECORD_ID, EVENT, NHS_NO)"]
            assert "9991100016" not in r.text and "Testpatient" not in r.text
        logs = hub.logs()
        for personal in ("9991100016", NOT_THEIRS, "Testpatient", "HP20 1AA"):
            assert personal not in logs
        assert "Traceback" not in logs
    finally:
        hub.stop()


async def test_an_upload_cut_off_mid_body_keeps_nothing_and_is_not_a_server_error(tmp_path, sharing_file):
    """The sending job killed half way (a declared length, or chunked): nothing stored, and the hub logs a
    408 for it, not an unhandled error and a 500 (which an operator's 5xx alert would page on)."""
    import asyncio
    import sqlite3

    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    _, council = await add_client(engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    await engine.dispose()
    await hub.start()
    try:
        body = csv_file(*(row(f"CUT-{i}") for i in range(2000)))
        await cut_off_uploads(hub.port, "/v1/council-files?format=swift_csv",
                              f"X-API-Key: {council}\r\nContent-Type: text/csv\r\n", body)
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            for _ in range(100):  # both requests logged
                if hub.logs().count('"path":"/v1/council-files"') >= 2:
                    break
                await asyncio.sleep(0.1)
            assert (await http.get("/v1/quarantine", headers={"X-API-Key": council})).json()["items"] == []
    finally:
        hub.stop()
    logs = [line for line in hub.logs().splitlines() if '"path":"/v1/council-files"' in line]
    assert len(logs) == 2 and all('"status_code":408' in line for line in logs), logs
    assert "ClientDisconnect" not in hub.logs() and "unhandled error" not in hub.logs()
    db = sqlite3.connect(str(tmp_path / "hub.db"))
    assert db.execute("select count(*) from file_receipts").fetchone() == (0,)
    db.close()
