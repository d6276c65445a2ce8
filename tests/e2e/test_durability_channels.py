"""What the hub acknowledged on its other channels survives its processes being killed
(tests/e2e/test_durability.py covers REST ingest and webhook delivery): `s117hub serve` runs three
processes here (the front, `back`, `deliver`), in a process group of their own, killed together as
a host's crash or an OOM kill of the unit does, or one alone.

- MLLP ADT messages over several connections, the whole group SIGKILLed (or the front SIGTERMed,
  a graceful stop) mid-load: after a restart every message ACKed `AA` is on the register, and every
  event is delivered, once by event id, in order; a graceful stop logs no error.
- A council file killed mid-processing, with retractions in flight: resumed at the restart, every
  row reported once and recorded once; each retraction answered before the kill stands, the rest can
  be sent again, and each is told once.
- The deliverers' process killed alone: the front starts it again and delivery carries on."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import time
import uuid
from datetime import date, timedelta

import httpx
import pytest

from hub.clients import add_client
from hub.store.db import create_engine
from tests.e2e.conftest import SECRET, make_clients, subscribe_webhook
from tests.e2e.test_mllp import Engine, fixture, msa, nhs_numbers
from tests.support import HubProcess, Receiver, detention, free_port

pytestmark = pytest.mark.e2e

HDR = ("RECORD_ID,EVENT,EFFECTIVE_DATE,NOTIFIED_DATE,NHS_NO,SURNAME,FORENAME,DOB,POSTCODE,LA_GSS,NFA,GP_ODS,"
       "REVIEW_REASON,LA_AGREES,NHS_AGREES,PERSON_INVOLVED,END_REASONS,PARTICIPANTS")


async def _hub(tmp_path, sharing_file, **env: str):  # noqa: ANN001, ANN202
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing_file, own_group=True, S117_SEPARATE_WORKERS="true",
                     S117_SEPARATE_DELIVERY="true", **env)
    keys = await make_clients(hub.db_url)
    await hub.start()
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
        sub = await subscribe_webhook(http, keys, receiver)
    return hub, keys, receiver, sub


async def _delivered_once_in_order(http: httpx.AsyncClient, key: str, sub: str, receiver: Receiver,
                                   at_least: int) -> list[dict]:
    """Every event routed to the council delivered, the subscriber given each (by event id) once after
    the first, in event-number order; the deliveries."""
    deadline = time.monotonic() + 25
    while True:
        log = (await http.get(f"/v1/subscriptions/{sub}/deliveries?limit=1000", headers={"X-API-Key": key})).json()
        log = log["items"]
        if len(log) >= at_least and all(d["status"] == "delivered" for d in log) \
                and set(receiver.event_ids()) == {d["event_id"] for d in log}:
            break
        assert time.monotonic() < deadline, f"not delivered: {sum(d['status'] == 'delivered' for d in log)}/{len(log)}"
        await asyncio.sleep(0.1)
    assert len({d["event_id"] for d in log}) == len(log), "one delivery per event"
    # At least once: a batch the subscriber answered but the hub had not recorded at the kill is
    # sent again; by event id each is had once, and the first sightings are in order.
    firsts = list(dict.fromkeys(receiver.event_ids()))
    number = {d["event_id"]: d["event_number"] for d in log}
    assert [number[e] for e in firsts] == sorted(number.values())
    return log


def _left_in_group(pgid: int) -> list[int]:
    """The processes of the hub's group still running (not zombies)."""
    left = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115, PTH123
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                left.append(int(entry))
    return left


async def _mllp_load(port: int, numbers: list[str], run: str, acked: list[tuple[str, str, str]],
                     connections: int = 4) -> None:
    """Each connection: an A01 then an A03 per person, each ACK kept; until the hub goes away."""
    async def one(k: int) -> None:
        try:
            async with Engine(port) as engine:
                for n in numbers[k::connections]:
                    for name, cid in (("ADT_A01_s3_detained.hl7", f"{run}-A01-{n}"),
                                      ("ADT_A03_discharge.hl7", f"{run}-A03-{n}")):
                        ack = await engine.send(fixture(name, n, cid))
                        acked.append((msa(ack)[1], cid, n))
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass  # the hub went away: what was not ACKed the engine would send again

    await asyncio.gather(*(one(k) for k in range(connections)))


@pytest.mark.parametrize("how", ["sigkill-all", "sigterm"])
async def test_mllp_messages_acked_survive_the_hub_killed(tmp_path, sharing_file, how):
    mllp_port = free_port()
    hub, keys, receiver, sub = await _hub(tmp_path, sharing_file, S117_MLLP_PORT=str(mllp_port))
    numbers, run, acked = nhs_numbers()[:60], uuid.uuid4().hex[:6], []
    try:
        load = asyncio.create_task(_mllp_load(mllp_port, numbers, run, acked))
        while len(acked) < 30:
            assert not load.done(), "the load ended before the kill"
            await asyncio.sleep(0.01)
        if how == "sigkill-all":
            hub.kill_group()  # the front and both worker processes at once
        else:
            stopping = hub.logs().count("\n")
            started = time.monotonic()
            hub.proc.terminate()
            hub.proc.wait(30)
            assert time.monotonic() - started < 20  # the worker processes' 15 s grace, at most
            stopped = hub.logs().splitlines()[stopping:]
            assert not [line for line in stopped if '"level":"error"' in line], stopped
        await asyncio.wait_for(load, 20)
        assert acked and all(code == "AA" for code, _, _ in acked), acked
        assert len(acked) < 2 * len(numbers), "killed mid-load"
        deadline = time.monotonic() + 5  # a worker process whose front is gone stops within a second or so
        while _left_in_group(hub.proc.pid):
            assert time.monotonic() < deadline, f"worker processes outlived the hub: {_left_in_group(hub.proc.pid)}"
            await asyncio.sleep(0.1)

        await hub.start()
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            trust = {"X-API-Key": keys["trust"]}
            for n in {n for _, _, n in acked}:
                r = await http.post("/v1/persons/lookup", headers=trust, json={"nhs_number": n})
                assert r.status_code == 200, (n, r.text)
                status = (await http.get(f"/v1/persons/{r.json()['person_id']}/s117", headers=trust)).json()
                have = {c["change_type"] for c in status["register_service_level"]}
                want = {"detained" if "-A01-" in cid else "left-hospital" for _, cid, m in acked if m == n}
                assert want <= have, (want, have)
            await _delivered_once_in_order(http, keys["E06000060"], sub, receiver, at_least=len(acked))
    finally:
        hub.stop()
        await receiver.stop()
    with sqlite3.connect(tmp_path / "hub.db") as db:
        recorded = db.execute("SELECT count(*) FROM register_changes WHERE channel = 'mllp'").fetchone()[0]
    assert recorded >= len(acked)  # the ACKed, and any committed whose ACK the kill cut off
    assert not re.search(r"(?<!\d)\d{10}(?!\d)", hub.logs())


