"""Review (ops endpoints), reproduced on a running hub:

* `POST /v1/ops/deliveries/{id}/retry` on a pull feed's message reset its
  fetch count to 0, so a message the council had been handed counted as never
  served: the cursor the council held (`GET /v1/feeds/{id}?after=N`) was then
  refused with 422 "beyond the last event number this feed has handed out"
  and its reader was stuck. A feed's message keeps its count, as the
  subscription replay already did.
* `POST /v1/ops/subscriptions/{id}/replay?since=` compared a time with an
  offset by its wall-clock reading (on SQLite): `14:30+01:00` (13:30 UTC)
  requeued nothing sent at 14:22 UTC, and `10:00-05:00` (15:00 UTC)
  requeued what was sent before it. `since` is now taken in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

from hub.clients import add_client
from tests.support import push_scenario

COUNCIL = "E06000060"


async def _admin(app_hub) -> dict[str, str]:  # noqa: ANN001
    _, key = await add_client(app_hub.hub.engine, "Engineer", "HUB", "hub-operator", ["hub:admin"])
    return {"X-API-Key": key}


async def test_retrying_a_feed_message_keeps_the_cursor_the_council_holds_valid(app_hub):
    council = {"X-API-Key": app_hub.keys[COUNCIL]}
    sub = (await app_hub.http.post("/v1/subscriptions", headers=council, json={"channel": "feed"})).json()
    sid = sub["subscription_id"]
    await push_scenario(app_hub, seed=31)
    served = (await app_hub.http.get(f"/v1/feeds/{sid}?limit=2", headers=council)).json()["items"]
    assert [i["cursor"] for i in served] == [1, 2]
    log = (await app_hub.http.get(f"/v1/subscriptions/{sid}/deliveries?limit=1000", headers=council)).json()["items"]
    second = next(d["delivery_id"] for d in log if d["event_number"] == 2)

    r = await app_hub.http.post(f"/v1/ops/deliveries/{second}/retry", headers=await _admin(app_hub))
    assert r.status_code == 200, r.text

    r = await app_hub.http.get(f"/v1/feeds/{sid}?after=2&limit=1", headers=council)
    assert r.status_code == 200, r.text
    assert [i["cursor"] for i in r.json()["items"]] == [3]
    status = (await app_hub.http.get(f"/v1/subscriptions/{sid}/status", headers=council)).json()
    assert status["last_event_number_acknowledged"] == 2


async def _replayed(app_hub, admin: dict[str, str], sid: str, since: str) -> int:  # noqa: ANN001
    r = await app_hub.http.post(f"/v1/ops/subscriptions/{sid}/replay?since={quote(since)}", headers=admin)
    assert r.status_code == 200, r.text
    return r.json()["requeued"]


async def test_replay_since_a_time_with_an_offset_means_that_instant(app_hub):
    council = {"X-API-Key": app_hub.keys[COUNCIL]}
    sub = (await app_hub.http.post("/v1/subscriptions", headers=council,
                                   json={"url": "http://127.0.0.1:9/hook"})).json()
    sid = sub["subscription_id"]
    await push_scenario(app_hub, seed=32)
    queued = (await app_hub.http.get(f"/v1/subscriptions/{sid}/status", headers=council)).json()[
        "events_since_subscription_start"]
    assert queued >= 1
    admin = await _admin(app_hub)
    now = datetime.now(UTC)
    east, west = timezone(timedelta(hours=1)), timezone(timedelta(hours=-5))
    # Ten minutes ago, written in UTC+1 (its wall clock is 50 minutes ahead of UTC): everything since.
    assert await _replayed(app_hub, admin, sid, (now - timedelta(minutes=10)).astimezone(east).isoformat()) == queued
    # Ten minutes from now, written in UTC-5 (its wall clock is hours behind): nothing yet.
    assert await _replayed(app_hub, admin, sid, (now + timedelta(minutes=10)).astimezone(west).isoformat()) == 0
    # The calendar's edges, with offsets that have no UTC equivalent: everything, nothing; never a 500.
    assert await _replayed(app_hub, admin, sid, "0001-01-01T00:00:00+14:00") == queued
    assert await _replayed(app_hub, admin, sid, "9999-12-31T23:59:59-14:00") == 0
