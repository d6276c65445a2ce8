"""Audit gaps (session 30 outside review): a held delivery an operator releases is disclosed again, audited.

A webhook message held because the council's agreement no longer allowed it (a `denied`
disclosure), then released by an operator once an agreement was in force again (`POST
/v1/ops/deliveries/{id}/retry`, the console's Release; or a subscription replay), was sent with
no new record: "who was told what about this person" showed it allowed when queued, denied when
held, then nothing, though the council received it. Now the claim that sends a released delivery
asks the agreement in force again (still not allowed: held again, nothing sent) and records an
`allowed` disclosure (the subscription's channel, the agreement in force now, the message's field
groups, the operator named in the reason) in the transaction that leases it.
ASGI app, real SQLite store, a real local webhook endpoint.
"""

from __future__ import annotations

from sqlalchemy import select

from hub.store.schema import disclosures, operator_actions
from tests.support import push_scenario
from tests.unit.test_delivery_agreement_ended import (
    COUNCIL,
    _admin,
    _agreements,
    _drain,
    _live_receiver,
    _rows,
    _subscribe,
    _withdrawn,
)


async def _told(app_hub, channel: str = "webhook") -> list:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return list((await conn.execute(
            select(disclosures).where(disclosures.c.recipient_org == COUNCIL, disclosures.c.channel == channel)
            .order_by(disclosures.c.disclosure_id))).all())


async def test_a_held_delivery_released_and_sent_is_recorded_allowed_naming_the_operator(app_hub):
    h = app_hub.hub
    admin = await _admin(app_hub)
    async with _live_receiver() as (receiver, port):
        sub = await _subscribe(app_hub, {"channel": "webhook", "url": f"http://127.0.0.1:{port}/hook"})
        in_force = h.sharing
        h.sharing = _withdrawn()  # the agreements reloaded without the council's, before anything was sent
        await push_scenario(app_hub, seed=3004)
        assert await _drain(h.deliverer) == 0 and receiver.requests == 0
        held = await _rows(app_hub, sub)
        assert held and {r.status for r in held} == {"held"}
        before = await _told(app_hub)
        assert {d.decision for d in before} == {"allowed", "denied"}  # queued, then held

        # Released while still not allowed: held again, nothing sent, nothing recorded allowed.
        first = held[0]
        r = await app_hub.http.post(f"/v1/ops/deliveries/{first.delivery_id}/retry", headers=admin)
        assert r.status_code == 200, r.text
        assert await _drain(h.deliverer) == 0 and receiver.requests == 0
        again = await _told(app_hub)
        assert [d.decision for d in again[len(before):]] == ["denied"]
        assert (await _rows(app_hub, sub))[0].status == "held"

        # An agreement in force again: released, sent, and recorded.
        h.sharing = in_force
        r = await app_hub.http.post(f"/v1/ops/deliveries/{first.delivery_id}/retry", headers=admin)
        assert r.status_code == 200, r.text
        await _drain(h.deliverer)
        assert receiver.accepted == [first.event_number]
        async with h.engine.connect() as conn:
            operator = (await conn.execute(select(operator_actions.c.client_id)
                                           .where(operator_actions.c.action == "retry-delivery",
                                                  operator_actions.c.target == first.delivery_id)
                                           .order_by(operator_actions.c.action_id.desc()))).scalars().first()
            carried = (await conn.execute(
                select(disclosures.c.field_groups, disclosures.c.person_id)
                .where(disclosures.c.event_id == first.event_id, disclosures.c.recipient_org == COUNCIL,
                       disclosures.c.decision == "allowed"))).first()
        told = (await _told(app_hub))[len(again):]
        assert [(d.event_id, d.decision) for d in told] == [(first.event_id, "allowed")]  # old: nothing
        d = told[0]
        assert d.agreement_id == h.sharing.decide(COUNCIL, first.event_type, d.at.date()).agreement_id
        assert d.person_id == carried.person_id and d.person_id
        assert d.field_groups == carried.field_groups
        assert f"released by {operator}" in d.reason and operator.startswith("hub-")
        assert (await _rows(app_hub, sub))[0].last_error is None  # recorded once: the mark cleared

        # The subject access look-up (`audit person`) shows it: allowed when queued, denied when held (twice),
        # allowed when released and sent.
        while await h.audit.extend():
            pass
        history = [e["decision"] for e in await h.audit.person(d.person_id)
                   if e["event_id"] == first.event_id and e["channel"] == "webhook"]
        assert history == ["allowed", "denied", "denied", "allowed"], history


async def test_a_replay_records_each_message_it_sends_again_and_holds_what_is_still_not_allowed(app_hub):
    h = app_hub.hub
    admin = await _admin(app_hub)
    async with _live_receiver() as (receiver, port):
        sub = await _subscribe(app_hub, {"channel": "webhook", "url": f"http://127.0.0.1:{port}/hook"})
        in_force = h.sharing
        h.sharing = _withdrawn()
        await push_scenario(app_hub, seed=3005)
        assert await _drain(h.deliverer) == 0
        rows = await _rows(app_hub, sub)
        types = {r.event_type for r in rows}
        assert "s117-entitlement-started" in types and len(types) >= 2
        before = len(await _told(app_hub))

        # In force again, covering one event type only: those released and sent are recorded allowed,
        # the rest held again (denied), none twice.
        h.sharing = _agreements(lambda rec: {**rec, "events": ["s117-entitlement-started"]})
        r = await app_hub.http.post(f"/v1/ops/subscriptions/{sub}/replay", params={"since": "2000-01-01T00:00:00Z"},
                                    headers=admin)
        assert r.status_code == 200 and r.json()["requeued"] == len(rows)
        await _drain(h.deliverer)
        after = await _rows(app_hub, sub)
        sent = [x for x in after if x.status == "delivered"]
        assert sent and receiver.accepted == [x.event_number for x in sent]
        told = (await _told(app_hub))[before:]
        assert sorted(d.event_id for d in told if d.decision == "allowed") == sorted(x.event_id for x in sent)
        assert sorted(d.event_id for d in told if d.decision == "denied") == \
            sorted(x.event_id for x in after if x.status == "held")
        assert all("released by hub-" in d.reason for d in told if d.decision == "allowed")
        h.sharing = in_force
