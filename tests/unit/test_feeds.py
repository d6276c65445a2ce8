"""Pull feeds: in order, at least once until acknowledged by cursor, own organisation only."""

from __future__ import annotations


from hub.fhir.validate import validate_message
from tests.support import push_scenario


async def _feed(app_hub) -> str:  # noqa: ANN001
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys["E06000060"]},
                                json={"channel": "feed"})
    assert r.status_code == 201, r.text
    assert "secret" not in r.json()
    return r.json()["subscription_id"]


async def _push(app_hub, seed: int = 8) -> list[dict]:  # noqa: ANN001
    return await push_scenario(app_hub, seed)


async def test_a_council_pulls_its_messages_in_order_and_acknowledges_by_cursor(app_hub):
    sub = await _feed(app_hub)
    events = await _push(app_hub)
    h = {"X-API-Key": app_hub.keys["E06000060"]}
    first = (await app_hub.http.get(f"/v1/feeds/{sub}?limit=2", headers=h)).json()
    assert len(first["items"]) == 2 and first["more"] is True
    validate_message(first["items"][0]["message"])
    # Not acknowledged yet: asking again from the start gives the same two.
    again = (await app_hub.http.get(f"/v1/feeds/{sub}?limit=2", headers=h)).json()
    assert [i["event_id"] for i in again["items"]] == [i["event_id"] for i in first["items"]]
    got = list(first["items"])
    cursor = first["next_cursor"]
    while True:
        page = (await app_hub.http.get(f"/v1/feeds/{sub}?after={cursor}&limit=2", headers=h)).json()
        got += page["items"]
        if not page["items"]:
            break
        cursor = page["next_cursor"]
    order = {e["event_id"]: i for i, e in enumerate(events)}
    assert [order[i["event_id"]] for i in got] == sorted(order[i["event_id"]] for i in got)
    assert {e["event_type"] for e in events if e["event_id"] in {i["event_id"] for i in got}} >= {
        "s117-entitlement-started"}
    # Everything up to the last cursor is acknowledged: the delivery log says delivered.
    log = (await app_hub.http.get(f"/v1/subscriptions/{sub}/deliveries", headers=h)).json()["items"]
    assert log and all(d["status"] == "delivered" for d in log)


async def test_a_feed_belongs_to_its_organisation(app_hub):
    sub = await _feed(app_hub)
    await _push(app_hub)
    r = await app_hub.http.get(f"/v1/feeds/{sub}", headers={"X-API-Key": app_hub.keys["E08000025"]})
    assert r.status_code == 404


async def test_feed_and_webhook_subscriptions_take_the_right_fields(app_hub):
    h = {"X-API-Key": app_hub.keys["E06000060"]}
    r = await app_hub.http.post("/v1/subscriptions", headers=h, json={"channel": "webhook"})
    assert r.status_code == 422 and "url is required" in r.text
    r = await app_hub.http.post("/v1/subscriptions", headers=h, json={"channel": "feed", "url": "https://x.example/h"})
    assert r.status_code == 422 and "takes no url" in r.text


async def test_a_stopped_feed_hands_out_nothing_more_and_says_so(app_hub):
    """DELETE /v1/subscriptions/{id} stops a feed: pulling it again (JSON or SSE) is `410` naming the
    stop, where it went on handing out what was queued; another organisation still gets the unknown
    id's 404 (nothing said of whether it exists)."""
    sub = await _feed(app_hub)
    await _push(app_hub)
    h = {"X-API-Key": app_hub.keys["E06000060"]}
    assert (await app_hub.http.get(f"/v1/feeds/{sub}?limit=1", headers=h)).json()["items"]
    assert (await app_hub.http.delete(f"/v1/subscriptions/{sub}", headers=h)).status_code == 200
    for headers in (h, {**h, "Accept": "text/event-stream"}):
        r = await app_hub.http.get(f"/v1/feeds/{sub}", headers=headers)
        assert r.status_code == 410, r.text
        assert r.json()["type"].endswith("/subscription-stopped") and "items" not in r.json()
    r = await app_hub.http.get(f"/v1/feeds/{sub}", headers={"X-API-Key": app_hub.keys["E08000025"]})
    assert r.status_code == 404


async def test_an_open_event_stream_ends_once_its_feed_is_stopped(app_hub):
    from sqlalchemy import select

    from hub.api.feeds import _stream
    from hub.store.schema import subscriptions

    sub = await _feed(app_hub)
    h = {"X-API-Key": app_hub.keys["E06000060"]}
    async with app_hub.hub.engine.connect() as conn:
        row = (await conn.execute(select(subscriptions).where(subscriptions.c.subscription_id == sub))).one()

    class Listening:
        async def is_disconnected(self) -> bool:
            return False

    stream = _stream(app_hub.hub, Listening(), row, 0)
    assert await anext(stream) == b"retry: 1000\n\n"
    assert (await app_hub.http.delete(f"/v1/subscriptions/{sub}", headers=h)).status_code == 200
    await _push(app_hub)  # queued after the stop: never streamed
    rest = [chunk async for chunk in stream]  # ends (before: streamed until S117_SSE_MAX_SECONDS)
    assert not any(c.startswith(b"id:") for c in rest)
