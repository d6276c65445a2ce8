"""A council's nightly job sends its SWIFT export with `s117hub send-file` to
the hub running as a real process: per-row report, good rows recorded, bad
rows quarantined, a re-send changes nothing, and the council's webhook gets the
signed FHIR messages the file's changes caused."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from hub.clients import add_client
from hub.fhir.messages import read_position
from hub.fhir.validate import validate_message
from hub.store.db import create_engine
from tests.e2e.conftest import SECRET, make_clients
from tests.support import HubProcess, Receiver, REPO, assert_nothing_personal, put_on_register

pytestmark = pytest.mark.e2e

CSV = REPO / "tests" / "fixtures" / "council_files" / "bucks_nightly.csv"
PERSON = {"nhs_number": "9991100016", "given_name": "Alex", "family_name": "Testpatient",
          "birth_date": "1971-03-14", "postcode": "HP20 1AA"}


def event_code(body: bytes) -> str:
    return orjson.loads(body)["entry"][0]["resource"]["eventCoding"]["code"]


async def send_file(base_url: str, key: str, path: Path) -> tuple[int, dict, str]:
    script = Path(sys.executable).parent / "s117hub"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "hub.cli"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, "send-file", "--url", base_url, "--api-key", key, "--format", "swift_csv", str(path),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert out, err.decode()
    return proc.returncode, orjson.loads(out), err.decode()


async def test_council_file_sent_by_the_cli_reaches_the_register_and_the_councils(tmp_path, sharing_file):
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    _, council_key = await add_client(engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    await engine.dispose()
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            for org in ("E06000060", "E10000034"):
                r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys[org]},
                                    json={"url": receiver.url(org), "secret": SECRET})
                assert r.status_code == 201, r.text
            # The trust puts the person on the register first: a qualifying detention, then leaving hospital.
            await put_on_register(http, keys["trust"], PERSON)
            base = {"source_system": "RiO", "person": PERSON}

            # The hub answers 202 once the file is stored; the CLI shows a progress bar while the rows
            # are recorded in the background, then prints the report.
            code, report, progress = await send_file(hub.base_url, council_key, CSV)
            assert code == 3  # some rows rejected: the nightly job's signal to look
            assert "8/8 rows" in progress
            assert (report["status"], report["rows_done"], report["rows"]) == ("processed", 8, 8)
            assert [(e["record_id"], e["status"]) for e in report["report"]] == [
                ("SW-1001", "accepted"), ("SW-1002", "accepted"), ("SW-1003", "accepted"),
                ("SW-1004", "rejected"), ("SW-1005", "rejected"), ("SW-1006", "rejected"),
                ("SW-1007", "rejected"), ("SW-1008", "accepted")]
            accepted = {e["change_id"] for e in report["report"] if e["status"] == "accepted"}

            held = (await http.get("/v1/quarantine", headers={"X-API-Key": council_key})).json()["items"]
            # SW-1007 is about someone not on the register, SW-1004 claims a detention (a trust's change):
            # refused by the access policy, nothing kept.
            assert sorted((q["source_message_id"], q["channel"]) for q in held) == [
                ("SW-1005", "file"), ("SW-1006", "file")]
            assert {q["quarantine_id"] for q in held} == {
                e["quarantine_id"] for e in report["report"] if e["status"] == "rejected" and "quarantine_id" in e}

            # Sent again (the job was not sure it got through): nothing new is recorded or quarantined.
            code, again, _ = await send_file(hub.base_url, council_key, CSV)
            assert again["duplicate"] is True
            assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, 4, 4)
            assert {e["change_id"] for e in again["report"] if e["status"] == "duplicate"} == accepted
            assert len((await http.get("/v1/quarantine", headers={"X-API-Key": council_key})).json()["items"]) == 2
            summary = (await http.get(f"/v1/council-files/{report['file_id']}",
                                      headers={"X-API-Key": council_key})).json()
            assert (summary["status"], summary["accepted"], summary["rejected"]) == ("processed", 4, 4)

            # The file's S117_END is the council's own agreement; the trust providing care (acting for the
            # NHS commissioner) records its part, and the joint decision takes effect.
            r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json={
                **base, "source_message_id": "t-3", "change_type": "s117-discharge-decided",
                "effective_date": "2025-09-01", "discharge": {
                    "council_agrees": True, "commissioner_agrees": True, "reasons": ["no-longer-needs-services"],
                    "participants": ["care coordinator", "AMHP", "consultant psychiatrist"],
                    "person_involved": True}})
            assert r.status_code == 202, r.text

            # The council (responsible) hears of the review due and the end of entitlement; Worcestershire
            # (host area after the move) hears of the move.
            def codes(org: str) -> list[str]:
                return [event_code(r.body) for r in receiver.received if r.org == org]

            def worcs_latest() -> dict | None:
                told = [read_position(orjson.loads(r.body)) for r in receiver.received if r.org == "E10000034"]
                return max(told, key=lambda p: p.version).view if told else None

            await receiver.wait_for(lambda: {"s117-review-due", "s117-entitlement-ended"} <= set(codes("E06000060"))
                                    and "s117-moved-out-of-area" in codes("E10000034")
                                    and (worcs_latest() or {}).get("roles") == [])
            assert all(r.signature_ok for r in receiver.received)
            ended = next(r for r in receiver.received
                         if r.org == "E06000060" and event_code(r.body) == "s117-entitlement-ended")
            validate_message(orjson.loads(ended.body))
            assert PERSON["nhs_number"] in ended.body.decode()  # Bucks' agreement includes identity
            # Worcestershire hears of the move; when the file's later rows have ended the aftercare
            # before the move was dispatched, or after, it may also hear it is no longer involved
            # (a correction: UK GDPR Art. 19). Whichever way, the highest version it holds is the truth.
            worcs = [r for r in receiver.received if r.org == "E10000034"]
            assert codes("E10000034")[0] == "s117-moved-out-of-area"
            assert set(codes("E10000034")) <= {"s117-moved-out-of-area", "s117-notification-corrected"}
            latest = max((read_position(orjson.loads(r.body)) for r in worcs), key=lambda p: p.version)
            assert latest.view["roles"] == []  # the file ends the aftercare: no longer host to anyone entitled
    finally:
        hub.stop()
        await receiver.stop()

    logs = hub.logs()
    assert "council file processed" in logs and "council file answered from its first receipt" in logs
    assert_nothing_personal(logs, "9991100016", "9991100017", "9991100024", "Testpatient", "Example", "1971-03-14",
                            "WR1 2AA")