async def test_a_council_file_and_retractions_killed_mid_way_resume_once(tmp_path, sharing_file):
    hub, keys, receiver, sub = await _hub(tmp_path, sharing_file, S117_FILES_CHUNK_ROWS="10")
    engine = create_engine(hub.db_url)
    _, council = await add_client(engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    await engine.dispose()
    people, run = nhs_numbers()[:5], uuid.uuid4().hex[:6]
    trust, swift = {"X-API-Key": keys["trust"]}, {"X-API-Key": council}
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            changes = []
            for i, n in enumerate(people):
                for c in detention(n, f"{run}-{i}"):
                    r = await http.post("/v1/register-changes", headers=trust, json=c)
                    assert r.status_code == 202, r.text
                    changes.append(r.json()["change_id"])
            rows = [f"R-{k},REVIEW_DONE,{(date(2025, 5, 1) + timedelta(days=k // 5)).strftime('%d/%m/%Y')},,"
                    f"{people[k % 5]},Testpatient,Alex,14/03/1971,HP20 1AA,,,,,,,,," for k in range(150)]
            r = await http.post("/v1/council-files", params={"format": "swift_csv"},
                                content=("\n".join([HDR, *rows]) + "\n").encode(),
                                headers={**swift, "Content-Type": "text/csv"})
            assert r.status_code == 202, r.text
            where = r.headers["location"]
            while (done := (await http.get(where, headers=swift)).json())["rows_done"] < 20:
                await asyncio.sleep(0.01)
            # Two discharges retracted as the hub is killed: some answered, some cut off.
            retract = changes[1:4:2]
            sent = [asyncio.create_task(http.post(f"/v1/register-changes/{c}/retraction", headers=trust,
                                                  json={"reason": "recorded against the wrong person"}))
                    for c in retract]
            await asyncio.sleep(0.02)
            hub.kill_group()
            answered = await asyncio.gather(*sent, return_exceptions=True)
        assert done["status"] == "processing" and done["rows_done"] < 150

        await hub.start()
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            deadline = time.monotonic() + 20
            while (got := (await http.get(where, headers=swift)).json())["status"] == "processing":
                assert time.monotonic() < deadline, "the file was not resumed"
                await asyncio.sleep(0.1)
            assert (got["status"], got["rows"], got["rows_done"], got["accepted"]) == ("processed", 150, 150, 150)
            assert sorted(e["row"] for e in got["report"]) == list(range(1, 151)), "each row reported once"
            for change, first in zip(retract, answered, strict=True):
                r = await http.post(f"/v1/register-changes/{change}/retraction", headers=trust,
                                    json={"reason": "recorded against the wrong person"})
                assert r.status_code == 200, r.text
                if isinstance(first, httpx.Response):  # answered before the kill: it stood
                    assert first.status_code == 200 and r.json()["duplicate"] is True
            await _delivered_once_in_order(http, keys["E06000060"], sub, receiver, at_least=10)
    finally:
        hub.stop()
        await receiver.stop()
    with sqlite3.connect(tmp_path / "hub.db") as db:
        assert db.execute("SELECT count(*), count(DISTINCT source_message_id) FROM register_changes "
                          "WHERE channel = 'file'").fetchone() == (150, 150)
        assert db.execute("SELECT count(*) FROM change_retractions").fetchone()[0] == len(retract)


async def test_the_deliverers_process_killed_alone_is_started_again(tmp_path, sharing_file):
    hub, keys, receiver, sub = await _hub(tmp_path, sharing_file)
    try:
        before = hub.workers()
        os.kill(before["deliver"], signal.SIGKILL)
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            trust, run = {"X-API-Key": keys["trust"]}, uuid.uuid4().hex[:6]
            for i, n in enumerate(nhs_numbers()[:3]):  # accepted while no deliverer runs
                for c in detention(n, f"{run}-{i}"):
                    r = await http.post("/v1/register-changes", headers=trust, json=c)
                    assert r.status_code == 202, r.text
            await _delivered_once_in_order(http, keys["E06000060"], sub, receiver, at_least=3)
            after = hub.workers()
            assert after["back"] == before["back"] and after["deliver"] != before["deliver"]
            assert (await http.get("/health/ready")).status_code == 200
    finally:
        hub.stop()
        await receiver.stop()
    assert '"status_code":-9' in hub.logs() and "worker process exited; restarting" in hub.logs()
