"""Readiness follows whether the store takes writes (`s117hub serve`, its three processes, real
sockets, its SQLite store).

Reproduced before: with the store unable to take a write (RLIMIT_FSIZE lowered on the hub's
processes, as tests/e2e/test_store_faults.py does: every write fails with EFBIG, SQLite's disk I/O
error), every change was answered `503 store-unavailable`, yet `GET /health/ready` kept answering
200, so a load balancer kept sending. Now the first write that fails for a store fault makes
readiness 503 naming the `store_writes` check and the cause (never what was written), liveness
stays 200 (a supervisor must not restart a hub for a full disk), and once the store takes writes
again a probe write (every few seconds, only while unwritable) makes it ready without a restart."""

from __future__ import annotations

import asyncio
import resource
import re
import sqlite3
import time
import uuid

import httpx
import pytest

from tests.e2e.conftest import make_clients
from tests.e2e.test_mllp import nhs_numbers
from tests.support import HubProcess, detention

pytestmark = pytest.mark.e2e


async def _metric(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get("/metrics")).text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"{name} not on /metrics"
    return float(found.group(1))


def _probes(hub: HubProcess) -> int:
    with sqlite3.connect(hub.tmp / "hub.db") as db:
        return db.execute("SELECT count(*) FROM store_write_probe").fetchone()[0]


async def test_readiness_says_not_ready_while_the_store_cannot_be_written_and_ready_again_after(tmp_path,
                                                                                              sharing_file):
    hub = HubProcess(tmp_path, sharing_path=sharing_file, own_group=True)
    keys = await make_clients(hub.db_url)
    await hub.start()
    nhs, run = nhs_numbers(), uuid.uuid4().hex[:6]
    trust = {"X-API-Key": keys["trust"]}
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            for _ in range(5):
                assert (await http.get("/health/ready")).status_code == 200
            assert _probes(hub) == 0  # a readiness probe writes nothing while writes succeed

            pids = [hub.proc.pid, *hub.workers().values()]
            assert len(pids) == 3, "the front and its two worker processes"
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            for pid in pids:
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (4096, hard))
            try:
                change = detention(nhs[0], run)[0]
                r = await http.post("/v1/register-changes", headers=trust, json=change)
                assert r.status_code == 503 and r.json()["type"].endswith("/store-unavailable"), r.text

                r = await http.get("/health/ready")
                assert r.status_code == 503, r.text
                body = r.json()
                assert body["status"] == "not-ready"
                assert body["checks"]["store"] == "ok"  # it answers reads: the writes are what fail
                assert body["checks"]["store_writes"].startswith("io: ")
                assert "could not be written" in body["checks"]["store_writes"]
                assert nhs[0] not in r.text
                assert (await http.get("/health")).status_code == 200  # liveness unchanged
                assert await _metric(http, "s117_store_writable") == 0

                # Probes meanwhile (every 2 s) fail too: still not ready.
                await asyncio.sleep(4.5)
                r = await http.get("/health/ready")
                assert r.status_code == 503 and r.json()["checks"]["store_writes"].startswith("io: "), r.text
            finally:
                for pid in pids:
                    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))

            # The disk takes writes again: ready within a probe's interval, no request needed, no restart.
            started, deadline = time.monotonic(), time.monotonic() + 15
            while (r := await http.get("/health/ready")).status_code != 200:
                assert time.monotonic() < deadline, r.text
                await asyncio.sleep(0.2)
            assert r.json()["checks"]["store_writes"] == "ok"
            assert time.monotonic() - started < 8  # a probe every 2 s (a loaded machine: some slack)
            assert await _metric(http, "s117_store_writable") == 1
            r = await http.post("/v1/register-changes", headers=trust, json=change)
            assert r.status_code == 202, r.text
            assert _probes(hub) == 1  # the probe row, rewritten while unwritable
    finally:
        hub.stop()
    logs = hub.logs()  # (the lines of the failure itself are lost: the log is a file under the same limit)
    assert '"error_kind":"io","event":"store writable again: ready"' in logs
    assert not re.search(r"(?<!\d)\d{10}(?!\d)", logs), "a ten-digit run (an NHS number?) reached the logs"
