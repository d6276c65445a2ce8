"""The data-sharing agreements file edited while the hub runs: `s117hub serve` as real
processes, real HTTP, its SQLite store, a real webhook receiver.

IG review (reproduced): Buckinghamshire removed from the agreements file while the hub ran;
5 s later its pull feed still returned its messages and the person query answered 200, until
every hub process restarted. Now every process (front, back workers, deliverers) looks at the
file every S117_AGREEMENTS_RELOAD_SECONDS (here 0.5 s) and swaps a changed file's grants in:
a withdrawal refuses the feed and the query and holds the queued webhook message within
seconds; a narrowing shows in the next message; a file that does not load keeps the last good
agreements and says so on /metrics until a good edit loads (hub/agreements_watch.py)."""

from __future__ import annotations

import asyncio
import copy
import random
import time
from datetime import date
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import select

from hub.clients import add_client
from hub.sample_data import detention_to_move_scenario
from hub.store.db import create_engine
from hub.store.schema import operator_actions
from tests.e2e.conftest import SECRET, SHARING, make_clients
from tests.support import HubProcess, Receiver

pytestmark = pytest.mark.e2e

COUNCIL = "E06000060"
RELOAD = {"S117_AGREEMENTS_RELOAD_SECONDS": "0.5"}


def _without_council() -> dict:
    doc = copy.deepcopy(SHARING)
    for ag in doc["agreements"]:
        ag["recipients"] = [r for r in ag["recipients"] if r["org_code"] != COUNCIL]
    return doc


def _council_groups(groups: list[str]) -> dict:
    doc = copy.deepcopy(SHARING)
    for ag in doc["agreements"]:
        for r in ag["recipients"]:
            if r["org_code"] == COUNCIL:
                r["field_groups"] = groups
    return doc


def _edit(path: Path, doc: dict | str) -> None:
    """The IG lead's edit: the file rewritten in place while the hub runs."""
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))


async def _until(check, timeout: float, what: str):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out ({timeout} s) waiting for {what}")
        await asyncio.sleep(0.1)


async def _person(http: httpx.AsyncClient, trust: str, seed: int) -> str:
    """One person detained and discharged (entitled), posted by the trust; their person id."""
    changes = detention_to_move_scenario(random.Random(seed), f"reload-{seed}", date(2025, 3, 3))[:3]
    for change in changes:
        r = await http.post("/v1/register-changes", headers={"X-API-Key": trust}, json=change)
        assert r.status_code == 202, r.text
    return r.json()["person_id"]


async def _metric(http: httpx.AsyncClient, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = (await http.get("/metrics")).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and set(labels.items()) <= set(s.labels.items()))


def _patients(items: list[dict], person_id: str) -> list[dict]:
    out = []
    for item in items:
        for e in item["message"]["entry"]:
            res = e["resource"]
            if res["resourceType"] == "Patient" and any(i["value"] == person_id for i in res["identifier"]):
                out.append(res)
    return out


async def test_a_withdrawal_refuses_the_feed_and_the_query_and_holds_the_queued_webhook_in_every_process(
        tmp_path, sharing_file) -> None:
    receiver = Receiver(secret=SECRET, fail_with=503)  # down: the council's message waits in its queue
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing_file, S117_SEPARATE_WORKERS="true",
                     S117_SEPARATE_DELIVERY="true", **RELOAD)
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    _, admin = await add_client(engine, "Operator", "HUB", "hub-operator", ["hub:admin"])
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            council = {"X-API-Key": keys[COUNCIL]}
            r = await http.post("/v1/subscriptions", headers=council, json={"channel": "feed"})
            assert r.status_code == 201, r.text
            feed = r.json()["subscription_id"]
            r = await http.post("/v1/subscriptions", headers=council,
                                json={"url": receiver.url(COUNCIL), "secret": SECRET})
            assert r.status_code == 201, r.text
            ready = await _until(lambda: _ready(http), 20, "the worker processes")
            assert ready["checks"]["delivery_process"] == "ok"
            person = await _person(http, keys["trust"], 1)

            async def in_feed() -> bool:
                got = await http.get(f"/v1/feeds/{feed}", headers=council)
                return got.status_code == 200 and bool(got.json()["items"])

            await _until(in_feed, 10, "the council's feed")
            assert (await http.get(f"/v1/persons/{person}/s117", headers=council)).status_code == 200
            await _until(lambda: _async(len(receiver.received) >= 1), 10, "a webhook attempt (refused: 503)")

            _edit(sharing_file, _without_council())
            withdrawn = time.monotonic()

            async def refused() -> bool:
                pull = await http.get(f"/v1/feeds/{feed}", headers=council)
                query = await http.get(f"/v1/persons/{person}/s117", headers=council)
                return pull.status_code == 403 and query.status_code == 404

            await _until(refused, 5, "the withdrawal to refuse the feed and the person query")
            pull = await http.get(f"/v1/feeds/{feed}", headers=council)
            assert pull.json()["rule"] == "no-agreement"
            assert time.monotonic() - withdrawn < 5

            # Every process has the new agreements (each counts its own reload; /metrics sums them),
            # the deliverers' included. Then the endpoint comes back: what waited must not go.
            await _until(lambda: _reloaded(http, 3), 5, "the three processes' reloads")
            receiver.fail_with = None

            async def held() -> list:
                got = await http.get("/v1/ops/deliveries/held", headers={"X-API-Key": admin})
                return [d for d in got.json()["deliveries"] if d["org_code"] == COUNCIL and d["channel"] == "webhook"]

            [first, *_] = await _until(held, 10, "the queued webhook message held")
            assert first["why"] == "held: no-agreement at delivery"
            await asyncio.sleep(1)  # a few more of the deliverers' polls
            assert not [x for x in receiver.received if x.status == 204], "a message went after the withdrawal"

            # Each of the three processes loaded the file once; the change is audited once.
            assert await _metric(http, "s117_agreements_reloads_total", outcome="loaded") == 3
            assert await _metric(http, "s117_agreements_reload_failed") == 0
        async with engine.connect() as conn:
            rows = (await conn.execute(select(operator_actions).where(
                operator_actions.c.action == "agreements-reloaded"))).all()
        assert len(rows) == 1 and rows[0].client_id == "hub:agreements"
        assert rows[0].detail["changed"] == ["DSA-TEST-BUCKS"]
        assert hub.logs().count("data-sharing agreements reloaded") == 3
    finally:
        hub.stop()
        await engine.dispose()
        await receiver.stop()


