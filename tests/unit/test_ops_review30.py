"""Outside review 30 of the ops API: a delivery given up is listed with the organisation and channel it was
for (the first thing an engineer on call asks), its event number and correlation id (to trace it), and
/v1/ops/flows counts the deliveries given up beside the handlers' dead letters, so the console's total
agrees with the lists beneath it."""

from __future__ import annotations

from sqlalchemy import select, update

from hub.clients import add_client
from hub.store.schema import deliveries
from tests.unit.test_ops import _subscribe_and_push


async def test_a_delivery_given_up_names_its_organisation_channel_and_is_counted(app_hub):
    admin = {"X-API-Key": (await add_client(app_hub.hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]}
    await _subscribe_and_push(app_hub)
    await app_hub.hub.dispatcher.run_once()
    async with app_hub.hub.engine.begin() as conn:
        row = (await conn.execute(select(deliveries.c.delivery_id, deliveries.c.event_number,
                                         deliveries.c.correlation_id).limit(1))).one()
        await conn.execute(update(deliveries).where(deliveries.c.delivery_id == row.delivery_id)
                           .values(status="dead", attempts=5, last_error="HTTP 500"))
    dead = (await app_hub.http.get("/v1/ops/dead-letters", headers=admin)).json()["deliveries"]
    assert len(dead) == 1
    assert (dead[0]["org_code"], dead[0]["channel"], dead[0]["event_number"], dead[0]["correlation_id"]) == \
        ("E06000060", "webhook", row.event_number, row.correlation_id)
    flows = (await app_hub.http.get("/v1/ops/flows", headers=admin)).json()
    assert flows["dead_deliveries"] == 1 == sum(s["dead"] for s in flows["subscriptions"])
    assert flows["dead_letters_open"] == 0  # the handlers' dead letters, counted apart


async def test_a_failing_subscribers_queue_says_why_it_waits_and_when_it_is_tried_next(app_hub):
    """By default a failing subscriber is retried until it is back: nothing is given up, and the engineer
    on call sees only a pending count growing unless the subscription says why its queue waits."""
    admin = {"X-API-Key": (await add_client(app_hub.hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]}
    await _subscribe_and_push(app_hub)
    await app_hub.hub.dispatcher.run_once()
    async with app_hub.hub.engine.begin() as conn:
        first = (await conn.execute(select(deliveries.c.delivery_seq).order_by(deliveries.c.delivery_seq)
                                    .limit(1))).scalar_one()
        await conn.execute(update(deliveries).where(deliveries.c.delivery_seq == first)
                           .values(status="pending", attempts=4, last_error="HTTP 503"))
        await conn.execute(update(deliveries).where(deliveries.c.delivery_seq > first)
                           .values(status="pending", attempts=1, last_error="Timeout"))
    [sub] = (await app_hub.http.get("/v1/ops/flows", headers=admin)).json()["subscriptions"]
    assert sub["pending"] >= 2 and sub["max_attempts_pending"] == 4
    assert sub["oldest_pending_error"] == "HTTP 503"  # the head of its queue, which the others wait behind
    assert sub["next_attempt_at"] is not None
