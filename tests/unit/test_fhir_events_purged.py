"""FHIR `$events` after the retention purge has emptied a message (`S117_RETAIN_DELIVERED_PAYLOAD_DAYS`,
hub/retention.py): the message is given by its number and id (as id-only gives it), the rest in full,
and nothing is recorded as handed out for it; before, decrypting the emptied payload raised and the whole
page was a 500, as `GET /v1/subscriptions/{id}/events` was (tests/unit/test_subscriber_review31_purged.py)."""

from __future__ import annotations

from sqlalchemy import func, select

from hub.store.schema import access_decisions, deliveries, delivery_messages
from tests.security.test_review_p4_fhir_events import _endpoint, _messages, _numbers, _subscribed
from tests.support import push_scenario
from tests.unit.test_delivery_agreement_ended import COUNCIL


async def _replays(app_hub) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(access_decisions)
                                .where(access_decisions.c.channel == "replay"))).scalar_one()
        await conn.rollback()
    return n


async def test_fhir_events_give_a_purged_message_by_number_and_the_rest_in_full(app_hub):
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    async with _endpoint() as port:
        sid = await _subscribed(app_hub, port)
        for seed in (81, 82, 83):
            await push_scenario(app_hub, seed=seed)
        while await app_hub.hub.dispatcher.run_once():
            pass
        before = (await app_hub.http.get(f"/v1/fhir/Subscription/{sid}/$events", headers=key)).json()
        numbers = _numbers(before)
        assert len(numbers) >= 2 and len(_messages(before)) == len(numbers)
        async with app_hub.hub.engine.begin() as conn:  # as the retention purge empties it
            seq, message_id = (await conn.execute(
                select(deliveries.c.delivery_seq, deliveries.c.message_id)
                .where(deliveries.c.subscription_id == sid, deliveries.c.event_number == int(numbers[0])))).one()
            await conn.execute(delivery_messages.update().where(delivery_messages.c.delivery_seq == seq)
                               .values(payload=b""))
        audited = await _replays(app_hub)

        r = await app_hub.http.get(f"/v1/fhir/Subscription/{sid}/$events", headers=key)
        assert r.status_code == 200, r.text
        bundle = r.json()
        assert _numbers(bundle) == numbers  # every number still given
        events = bundle["entry"][0]["resource"]["notificationEvent"]
        assert events[0]["focus"] == {"reference": f"Bundle/{message_id}"}  # by id: nothing left to give
        assert all(e["focus"]["reference"].startswith("urn:uuid:") for e in events[1:])
        assert len(_messages(bundle)) == len(numbers) - 1
        assert message_id not in {m["id"] for m in _messages(bundle)}
        assert await _replays(app_hub) > audited  # the rest handed out again, recorded
