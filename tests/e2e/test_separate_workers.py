"""`S117_SEPARATE_WORKERS=true`: the background workers run in a second
process, supervised by the hub's front process (hub/worker_process.py).
Real processes, a real webhook receiver: changes are delivered; a crashed
worker process is restarted and delivery carries on; stopping the hub stops
it; and a SIGKILLed front leaves no worker process behind."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from hub.sample_data import detention_to_move_scenario
from tests.e2e.conftest import SECRET, make_clients
from tests.support import HubProcess, Receiver

pytestmark = pytest.mark.e2e


def _worker_pids(front_pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{front_pid}/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return [p for p in pids if b"workers" in Path(f"/proc/{p}/cmdline").read_bytes()]


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited


async def _until(check, timeout: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _push(http: httpx.AsyncClient, key: str, people: int, seed: int) -> set[str]:
    rng, queued = random.Random(seed), set()
    for i in range(people):
        for change in detention_to_move_scenario(rng, f"sep-{seed}-{i}", date(2025, 2, 3) + timedelta(days=i)):
            r = await http.post("/v1/register-changes", headers={"X-API-Key": key}, json=change)
            assert r.status_code == 202, r.text
            queued |= {e["event_id"] for e in r.json()["events"] if e["event_type"] == "s117-entitlement-started"}
    return queued


async def test_workers_in_their_own_process_deliver_restart_and_stop_with_the_hub(tmp_path, sharing_file) -> None:
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing_file, S117_SEPARATE_WORKERS="true")
    keys = await make_clients(hub.db_url)
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys["E06000060"]},
                                json={"url": receiver.url("E06000060"), "secret": SECRET})
            assert r.status_code == 201

            async def ready() -> dict | None:
                got = await http.get("/health/ready")
                return got.json() if got.status_code == 200 else None

            body = await _until(ready, 20, "the worker process")
            assert body["checks"]["worker_process"] == "ok"
            [first] = _worker_pids(hub.proc.pid)
            # The front has no dispatcher of its own: what reaches the receiver was sent by the worker process.
            expected = await _push(http, keys["trust"], people=3, seed=11)
            assert len(expected) == 3

            async def delivered() -> bool:
                return expected <= set(receiver.event_ids("E06000060"))

            await _until(delivered, 20, "deliveries from the worker process")

            os.kill(first, signal.SIGKILL)  # the worker process crashes

            async def restarted() -> list[int] | None:
                pids = [p for p in _worker_pids(hub.proc.pid) if p != first and not _gone(p)]
                return pids or None

            [second] = await _until(restarted, 20, "a new worker process")
            assert "worker process exited; restarting" in hub.logs()
            more = await _push(http, keys["trust"], people=1, seed=12)

            async def delivered_again() -> bool:
                return more <= set(receiver.event_ids("E06000060"))

            await _until(delivered_again, 20, "deliveries after the restart")
            assert (await _until(ready, 20, "ready again"))["checks"]["worker_process"] == "ok"
        hub.stop()  # SIGTERM: the front stops its worker process first
        assert _gone(second)
    finally:
        hub.stop()
        await receiver.stop()
    got = receiver.event_ids("E06000060")
    assert len(got) >= len(expected | more)


async def test_a_killed_front_leaves_no_worker_process(tmp_path, sharing_file) -> None:
    hub = HubProcess(tmp_path, sharing_path=sharing_file, S117_SEPARATE_WORKERS="true")
    await make_clients(hub.db_url)
    await hub.start()
    try:
        async def spawned() -> list[int] | None:
            return _worker_pids(hub.proc.pid) or None

        [worker] = await _until(spawned, 20, "the worker process")
        hub.kill()  # SIGKILL: the front cannot stop it

        async def exited() -> bool:
            return _gone(worker)

        await _until(exited, 10, "the orphaned worker process to stop")
    finally:
        hub.stop()
