"""The area agreements file (`S117_AREA_AGREEMENTS_PATH`: each council and commissioner pair's
funding split) edited while the hub runs: `s117hub serve` as real processes, real HTTP, its
SQLite store.

Reproduced before: Buckinghamshire and BOB ICB's split changed in the file from 53.93% to 70%
for the council; the person query kept answering 53.93 until the hub was restarted (the file
was read once at start). Now every process looks at it with the data-sharing agreements file
(hub/agreements_watch.py, S117_AGREEMENTS_RELOAD_SECONDS, here 0.5 s): a valid edit is answered
within seconds, audited once (by the back workers' process); a file that does not load keeps the
last good agreements, says why in one log line (never the file's text) and on /metrics, until
a good edit loads."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import select

from hub.store.db import create_engine
from hub.store.schema import operator_actions
from tests.e2e.conftest import SHARING, make_clients
from tests.e2e.test_mllp import nhs_numbers
from tests.support import REPO, HubProcess, detention

pytestmark = pytest.mark.e2e

COUNCIL, ICB = "E06000060", "QU9"


def _area_doc(share: object) -> dict:
    doc = yaml.safe_load((REPO / "contracts" / "area-agreements.yaml").read_text())
    (pair,) = [f for f in doc["funding"] if (f["council"], f["commissioner"]) == (COUNCIL, ICB)]
    pair["council_share_percent"] = share
    return doc


def _edit(path: Path, doc: dict | str) -> None:
    """The edit as an operator makes it: the file rewritten in place while the hub runs."""
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))


async def _logged(hub: HubProcess, event: str, times: int, timeout: float = 15) -> None:
    """Until the hub's processes have logged `event` `times` times (each process's look, however loaded the machine)."""
    deadline = time.monotonic() + timeout
    while (seen := hub.logs().count(f'"event":"{event}"')) < times:
        assert time.monotonic() < deadline, f"{event!r} logged {seen} times, not {times}"
        await asyncio.sleep(0.1)


async def _metric(http: httpx.AsyncClient, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = (await http.get("/metrics")).text
    return max(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


async def test_an_edited_area_agreements_file_changes_the_split_in_every_process_without_a_restart(tmp_path) -> None:
    sharing = yaml.safe_load(yaml.safe_dump(SHARING))
    for recipient in sharing["agreements"][0]["recipients"]:
        recipient["field_groups"] = [*recipient["field_groups"], "funding"]
    sharing_path = tmp_path / "sharing.yaml"
    sharing_path.write_text(yaml.safe_dump(sharing))
    area_path = tmp_path / "area-agreements.yaml"
    _edit(area_path, _area_doc(53.93))
    hub = HubProcess(tmp_path, sharing_path=sharing_path, own_group=True, S117_AREA_AGREEMENTS_PATH=str(area_path),
                     S117_AGREEMENTS_RELOAD_SECONDS="0.5")
    keys = await make_clients(hub.db_url)
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            for c in detention(nhs_numbers()[0], "area-reload"):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=c)
                assert r.status_code == 202, r.text
            person = r.json()["person_id"]

            async def arrangement() -> dict:
                r = await http.get(f"/v1/persons/{person}/s117", headers={"X-API-Key": keys[COUNCIL]})
                assert r.status_code == 200, r.text
                return r.json()["funding"]["arrangement"]

            async def until_percent(want: str, timeout: float = 10) -> float:
                began = time.monotonic()
                while (got := (await arrangement())["council_percent"]) != want:
                    assert time.monotonic() - began < timeout, f"still {got}, not {want}"
                    await asyncio.sleep(0.1)
                return time.monotonic() - began

            assert (await arrangement())["council_percent"] == "53.93"

            # The split agreed afresh: answered within seconds, no restart.
            _edit(area_path, _area_doc(70))
            took = await until_percent("70.00")
            assert took < 5
            assert (await arrangement())["nhs_percent"] == "30.00"
            await _logged(hub, "area agreements reloaded", 3)  # the front and both worker processes

            # A typing slip: refused, the last good split kept, said on /metrics.
            _edit(area_path, _area_doc("seventy-five"))
            began = time.monotonic()
            while await _metric(http, "s117_agreements_reload_failed") != 1:
                assert time.monotonic() - began < 10, "the refused file is not on /metrics"
                await asyncio.sleep(0.1)
            await _logged(hub, "area agreements file not loaded: the last good agreements stay in force", 3)
            assert (await arrangement())["council_percent"] == "70.00"

            # Fixed: loaded, and the failure cleared.
            _edit(area_path, _area_doc(60))
            await until_percent("60.00")
            began = time.monotonic()
            while await _metric(http, "s117_agreements_reload_failed") != 0:
                assert time.monotonic() - began < 10
                await asyncio.sleep(0.1)
            await _logged(hub, "area agreements reloaded", 6)  # every process (the back one audits)
    finally:
        hub.stop()

    logs = hub.logs()
    assert logs.count('"event":"area agreements reloaded"') == 3 * 2  # each good edit once in each process
    refusals = [line for line in logs.splitlines() if "area agreements file not loaded" in line]
    assert len(refusals) == 3, refusals  # once in each process
    assert all("funding[1]: is not a percentage" in line for line in refusals), refusals[0]
    assert not any("seventy" in line for line in logs.splitlines()), "the file's text reached the log"

    engine = create_engine(hub.db_url)
    try:
        async with engine.connect() as conn:
            records = (await conn.execute(select(operator_actions).where(
                operator_actions.c.target == area_path.name).order_by(operator_actions.c.action_id))).all()
    finally:
        await engine.dispose()
    assert [(r.client_id, r.action) for r in records] == [("hub:agreements", "agreements-reloaded")] * 2
    assert [r.detail["changed"] for r in records] == [[f"funding.{COUNCIL}/{ICB}"]] * 2
