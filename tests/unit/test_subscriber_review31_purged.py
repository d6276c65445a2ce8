"""A council fills a gap (README "Choosing a channel": `GET /v1/subscriptions/{id}/events?from=N&to=N`)
after the retention purge has emptied a delivered message (`S117_RETAIN_DELIVERED_PAYLOAD_DAYS`,
30 by default: hub/retention.py): the replay says the message was purged, by number, as it says
a withheld one was withheld, and goes on with the rest; before, decrypting the emptied message
failed and the whole page was a 500, every message in it lost to the subscriber, FHIR `$events`
the same."""

from __future__ import annotations

from sqlalchemy import select

from hub.store.schema import deliveries, delivery_messages
from tests.support import push_scenario

COUNCIL = "E06000060"


async def _purge_first(app_hub, sub: str) -> int:  # noqa: ANN001
    """Empty the first delivered message's payload as the retention purge does; its event number."""
    async with app_hub.hub.engine.begin() as conn:
        seq, number = (await conn.execute(
            select(deliveries.c.delivery_seq, deliveries.c.event_number)
            .where(deliveries.c.subscription_id == sub, deliveries.c.status == "delivered")
            .order_by(deliveries.c.event_number).limit(1))).one()
        await conn.execute(delivery_messages.update().where(delivery_messages.c.delivery_seq == seq)
                           .values(payload=b""))
    return number


async def test_a_replay_names_a_purged_message_and_gives_the_rest(app_hub) -> None:  # noqa: ANN001
    h = {"X-API-Key": app_hub.keys[COUNCIL]}
    sub = (await app_hub.http.post("/v1/subscriptions", headers=h, json={"channel": "feed"})).json()["subscription_id"]
    await push_scenario(app_hub, seed=3131)
    page = (await app_hub.http.get(f"/v1/feeds/{sub}", headers=h)).json()
    n = page["next_cursor"]
    assert n >= 3
    await app_hub.http.get(f"/v1/feeds/{sub}?after={n}", headers=h)  # all acknowledged: delivered
    purged = await _purge_first(app_hub, sub)

    r = await app_hub.http.get(f"/v1/subscriptions/{sub}/events?from=1", headers=h)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [i["event_number"] for i in items] == list(range(1, n + 1))
    gone = next(i for i in items if i["event_number"] == purged)
    assert "message" not in gone and gone["purged"] is True
    assert all("message" in i for i in items if i["event_number"] != purged)
