"""A feed's cursor acknowledges only what the feed has handed out.

GET /v1/feeds/{id}?after=N (and its SSE form, Last-Event-ID: N) acknowledges
every pending delivery numbered up to N. A cursor beyond the highest event
number the feed has served would acknowledge messages nobody read, and every
later one numbered up to it at the next reconnect: such a cursor is refused
(422, naming the field) and nothing is acknowledged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from hub.api.app import create_app
from hub.clients import add_client
from tests.conftest import InProcessHub
from tests.conftest import test_settings as make_settings
from tests.support import push_scenario

COUNCIL = "E06000060"


@pytest.fixture
async def feed_hub(tmp_path: Path) -> AsyncIterator[InProcessHub]:
    """The app in-process on a SQLite file, its SSE streams ended after a second
    (so a stream the hub wrongly accepts still ends within the test)."""
    app = create_app(make_settings(tmp_path, sse_max_seconds=1.0, sse_heartbeat_seconds=0.2,
                                   worker_poll_seconds=0.05))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        keys = {
            "trust": (await add_client(hub.engine, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"]))[1],
            COUNCIL: (await add_client(hub.engine, "Bucks", COUNCIL, "council",
                                       ["subscriptions:write", "s117:read"]))[1],
        }
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            yield InProcessHub(http, hub, keys)


async def _queued_feed(h: InProcessHub, seed: int) -> tuple[str, dict[str, str], int]:
    headers = {"X-API-Key": h.keys[COUNCIL]}
    r = await h.http.post("/v1/subscriptions", headers=headers, json={"channel": "feed"})
    assert r.status_code == 201, r.text
    sub = r.json()["subscription_id"]
    await push_scenario(h, seed=seed)
    n = (await h.http.get(f"/v1/subscriptions/{sub}/status", headers=headers)).json()["events_since_subscription_start"]
    assert n >= 5, n
    return sub, headers, n


async def _statuses(h: InProcessHub, sub: str, headers: dict[str, str]) -> dict[int, str]:
    log = (await h.http.get(f"/v1/subscriptions/{sub}/deliveries?limit=1000", headers=headers)).json()["items"]
    return {d["event_number"]: d["status"] for d in log}


async def test_a_cursor_beyond_what_was_served_is_refused_and_acknowledges_nothing(feed_hub):
    h = feed_hub
    sub, headers, n = await _queued_feed(h, seed=71)
    served = (await h.http.get(f"/v1/feeds/{sub}?limit=2", headers=headers)).json()
    assert [i["cursor"] for i in served["items"]] == [1, 2]
    for cursor in (3, n, 99999):  # queued but never handed out; beyond anything queued
        r = await h.http.get(f"/v1/feeds/{sub}?after={cursor}", headers=headers)
        assert r.status_code == 422, r.status_code  # (the body would be messages: not printed)
        assert r.headers["content-type"].startswith("application/problem+json")
        errors = r.json()["errors"]
        assert [e["field"] for e in errors] == ["after"]
        assert "handed out (2)" in errors[0]["reason"]
    assert set((await _statuses(h, sub, headers)).values()) == {"pending"}
    status = (await h.http.get(f"/v1/subscriptions/{sub}/status", headers=headers)).json()
    assert status["last_event_number_acknowledged"] == 0 and status["pending"] == n
    # The refusal changed nothing: the feed goes on from where it was, every message in turn.
    got = [i["cursor"] for i in (await h.http.get(f"/v1/feeds/{sub}?after=2&limit=1000", headers=headers)).json()["items"]]
    assert got == list(range(3, n + 1))


async def test_a_refused_cursor_does_not_swallow_later_events(feed_hub):
    h = feed_hub
    sub, headers, n = await _queued_feed(h, seed=72)
    everything = (await h.http.get(f"/v1/feeds/{sub}?limit=1000", headers=headers)).json()
    assert everything["next_cursor"] == n and everything["more"] is False
    # A subscriber that holds a cursor past the end (a bug, or another feed's cursor).
    r = await h.http.get(f"/v1/feeds/{sub}?after={n + 50}", headers=headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "after"
    await push_scenario(h, seed=73)
    later = (await h.http.get(f"/v1/subscriptions/{sub}/status", headers=headers)).json()
    total = later["events_since_subscription_start"]
    assert total > n and later["pending"] == total  # nothing acknowledged, the later ones included
    r = await h.http.get(f"/v1/feeds/{sub}?after={n + 50}", headers=headers)
    assert r.status_code == 422  # still beyond what was handed out: the later events were queued, not served
    page = (await h.http.get(f"/v1/feeds/{sub}?after={n}&limit=1000", headers=headers)).json()
    assert [i["cursor"] for i in page["items"]] == list(range(n + 1, total + 1))


async def test_a_cursor_at_the_highest_served_acknowledges_exactly_up_to_it(feed_hub):
    h = feed_hub
    sub, headers, n = await _queued_feed(h, seed=74)
    first = (await h.http.get(f"/v1/feeds/{sub}?limit=3", headers=headers)).json()
    assert first["next_cursor"] == 3
    # Cursor 0 acknowledges nothing and serves the same again.
    again = (await h.http.get(f"/v1/feeds/{sub}?after=0&limit=3", headers=headers)).json()
    assert [i["cursor"] for i in again["items"]] == [1, 2, 3]
    page = (await h.http.get(f"/v1/feeds/{sub}?after=3&limit=1", headers=headers))
    assert page.status_code == 200, page.status_code
    assert [i["cursor"] for i in page.json()["items"]] == [4]
    statuses = await _statuses(h, sub, headers)
    assert {k: v for k, v in statuses.items() if v == "delivered"} == {1: "delivered", 2: "delivered", 3: "delivered"}
    status = (await h.http.get(f"/v1/subscriptions/{sub}/status", headers=headers)).json()
    assert status["last_event_number_acknowledged"] == 3 and status["pending"] == n - 3
    assert status["last_event_number_sent"] == 4
    # A cursor below the highest served (4) is as before: acknowledges up to it.
    assert (await h.http.get(f"/v1/feeds/{sub}?after=4&limit=1", headers=headers)).status_code == 200
    assert (await h.http.get(f"/v1/subscriptions/{sub}/status", headers=headers)).json()[
        "last_event_number_acknowledged"] == 4


async def test_sse_refuses_a_last_event_id_beyond_what_was_served(feed_hub):
    h = feed_hub
    sub, headers, n = await _queued_feed(h, seed=75)
    await h.http.get(f"/v1/feeds/{sub}?limit=2", headers=headers)  # serves 1-2
    sse = {**headers, "Accept": "text/event-stream"}
    r = await h.http.get(f"/v1/feeds/{sub}", headers={**sse, "Last-Event-ID": "99999"})
    assert r.status_code == 422, r.status_code
    assert r.json()["errors"][0]["field"] == "Last-Event-ID"
    assert "handed out (2)" in r.json()["errors"][0]["reason"]
    r = await h.http.get(f"/v1/feeds/{sub}", headers={**sse, "Last-Event-ID": "3"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Last-Event-ID"
    r = await h.http.get(f"/v1/feeds/{sub}?after={n}", headers=sse)  # the cursor as a query parameter
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "after"
    assert set((await _statuses(h, sub, headers)).values()) == {"pending"}


async def test_sse_resumes_from_a_last_event_id_it_handed_out(feed_hub):
    h = feed_hub
    sub, headers, n = await _queued_feed(h, seed=76)
    await h.http.get(f"/v1/feeds/{sub}?limit=2", headers=headers)  # serves 1-2
    r = await h.http.get(f"/v1/feeds/{sub}", headers={**headers, "Accept": "text/event-stream",
                                                       "Last-Event-ID": "2"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    ids = [int(line[4:]) for line in r.text.splitlines() if line.startswith("id: ")]
    assert ids == list(range(3, n + 1))
    statuses = await _statuses(h, sub, headers)
    assert [k for k, v in sorted(statuses.items()) if v == "delivered"] == [1, 2]


async def test_an_operators_replay_of_a_feed_is_read_again_by_rewinding_and_keeps_the_cursor_held(feed_hub):
    """A replay puts a feed's messages back to be read again, still counted as
    handed out: the cursor the subscriber holds stays accepted (it is not
    stuck on a 422), and rewinding it reads them again, in order."""
    h = feed_hub
    sub, headers, n = await _queued_feed(h, seed=74)
    items = (await h.http.get(f"/v1/feeds/{sub}?limit=1000", headers=headers)).json()["items"]
    assert [i["cursor"] for i in items] == list(range(1, n + 1))
    assert (await h.http.get(f"/v1/feeds/{sub}?after={n}", headers=headers)).status_code == 200  # all acknowledged
    assert set((await _statuses(h, sub, headers)).values()) == {"delivered"}
    admin = (await add_client(h.hub.engine, "Ops", "HUB", "hub", ["hub:admin"]))[1]
    r = await h.http.post(f"/v1/ops/subscriptions/{sub}/replay", params={"since": "2000-01-01T00:00:00Z"},
                          headers={"X-API-Key": admin})
    assert r.status_code == 200 and r.json()["requeued"] == n
    # The cursor held is still one the feed handed out.
    r = await h.http.get(f"/v1/feeds/{sub}?after=2", headers=headers)
    assert r.status_code == 200, r.status_code
    assert [i["cursor"] for i in r.json()["items"]] == list(range(3, n + 1))
    # Rewound to the start, the rest is read again (1 and 2 were acknowledged by the cursor 2 above).
    again = (await h.http.get(f"/v1/feeds/{sub}?after=0&limit=1000", headers=headers)).json()["items"]
    assert [i["cursor"] for i in again] == list(range(3, n + 1))
    assert [i["event_id"] for i in again] == [i["event_id"] for i in items[2:]]
