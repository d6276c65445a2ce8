"""A council's full extract against the register, end to end: the hub as a
real process, the council's nightly job `s117hub send-snapshot` with seeded
differences -> drift report naming who must act -> the trust sends the
missing changes -> the next night's report shows them closed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import orjson
import pytest

import copy

import yaml

from hub.crypto import verify_webhook_request
from hub.fhir.drift import read_drift
from tests.e2e.conftest import SECRET, SHARING, make_clients, subscribe_webhook
from tests.support import REPO, HubProcess, Receiver, detention

pytestmark = pytest.mark.e2e

A, B, D = "9991100016", "9991100032", "9991100067"  # synthetic, 999 range



async def send_snapshot(base_url: str, key: str, path: Path) -> tuple[int, dict, str]:
    script = Path(sys.executable).parent / "s117hub"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "hub.cli"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, "send-snapshot", "--url", base_url, "--api-key", key, "--format", "swift_snapshot_csv",
        "--poll", "0.2", str(path), cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert out, err.decode()
    return proc.returncode, orjson.loads(out), err.decode()


async def test_council_extract_with_seeded_differences_is_reconciled_and_closed(tmp_path, sharing_file):
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            for nhs, run in ((A, "a"), (B, "b")):
                for change in detention(nhs, run):
                    r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
                    assert r.status_code == 202, r.text
            # The council's SWIFT extract: A agrees; B is missing from it; D, whom the trust never
            # reported, is flagged s117 on the council's side.
            extract = tmp_path / "bucks_s117_extract.csv"
            extract.write_text(
                "NHS_NO,LOCAL_ID,S117_FLAG,RESP_LA_GSS,RESP_ICB_ODS,S117_START,S117_END,NEXT_REVIEW,FUNDING\n"
                f"{A},SW-A,Y,E06000060,QU9,07/04/2025,,,Y\n"
                f"{D},SW-D,Y,E06000060,QU9,,,,Y\n"
                "TRAILER,2\n")
            code, report, progress = await send_snapshot(hub.base_url, keys["E06000060"], extract)
            assert code == 3 and report["state"] == "done", report
            assert "persons [" in progress  # the progress bar was shown
            kinds = {(i["local_id"], i["kind"]): i for i in report["items"]}
            assert set(kinds) >= {(None, "missing-on-body-list"), ("SW-D", "missing-on-hub-register")}
            assert kinds[("SW-D", "missing-on-hub-register")]["who_must_act"] == "trust"
            assert D not in orjson.dumps(report).decode() and A not in orjson.dumps(report).decode()

            # The trust sends D's detention; the council adds B to its list for the next night.
            for change in detention(D, "d"):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
                assert r.status_code == 202, r.text
            item = kinds[("SW-D", "missing-on-hub-register")]
            for _ in range(100):  # the hub's watcher closes the item when the change arrives
                r = await http.get(f"/v1/reconciliations/{report['snapshot_id']}",
                                   headers={"X-API-Key": keys["E06000060"]})
                now = {i["item_id"]: i for i in r.json()["items"]}
                if now[item["item_id"]]["state"] == "fixed":
                    break
                await asyncio.sleep(0.1)
            assert (now[item["item_id"]]["state"], now[item["item_id"]]["fixed_by"]) == ("fixed", "change")

            extract.write_text(
                "NHS_NO,LOCAL_ID,S117_FLAG,RESP_LA_GSS,RESP_ICB_ODS,S117_START,S117_END,NEXT_REVIEW,FUNDING\n"
                f"{A},SW-A,Y,E06000060,QU9,07/04/2025,,,Y\n"
                f"{B},SW-B,Y,E06000060,QU9,07/04/2025,,,Y\n"
                f"{D},SW-D,Y,E06000060,QU9,07/04/2025,,,Y\n"
                "TRAILER,3\n")
            code, night2, _ = await send_snapshot(hub.base_url, keys["E06000060"], extract)
            assert night2["state"] == "done"
            live = {(i["local_id"], i["kind"]) for i in night2["items"] if i["state"] in ("open", "explained")}
            assert (None, "missing-on-body-list") not in live and ("SW-D", "missing-on-hub-register") not in live
            fixed = {i["item_id"] for i in night2["items"] if i["state"] == "fixed"}
            assert kinds[(None, "missing-on-body-list")]["item_id"] in fixed
        log = hub.log_path.read_text()
        assert all(n not in log for n in (A, B, D))
    finally:
        hub.stop()


async def test_drift_past_the_agreed_threshold_reaches_the_councils_webhook_signed_with_counts_only(tmp_path):
    """An agreement with a drift threshold (3 open differences); the council's nightly extract with
    seeded differences past it -> its webhook receiver (real HTTP) gets one signed
    s117-reconciliation-drift message with the counts and no NHS number; the next night's extract,
    the same crossing, sends nothing more."""
    doc = copy.deepcopy(SHARING)
    bucks = doc["agreements"][0]["recipients"][0]
    bucks["events"] = [*bucks["events"], "s117-reconciliation-drift"]
    bucks["reconciliation"] = {"drift_alert_open_items": 3}
    sharing_path = tmp_path / "sharing.yaml"
    sharing_path.write_text(yaml.safe_dump(doc))
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing_path)
    keys = await make_clients(hub.db_url)
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            await subscribe_webhook(http, keys, receiver)
            for change in detention(A, "a"):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
                assert r.status_code == 202, r.text
            await receiver.wait_for(lambda: len(receiver.received) >= 2)  # A's detention and entitlement
            told = len(receiver.received)
            # The council's extract: A is missing from it (1), and three people the trust never reported (3).
            unknown = ["9991100067", "9991100075", "9991100083"]
            extract = tmp_path / "bucks_s117_extract.csv"
            extract.write_text(
                "NHS_NO,LOCAL_ID,S117_FLAG,RESP_LA_GSS,RESP_ICB_ODS,S117_START,S117_END,NEXT_REVIEW,FUNDING\n"
                + "".join(f"{n},SW-{n[-3:]},Y,E06000060,QU9,,,,Y\n" for n in unknown)
                + "TRAILER,3\n")
            code, report, _ = await send_snapshot(hub.base_url, keys["E06000060"], extract)
            assert report["state"] == "done" and report["summary"]["open"] == 4, report
            await receiver.wait_for(lambda: any(
                r.headers.get("s117-event-type") == "s117-reconciliation-drift" for r in receiver.received))
            drift = [r for r in receiver.received if r.headers["s117-event-type"] == "s117-reconciliation-drift"]
            assert len(drift) == 1
            got = drift[0]
            assert got.signature_ok and verify_webhook_request(SECRET, got.headers, got.body)
            # One sequence with the council's other messages: numbered on from A's, no gaps.
            numbers = [int(r.headers["s117-event-number"]) for r in receiver.received]
            assert sorted(numbers) == list(range(1, len(numbers) + 1))
            assert int(got.headers["s117-event-number"]) > told
            message = orjson.loads(got.body)
            counts = read_drift(message)
            assert (counts["snapshot_id"], counts["body"], counts["open"], counts["listed"]) == (
                report["snapshot_id"], "E06000060", 4, 3)
            assert (counts["by_kind"]["missing-on-hub-register"], counts["by_kind"]["missing-on-body-list"]) == (3, 1)
            assert counts["threshold"] == {"openItems": 3}
            assert counts["report"].endswith(f"/v1/reconciliations/{report['snapshot_id']}")
            body = got.body.decode()
            assert not any(n in body for n in (A, *unknown)) and '"Patient"' not in body

            # The next night, the same list: the same crossing, nothing more is sent.
            code, night2, _ = await send_snapshot(hub.base_url, keys["E06000060"], extract)
            assert night2["state"] == "done"
            await asyncio.sleep(1.0)
            assert sum(r.headers["s117-event-type"] == "s117-reconciliation-drift" for r in receiver.received) == 1
        log = hub.log_path.read_text()
        assert all(n not in log for n in (A, *unknown))
    finally:
        hub.stop()
        await receiver.stop()
