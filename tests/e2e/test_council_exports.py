"""Council files out, end to end: the hub as a real process; a council
subscribes to a daily council-file; changes flow for a day; the file appears
with a valid manifest (checked as `sha256sum -c` would), the council
acknowledges it by moving it to ack/; the next day's file starts where the
last ended with no event lost or repeated; `s117hub export` builds a full
extract by hand with a progress bar."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from adapters.council_files.outbound import OUT_LAYOUTS, read_export
from hub.clients import add_client
from hub.store.db import create_engine
from tests.e2e.conftest import make_clients
from tests.support import REPO, HubProcess, detention

pytestmark = pytest.mark.e2e
NHS = ["9991100016", "9991100032", "9991100059"]



def check_manifest(path: Path) -> None:
    digest, name = path.with_name(path.name + ".sha256").read_text().split()
    data = path.read_bytes()
    assert name == path.name and digest == hashlib.sha256(data[:data.rindex(b"SHA256,")]).hexdigest()


async def wait_file(http: httpx.AsyncClient, key: str, export_id: str) -> dict:
    for _ in range(200):
        r = await http.get(f"/v1/exports/{export_id}/status", headers={"X-API-Key": key})
        if r.json()["state"] == "ready":
            return r.json()
        await asyncio.sleep(0.05)
    raise AssertionError(r.text)


async def delivered_all(http: httpx.AsyncClient, key: str, sub_id: str, n: int) -> list[dict]:
    for _ in range(200):
        items = (await http.get(f"/v1/subscriptions/{sub_id}/deliveries", headers={"X-API-Key": key})).json()["items"]
        if len(items) >= n:
            return items
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(items)} of {n} events queued")


async def test_daily_council_file_delivered_acknowledged_and_continued(tmp_path, sharing_file):
    exports = tmp_path / "exports"
    hub = HubProcess(tmp_path, sharing_path=sharing_file, S117_EXPORT_DIR=str(exports))
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    _, admin = await add_client(engine, "Operator", "HUB", "hub-operator", ["hub:admin"])
    await engine.dispose()
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            council = {"X-API-Key": keys["E06000060"]}
            r = await http.post("/v1/subscriptions", headers=council,
                                json={"channel": "council-file", "layout": "swift_csv", "schedule": "daily 02:00"})
            assert r.status_code == 201, r.text
            sub = r.json()["subscription_id"]
            for nhs, run in zip(NHS[:2], "ab"):
                for change in detention(nhs, run):
                    r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
                    assert r.status_code == 202, r.text
            queued = await delivered_all(http, keys["E06000060"], sub, 6)
            # The day's run (the operator's "run now" stands in for 02:00).
            r = await http.post(f"/v1/ops/subscriptions/{sub}/council-file/run", headers={"X-API-Key": admin})
            assert r.status_code == 202, r.text
            day1 = await wait_file(http, keys["E06000060"], r.json()["export_id"])
            path1 = exports / "E06000060" / "outbound" / day1["file_name"]
            check_manifest(path1)
            rows1 = read_export(path1.read_bytes(), OUT_LAYOUTS["swift_csv"])
            assert sorted(r["EVENT_ID"] for r in rows1) == sorted(q["event_id"] for q in queued)
            # Acknowledged by moving it to ack/, as an SFTP job would.
            (path1.parent / "ack").mkdir()
            path1.rename(path1.parent / "ack" / path1.name)
            for _ in range(100):
                state = (await http.get(f"/v1/exports/{day1['export_id']}/status", headers=council)).json()
                if state["state"] == "acknowledged":
                    break
                await asyncio.sleep(0.1)
            assert (state["state"], state["ack_via"]) == ("acknowledged", "folder")

            for change in detention(NHS[2], "c"):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
                assert r.status_code == 202, r.text
            queued = await delivered_all(http, keys["E06000060"], sub, 9)
            r = await http.post(f"/v1/ops/subscriptions/{sub}/council-file/run", headers={"X-API-Key": admin})
            day2 = await wait_file(http, keys["E06000060"], r.json()["export_id"])
            path2 = exports / "E06000060" / "outbound" / day2["file_name"]
            check_manifest(path2)
            rows2 = read_export(path2.read_bytes(), OUT_LAYOUTS["swift_csv"])
            numbers = [int(r["EVENT_NO"]) for r in rows1 + rows2]
            assert numbers == list(range(1, len(queued) + 1))  # gap-free across the two files
            assert sorted(r["EVENT_ID"] for r in rows1 + rows2) == sorted(q["event_id"] for q in queued)
            r = await http.get("/v1/ops/exports", headers={"X-API-Key": admin})
            assert [e["export_id"] for e in r.json()["items"]] == [day2["export_id"]]

        # A full extract by hand, with a progress bar, beside the running hub.
        script = Path(sys.executable).parent / "s117hub"
        cmd = [str(script)] if script.exists() else [sys.executable, "-m", "hub.cli"]
        proc = await asyncio.create_subprocess_exec(
            *cmd, "export", "--org", "E06000060", cwd=REPO, env={**os.environ, **{
                k: v for k, v in hub.env.items() if k.startswith("S117_")}},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        full = orjson.loads(out)
        assert "3/3 people" in err.decode()
        assert (full["mode"], full["record_count"], full["state"]) == ("full", 3, "ready")
        check_manifest(Path(full["path"]))
        log = hub.log_path.read_text()
        assert all(n not in log for n in NHS)
    finally:
        hub.stop()
