"""`S117_SEPARATE_WORKERS=true`: the background workers run in a second
process, supervised by the hub's front process (hub/worker_process.py).
Real processes, a real webhook receiver: changes are delivered; a crashed
worker process is restarted and delivery carries on; stopping the hub stops
it; and a SIGKILLed front leaves no worker process behind."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from hub.sample_data import detention_to_move_scenario
from tests.e2e.conftest import SECRET, make_clients, subscribe_webhook
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


async def _ready(http: httpx.AsyncClient) -> dict | None:
    got = await http.get("/health/ready")
    return got.json() if got.status_code == 200 else None


async def _subscribe_and_wait_ready(http: httpx.AsyncClient, keys: dict, receiver: Receiver, what: str) -> dict:
    """The council's webhook subscribed; `/health/ready`'s body once the worker process(es) are up."""
    await subscribe_webhook(http, keys, receiver)
    return await _until(lambda: _ready(http), 20, what)


async def _metrics(http: httpx.AsyncClient) -> dict[tuple[str, tuple], float]:
    """The front's /metrics: each sample's value by its name and labels (the worker processes' included)."""
    from prometheus_client.parser import text_string_to_metric_families

    got = await http.get("/metrics")
    assert got.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(got.text) for s in family.samples}


def _total(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


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
            body = await _subscribe_and_wait_ready(http, keys, receiver, "the worker process")
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
            # The shipped datasets are older than the setting allows: each said once, by the front, not again
            # by each worker process it started (three starts here).
            old = [line for line in hub.logs().splitlines() if "reference data older" in line]
            named = [json.loads(line)["dataset"] for line in old]
            assert named and len(named) == len(set(named)), named
            more = await _push(http, keys["trust"], people=1, seed=12)

            async def delivered_again() -> bool:
                return more <= set(receiver.event_ids("E06000060"))

            await _until(delivered_again, 20, "deliveries after the restart")
            assert (await _until(lambda: _ready(http), 20, "ready again"))["checks"]["worker_process"] == "ok"
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


def _role(pid: int) -> str | None:
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if item.startswith(b"S117_WORKER_ROLE="):
            return item.split(b"=", 1)[1].decode()
    return None


async def test_deliverers_in_a_third_process_are_woken_at_once_and_restarted(tmp_path, sharing_file) -> None:
    """`S117_SEPARATE_DELIVERY=true`: the deliverers in a process of their
    own. With a 30 s poll, a delivery within seconds can only come from the
    dispatcher's wake-up over the socket (hub/delivery/wake.py); a killed
    delivery process is restarted and finds what was queued meanwhile; and
    the three processes' log lines, sharing one stream, stay whole."""
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing_file, S117_SEPARATE_WORKERS="true",
                     S117_SEPARATE_DELIVERY="true", S117_WORKER_POLL_SECONDS="30")
    keys = await make_clients(hub.db_url)
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            body = await _subscribe_and_wait_ready(http, keys, receiver, "the worker processes")
            assert body["checks"]["worker_process"] == "ok" and body["checks"]["delivery_process"] == "ok"

            async def both() -> dict[str, int] | None:
                roles = {_role(p): p for p in _worker_pids(hub.proc.pid) if not _gone(p)}
                return roles if {"back", "deliver"} <= set(roles) else None

            roles = await _until(both, 20, "the back and delivery processes")
            await asyncio.sleep(1.5)  # both have looked once; the next poll is 30 s away
            started = time.monotonic()
            expected = await _push(http, keys["trust"], people=2, seed=21)

            async def delivered() -> bool:
                return expected <= set(receiver.event_ids("E06000060"))

            await _until(delivered, 10, "deliveries woken by the dispatcher's process")
            assert time.monotonic() - started < 10  # not the 30 s poll

            os.kill(roles["deliver"], signal.SIGKILL)  # the delivery process crashes
            more = await _push(http, keys["trust"], people=1, seed=22)  # queued while it is down

            async def restarted() -> bool:
                pids = {_role(p) for p in _worker_pids(hub.proc.pid) if p != roles["deliver"] and not _gone(p)}
                return "deliver" in pids

            await _until(restarted, 20, "a new delivery process")

            async def delivered_again() -> bool:
                return more <= set(receiver.event_ids("E06000060"))

            await _until(delivered_again, 20, "what was queued while it was down")
            assert (await _until(lambda: _ready(http), 20, "ready again"))["checks"]["delivery_process"] == "ok"
            assert roles["back"] in _worker_pids(hub.proc.pid)  # the dispatcher's process went on

            # Every process's metrics on the front's /metrics (hub/observability/multiproc.py): the
            # dispatcher's and the consumers' (the back process) and the deliveries of both delivery
            # processes (the killed one's still counted).
            samples = await _metrics(http)
            assert _total(samples, "s117_ingest_total", outcome="accepted") >= 1  # the front's own
            assert _total(samples, "s117_events_dispatched_total", decision="allowed") >= len(expected | more)
            assert _total(samples, "s117_deliveries_total", channel="webhook", outcome="delivered") \
                >= len(expected | more)
            assert ("s117_consumer_lag_messages", (("group", "dispatcher"), ("topic", "s117.events"))) in samples
            # The process figures multiprocess mode leaves out: the front's own, and each live worker
            # process's by role (the killed delivery process's gone with it, its successor's there).
            assert samples[("process_resident_memory_bytes", ())] > 0
            assert any(n.startswith("python_gc_") for n, _ in samples)
            cpu_by_role = {dict(ls)["role"]: v for (n, ls), v in samples.items()
                           if n == "s117_worker_process_cpu_seconds_total"}
            assert set(cpu_by_role) == {"back", "deliver"} and cpu_by_role["back"] > 0
            assert len([1 for n, _ in samples if n == "s117_worker_process_resident_memory_bytes"]) == 2
    finally:
        hub.stop()
        await receiver.stop()
    lines = [line for line in hub.logs().splitlines() if line.strip()]
    assert lines and all(line.startswith("{") and line.endswith("}") for line in lines), "a torn log line"


