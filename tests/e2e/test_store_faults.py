"""The store's disk fails under a running hub (`s117hub serve`, its three processes, real sockets):
every change sent meanwhile, over REST and MLLP, is answered at once naming the cause (a `503`
problem `store-unavailable` with `Retry-After`; an HL7 `AE` naming it), never a bare `500`, never a
dropped connection, nothing personal in the answer; what was acknowledged before stays, the store
is whole, and once the disk takes writes again the hub records and delivers without a restart.

Two ways to fail the disk:
- `fsize`: RLIMIT_FSIZE lowered on the hub's running processes (`prlimit`, as their own user may),
  so every write past the limit fails with EFBIG (SQLite: a disk I/O error). No root, no mount: it
  runs everywhere, CI included.
- `enospc`: the store on an 8 MB tmpfs, filled (ENOSPC, SQLite: "database or disk is full"), as a
  real disk fills. It needs root and `mount`, and skips, saying so, without them."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import sqlite3
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import SECRET, make_clients, subscribe_webhook
from tests.e2e.test_mllp import Engine, fixture, msa, nhs_numbers
from tests.support import HubProcess, Receiver, detention, free_port

pytestmark = pytest.mark.e2e

CAUSES = {"fsize": "could not be written", "enospc": "no space left on its disk"}


@asynccontextmanager
async def disk_fails(kind: str, hub: HubProcess) -> AsyncIterator[None]:
    """The hub's store cannot be written inside the block; it can again after."""
    if kind == "fsize":
        pids = [hub.proc.pid, *hub.workers().values()]
        assert len(pids) == 3, "the front and its two worker processes"
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        for pid in pids:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (4096, hard))
        try:
            yield
        finally:
            for pid in pids:
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
    else:
        filler = hub.tmp / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)
        try:
            yield
        finally:
            filler.unlink()


@pytest.fixture
def store_dir(request, tmp_path: Path) -> Iterator[Path]:
    """Where the store lives: the test's directory, or (enospc) an 8 MB tmpfs mounted on it."""
    if request.param == "fsize":
        yield tmp_path
        return
    if os.geteuid() != 0:
        pytest.skip("enospc needs root to mount a tmpfs (the fsize variant runs without)")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("enospc: mount -t tmpfs is not available here (the fsize variant runs without)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("store_dir", ["fsize", "enospc"], indirect=True)
async def test_a_store_that_cannot_be_written_is_named_and_nothing_acknowledged_is_lost(store_dir, tmp_path,
                                                                                       sharing_file):
    kind = "fsize" if store_dir == tmp_path else "enospc"
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    mllp_port = free_port()
    hub = HubProcess(store_dir, sharing_path=sharing_file, own_group=True, S117_MLLP_PORT=str(mllp_port))
    hub.log_path = tmp_path / "hub.log"  # not on the failing disk: the test reads it
    keys = await make_clients(hub.db_url)
    await hub.start()
    nhs, run = nhs_numbers(), uuid.uuid4().hex[:6]
    trust = {"X-API-Key": keys["trust"]}
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            sub = await subscribe_webhook(http, keys, receiver)
            accepted = []
            for c in detention(nhs[0], f"{run}-before"):
                r = await http.post("/v1/register-changes", headers=trust, json=c)
                assert r.status_code == 202, r.text
                accepted.append(r.json()["change_id"])

            async with disk_fails(kind, hub):
                # One kept-alive connection: each answer is a named 503, none a dropped connection.
                for i in (1, 2):
                    for c in detention(nhs[i], f"{run}-{i}"):
                        started = time.monotonic()
                        r = await http.post("/v1/register-changes", headers=trust, json=c)
                        assert time.monotonic() - started < 5
                        assert r.status_code == 503, r.text
                        assert r.headers["content-type"].startswith("application/problem+json")
                        assert r.headers["retry-after"] == "30"
                        problem = r.json()
                        assert problem["type"].endswith("/store-unavailable")
                        assert CAUSES[kind] in problem["detail"], problem
                        assert problem["errors"][0]["field"] == "(store)"
                        assert nhs[i] not in r.text
                async with Engine(mllp_port) as engine:
                    for i in (3, 4):
                        ack = await engine.send(fixture("ADT_A01_s3_detained.hl7", nhs[i], f"{run}-M{i}"))
                        assert msa(ack)[1:3] == ["AE", f"{run}-M{i}"], ack
                        assert CAUSES[kind] in msa(ack)[3] and "ERR|MSH^1^^207&" in ack, ack
                        assert nhs[i] not in ack

            # The disk takes writes again: the same requests are recorded, no restart.
            await asyncio.sleep(0.2)
            for i in (1, 2):
                for c in detention(nhs[i], f"{run}-{i}"):
                    r = await http.post("/v1/register-changes", headers=trust, json=c)
                    assert r.status_code == 202, r.text
                    accepted.append(r.json()["change_id"])
            async with Engine(mllp_port) as engine:
                ack = await engine.send(fixture("ADT_A01_s3_detained.hl7", nhs[3], f"{run}-M3"))
                assert msa(ack)[1] == "AA", ack
            for n in nhs[:4]:
                r = await http.post("/v1/persons/lookup", headers=trust, json={"nhs_number": n})
                assert r.status_code == 200, (n, r.text)  # the one acknowledged before, and those after

            # Every change acknowledged reaches the council once (by event id), in order.
            council = {"X-API-Key": keys["E06000060"]}
            deadline = time.monotonic() + 20
            while True:
                log = (await http.get(f"/v1/subscriptions/{sub}/deliveries?limit=1000", headers=council)).json()["items"]
                routed = [d["event_id"] for d in log]
                if len(log) >= 3 and all(d["status"] == "delivered" for d in log) \
                        and set(receiver.event_ids()) == set(routed):
                    break
                assert time.monotonic() < deadline, f"not delivered: {[d['status'] for d in log]}"
                await asyncio.sleep(0.1)
            got = receiver.event_ids()
            assert len(got) == len(set(got)) == len(routed)
            number = {d["event_id"]: d["event_number"] for d in log}
            assert [number[e] for e in got] == sorted(number[e] for e in got)
    finally:
        hub.stop()
        await receiver.stop()

    with sqlite3.connect(store_dir / "hub.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        recorded = {row[0] for row in db.execute("SELECT change_id FROM register_changes")}
    assert set(accepted) <= recorded and len(recorded) == len(accepted) + 1  # and the one MLLP A01
    logs = hub.logs()
    assert not re.search(r"(?<!\d)\d{10}(?!\d)", logs), "a ten-digit run (an NHS number?) reached the logs"
    if kind == "enospc":  # the log is elsewhere: the store's fault is logged by its kind
        assert '"error_kind":"full"' in logs

