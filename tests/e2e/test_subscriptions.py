"""Subscriptions end to end against the hub as a real process over HTTP:
a subscriber detects a gap from the event numbers and fills it from
/events; an SSE feed read with plain httpx streaming resumes from Last-Event-ID."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from hub.fhir.validate import validate_message
from tests.e2e.conftest import SECRET, make_clients
from tests.support import HubProcess, Receiver, push_scenario

pytestmark = pytest.mark.e2e
COUNCIL = "E06000060"


class _Http:
    """push_scenario's view of a hub: an http client and keys (the hub's own workers dispatch)."""

    def __init__(self, http: httpx.AsyncClient, keys: dict[str, str]) -> None:
        self.http, self.keys = http, keys

        class _NoDispatch:
            async def run_once(self) -> int:
                return 0

        self.hub = type("H", (), {"dispatcher": _NoDispatch()})()


async def _until(predicate, timeout: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.1)


async def test_a_subscriber_that_was_down_finds_its_gap_by_event_number_and_fills_it(tmp_path, sharing_file):
    receiver = Receiver(secret=SECRET)  # down: nothing listens on its port until it is started
    hub = HubProcess(tmp_path, sharing_path=sharing_file, S117_WEBHOOK_MAX_ATTEMPTS="2")
    keys = await make_clients(hub.db_url)
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            h = {"X-API-Key": keys[COUNCIL]}
            sub = (await http.post("/v1/subscriptions", headers=h,
                                   json={"url": receiver.url(COUNCIL), "secret": SECRET})).json()["subscription_id"]
            pusher = _Http(http, keys)
            await push_scenario(pusher, seed=51)

            async def status() -> dict:
                return (await http.get(f"/v1/subscriptions/{sub}/status", headers=h)).json()

            # While it is down the operator's maximum (2 attempts) runs out for what was queued.
            await _until(lambda: _is(status, lambda s: s["events_since_subscription_start"] > 0
                                     and s["dead"] == s["events_since_subscription_start"]))
            missed = (await status())["events_since_subscription_start"]
            await receiver.start()  # back up
            await push_scenario(pusher, seed=52)
            await _until(lambda: _is(status, lambda s: s["pending"] == 0
                                     and s["events_since_subscription_start"] > missed))

            # The subscriber's side: what it accepted, by event number, and the gap below the newest.
            accepted = {int(r.headers["s117-event-number"]): r for r in receiver.received}
            assert accepted and all(r.signature_ok for r in accepted.values())
            newest = max(accepted)
            gap = sorted(set(range(1, newest + 1)) - set(accepted))
            assert gap == list(range(1, missed + 1))
            r = await http.get(f"/v1/subscriptions/{sub}/events", headers=h,
                               params={"from": gap[0], "to": gap[-1]})
            assert r.status_code == 200, r.text
            filled = r.json()["items"]
            assert [i["event_number"] for i in filled] == gap and all(i["status"] == "dead" for i in filled)
            for item in filled:
                validate_message(item["message"])
                # The replayed message is the one the webhook would have carried (same ids).
                # The replayed message is the one queued for the webhook: same ids as the delivery log.
                log = (await http.get(f"/v1/subscriptions/{sub}/deliveries", headers=h)).json()["items"]
                queued = next(d for d in log if d["event_number"] == item["event_number"])
                assert (queued["event_id"], queued["message_id"]) == (item["event_id"], item["message_id"])
            assert set(range(1, newest + 1)) == set(accepted) | {i["event_number"] for i in filled}
    finally:
        hub.stop()
        await receiver.stop()


async def _is(fetch, cond) -> bool:  # noqa: ANN001
    return cond(await fetch())


async def _read_events(response: httpx.Response, n: int) -> list[dict]:
    """Parse text/event-stream until n events (comment lines are heartbeats)."""
    events: list[dict] = []
    current: dict = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in current:
                events.append(current)
                if len(events) == n:
                    return events
            current = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            current[name] = value[1:] if value.startswith(" ") else value
    return events


async def test_an_sse_feed_resumes_from_last_event_id(tmp_path, sharing_file):
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            h = {"X-API-Key": keys[COUNCIL]}
            sub = (await http.post("/v1/subscriptions", headers=h, json={"channel": "feed"})).json()["subscription_id"]
            await push_scenario(_Http(http, keys), seed=53)

            async def queued() -> bool:
                s = (await http.get(f"/v1/subscriptions/{sub}/status", headers=h)).json()
                return s["events_since_subscription_start"] >= 4

            await _until(queued)
            total = (await http.get(f"/v1/subscriptions/{sub}/status", headers=h)).json()[
                "events_since_subscription_start"]
            sse = {**h, "Accept": "text/event-stream"}
            async with http.stream("GET", f"/v1/feeds/{sub}", headers=sse) as r:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                first = await _read_events(r, 2)
            assert [int(e["id"]) for e in first] == [1, 2]
            for e in first:
                item = orjson.loads(e["data"])
                assert e["event"] == item["event_type"] and item["event_number"] == int(e["id"])
                assert item["message"]["resourceType"] == "Bundle"
            # Reconnect as EventSource does: Last-Event-ID acknowledges 1-2 and the stream goes on from 3.
            async with http.stream("GET", f"/v1/feeds/{sub}", headers={**sse, "Last-Event-ID": first[-1]["id"]}) as r:
                rest = await _read_events(r, total - 2)
            assert [int(e["id"]) for e in rest] == list(range(3, total + 1))
            log = (await http.get(f"/v1/subscriptions/{sub}/deliveries", headers=h)).json()["items"]
            assert {d["event_number"]: d["status"] for d in log if d["event_number"] <= 2} == {1: "delivered",
                                                                                                2: "delivered"}
            assert all(d["status"] == "pending" for d in log if d["event_number"] > 2)  # until acknowledged
    finally:
        hub.stop()