async def test_unset_the_hub_chooses_its_processes_by_the_cores_and_says_so(tmp_path, sharing_file) -> None:
    """Neither S117_SEPARATE_WORKERS nor S117_SEPARATE_DELIVERY set: `s117hub
    serve` runs three processes on two usable cores or more, one on one
    (hub/worker_process.py `serving_layout`), logs the choice, and is ready
    only once the worker processes' workers have started; a change then
    reaches the council."""
    from hub.worker_process import usable_cores

    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    hub.env.pop("S117_SEPARATE_WORKERS", None)  # unset, whatever this environment says
    hub.env.pop("S117_SEPARATE_DELIVERY", None)
    keys = await make_clients(hub.db_url)
    await hub.start()  # waits for /health/ready: every worker process has said it started
    try:
        apart = usable_cores() >= 2
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            checks = (await http.get("/health/ready")).json()["checks"]
            roles = sorted(_role(p) for p in _worker_pids(hub.proc.pid) if not _gone(p))
            if apart:
                assert checks["worker_process"] == "ok" and checks["delivery_process"] == "ok"
                assert roles == ["back", "deliver"]
            else:
                assert "worker_process" not in checks and roles == []
            layout = [line for line in hub.logs().splitlines() if '"hub layout"' in line]
            assert len(layout) == 1 and f'"processes":{3 if apart else 1}' in layout[0].replace(" ", "")
            assert '"chosen":"auto"' in layout[0].replace(" ", "")
            await subscribe_webhook(http, keys, receiver)
            expected = await _push(http, keys["trust"], people=1, seed=31)

            async def delivered() -> bool:
                return expected <= set(receiver.event_ids("E06000060"))

            await _until(delivered, 20, "the delivery")
    finally:
        hub.stop()
        await receiver.stop()
