"""Event numbers and replay: GET /v1/subscriptions/{id}/events and /status."""

from __future__ import annotations

from hub.fhir.validate import validate_message
from tests.support import push_scenario

COUNCIL = "E06000060"


async def _feed(app_hub) -> str:  # noqa: ANN001
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[COUNCIL]},
                                json={"channel": "feed"})
    assert r.status_code == 201, r.text
    return r.json()["subscription_id"]


async def test_events_replays_a_range_by_number_without_touching_delivery(app_hub):
    sub = await _feed(app_hub)
    await push_scenario(app_hub, seed=41)
    h = {"X-API-Key": app_hub.keys[COUNCIL]}
    everything = (await app_hub.http.get(f"/v1/subscriptions/{sub}/events", headers=h)).json()
    n = everything["events_since_subscription_start"]
    assert n >= 3 and [i["event_number"] for i in everything["items"]] == list(range(1, n + 1))
    assert everything["more"] is False
    part = (await app_hub.http.get(f"/v1/subscriptions/{sub}/events?from=2&to=3", headers=h)).json()
    assert [i["event_number"] for i in part["items"]] == [2, 3]
    assert [i["event_id"] for i in part["items"]] == [i["event_id"] for i in everything["items"][1:3]]
    validate_message(part["items"][0]["message"])
    page = (await app_hub.http.get(f"/v1/subscriptions/{sub}/events?from=1&limit=2", headers=h)).json()
    assert [i["event_number"] for i in page["items"]] == [1, 2] and page["more"] is True
    # A `to` past the newest: the page ends at the newest, with nothing more to fetch.
    tail = (await app_hub.http.get(f"/v1/subscriptions/{sub}/events?from={n - 1}&to={n + 1000}", headers=h)).json()
    assert [i["event_number"] for i in tail["items"]] == [n - 1, n] and tail["more"] is False
    # Reading is not acknowledging: the feed still starts at 1 and nothing was marked sent.
    status = (await app_hub.http.get(f"/v1/subscriptions/{sub}/status", headers=h)).json()
    assert status["events_since_subscription_start"] == n and status["pending"] == n
    assert status["last_event_number_sent"] == 0 and status["last_event_number_acknowledged"] == 0
    feed = (await app_hub.http.get(f"/v1/feeds/{sub}?limit=2", headers=h)).json()
    assert [i["cursor"] for i in feed["items"]] == [1, 2] and feed["next_cursor"] == 2
    await app_hub.http.get(f"/v1/feeds/{sub}?after=2&limit=1", headers=h)  # acknowledges 1-2, sends 3
    status = (await app_hub.http.get(f"/v1/subscriptions/{sub}/status", headers=h)).json()
    assert status["last_event_number_sent"] == 3 and status["last_event_number_acknowledged"] == 2
    assert status["head"]["event_number"] == 3


async def test_events_answers_only_the_subscriber_and_names_bad_ranges(app_hub):
    sub = await _feed(app_hub)
    await push_scenario(app_hub, seed=42)
    other = {"X-API-Key": app_hub.keys["E08000025"]}
    r = await app_hub.http.get(f"/v1/subscriptions/{sub}/events", headers=other)
    missing = await app_hub.http.get("/v1/subscriptions/00000000-0000-0000-0000-000000000000/events", headers=other)
    assert r.status_code == missing.status_code == 404 and r.json()["detail"] == missing.json()["detail"]
    assert (await app_hub.http.get(f"/v1/subscriptions/{sub}/status", headers=other)).status_code == 404
    h = {"X-API-Key": app_hub.keys[COUNCIL]}
    r = await app_hub.http.get(f"/v1/subscriptions/{sub}/events?from=5&to=2", headers=h)
    assert r.status_code == 422 and r.json()["errors"] == [{"field": "to", "reason": "must not be less than from"}]
    r = await app_hub.http.get(f"/v1/subscriptions/{sub}/events?from=0", headers=h)
    assert r.status_code == 422 and "from" in r.text
    r = await app_hub.http.get(f"/v1/feeds/{sub}", headers={**h, "Accept": "text/event-stream",
                                                           "Last-Event-ID": "seven"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Last-Event-ID"