async def test_a_narrowing_shows_in_the_next_message_and_a_bad_edit_keeps_the_last_good(tmp_path, sharing_file) -> None:
    hub = HubProcess(tmp_path, sharing_path=sharing_file, S117_SEPARATE_WORKERS="false",
                     S117_SEPARATE_DELIVERY="false", **RELOAD)
    keys = await make_clients(hub.db_url)
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            council = {"X-API-Key": keys[COUNCIL]}
            r = await http.post("/v1/subscriptions", headers=council, json={"channel": "feed"})
            assert r.status_code == 201, r.text
            feed = r.json()["subscription_id"]
            seen: list[dict] = []

            async def told(person_id: str) -> list[dict]:
                got = await http.get(f"/v1/feeds/{feed}", headers=council,
                                     params={"after": seen[-1]["cursor"] if seen else 0})
                assert got.status_code == 200, got.text
                seen.extend(got.json()["items"])
                return _patients(seen, person_id)

            first = await _person(http, keys["trust"], 2)
            [*_, before] = await _until(lambda: told(first), 10, "the first person's messages")
            assert "birthDate" in before and "name" in before  # demographics granted

            _edit(sharing_file, _council_groups(["identity", "legal-status", "responsibility", "explanations"]))
            await _until(lambda: _async("data-sharing agreements reloaded" in hub.logs()), 5, "the reload")
            second = await _person(http, keys["trust"], 3)
            narrowed = await _until(lambda: told(second), 10, "the second person's messages")
            assert all("birthDate" not in p and "name" not in p for p in narrowed), narrowed
            assert all(any(i["value"] for i in p["identifier"]) for p in narrowed)

            _edit(sharing_file, "version: 1\nagreements: [\n  - id: DSA-TEST-BUCKS\n")  # a slip: malformed
            assert await _until(lambda: _metric(http, "s117_agreements_reload_failed"), 5, "the failure gauge") == 1
            assert "data-sharing agreements file not loaded" in hub.logs()
            assert "sharing.yaml: cannot be read as YAML (ParserError at line 3" in hub.logs()
            # The last good agreements stay: the council is still answered, still narrowed.
            assert (await http.get(f"/v1/persons/{second}/s117", headers=council)).status_code == 200
            third = await _person(http, keys["trust"], 4)
            kept = await _until(lambda: told(third), 10, "the third person's messages")
            assert all("birthDate" not in p for p in kept)

            _edit(sharing_file, SHARING)  # fixed, demographics granted again
            await _until(lambda: _zero(http), 5, "the gauge back to 0")
            fourth = await _person(http, keys["trust"], 5)
            again = await _until(lambda: told(fourth), 10, "the fourth person's messages")
            assert all("birthDate" in p for p in again)
            assert await _metric(http, "s117_agreements_reloads_total", outcome="failed") == 1
            assert await _metric(http, "s117_agreements_reloads_total", outcome="loaded") == 2
    finally:
        hub.stop()


async def _reloaded(http: httpx.AsyncClient, processes: int) -> bool:
    return await _metric(http, "s117_agreements_reloads_total", outcome="loaded") >= processes


async def _zero(http: httpx.AsyncClient) -> bool:
    return await _metric(http, "s117_agreements_reload_failed") == 0


async def _ready(http: httpx.AsyncClient) -> dict | None:
    got = await http.get("/health/ready")
    return got.json() if got.status_code == 200 else None


async def _async(value: object) -> object:
    return value
