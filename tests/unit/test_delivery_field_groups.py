"""The field groups a queued message was rendered with are kept on its
delivery row (`deliveries.field_groups`, migration 0026), written when it is
queued (the dispatcher; `share` for the drift alerts), and every check at the
time of disclosure reads them there: the lease (every push channel), the pull
feed and the replay by event number. Review: each of those probed the
`disclosures` audit table per delivery (the message's `allowed` row) for them.

The checks' outcomes are the ones tests/unit/test_delivery_agreement_ended.py
pins; here, that they follow the row: with the message's `allowed`
disclosures gone from the audit table, a message whose row says it carries a
field group the agreement in force no longer grants is still held (the probe
found nothing, and only the event type was asked)."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select

from hub.clients import add_client
from hub.delivery import queue
from hub.sharing import SharingDecision
from hub.store.schema import deliveries, disclosures, subscriptions
from tests.support import push_scenario
from tests.unit.test_delivery_agreement_ended import (
    COUNCIL,
    _agreements,
    _drain,
    _due_now,
    _live_receiver,
    _rows,
    _subscribe,
)

def NARROWED(rec: dict) -> dict:  # noqa: N802 - the council's agreement without demographics and address
    return {**rec, "field_groups": [g for g in rec["field_groups"] if g not in ("demographics", "address")]}


async def _groups(app_hub, sub: str) -> dict[str, list[str] | None]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return {r.event_id: r.field_groups for r in (await conn.execute(
            select(deliveries.c.event_id, deliveries.c.field_groups)
            .where(deliveries.c.subscription_id == sub))).all()}


async def _allowed(app_hub, org: str) -> dict[str, list[str]]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return {r.event_id: r.field_groups for r in (await conn.execute(
            select(disclosures.c.event_id, disclosures.c.field_groups)
            .where(disclosures.c.recipient_org == org, disclosures.c.decision == "allowed"))).all()}


async def _forget_allowed_disclosures(app_hub) -> None:  # noqa: ANN001
    """The audit rows the checks used to probe, gone: only the delivery rows say what each message carries."""
    async with app_hub.hub.engine.begin() as conn:
        await conn.execute(delete(disclosures).where(disclosures.c.decision == "allowed"))


async def test_the_dispatcher_queues_each_message_with_the_field_groups_it_was_rendered_with(app_hub):
    """Each recipient's own: the council's messages carry demographics and address, BOB ICB's
    (QU9) do not; each row's groups are those its `allowed` disclosure names, sorted."""
    qu9 = {"X-API-Key": (await add_client(app_hub.hub.engine, "BOB ICB", "QU9", "icb", ["subscriptions:write"]))[1]}
    council = await _subscribe(app_hub, {"channel": "feed"})
    r = await app_hub.http.post("/v1/subscriptions", headers=qu9, json={"channel": "feed"})
    assert r.status_code == 201, r.text
    icb = r.json()["subscription_id"]
    await push_scenario(app_hub, seed=81)
    for sub, org in ((council, COUNCIL), (icb, "QU9")):
        kept, allowed = await _groups(app_hub, sub), await _allowed(app_hub, org)
        assert kept and kept == {event_id: allowed[event_id] for event_id in kept}
        assert all(groups == sorted(groups) for groups in kept.values())
    assert all({"demographics", "address"} <= set(g) for g in (await _groups(app_hub, council)).values())
    assert not any({"demographics", "address"} & set(g) for g in (await _groups(app_hub, icb)).values())


async def test_a_message_shared_one_at_a_time_is_queued_with_its_field_groups(app_hub):
    """`queue.share` (the drift alerts) keeps the groups it was given, sorted, as its disclosure does."""
    h = app_hub.hub
    sub = await _subscribe(app_hub, {"channel": "feed"})
    event_id = str(uuid.uuid4())
    async with h.engine.begin() as conn:
        queued = await queue.share(
            conn, org=COUNCIL, decision=SharingDecision(True, "DSA-X", frozenset({"responsibility"}), "allowed"),
            event_id=event_id, event_type="s117-reconciliation-drift", message_id=event_id,
            payload=lambda: h.protector.encrypt(b"{}"), correlation_id="c",
            field_groups=["responsibility", "explanations"])
    assert queued == 1
    assert await _groups(app_hub, sub) == {event_id: ["explanations", "responsibility"]}
    assert (await _allowed(app_hub, COUNCIL))[event_id] == ["explanations", "responsibility"]


async def test_a_row_queued_by_hand_has_no_field_groups_and_only_its_event_type_is_asked(app_hub):
    h = app_hub.hub
    sub = await _subscribe(app_hub, {"channel": "feed"})
    async with h.engine.begin() as conn:
        number = await queue.queue_delivery(conn, subscription_id=sub, event_id="e-1", message_id="m-1",
                                            event_type="s117-entitlement-started",
                                            payload=h.protector.encrypt(b"{}"), correlation_id="c")
        stored = (await conn.execute(select(deliveries.c.field_groups)
                                     .where(deliveries.c.subscription_id == sub))).scalar_one()
    assert number == 1 and stored is None
    h.sharing = _agreements(NARROWED)
    page = (await app_hub.http.get(f"/v1/feeds/{sub}", headers={"X-API-Key": app_hub.keys[COUNCIL]})).json()
    assert [i["event_id"] for i in page["items"]] == ["e-1"]


async def test_the_lease_holds_by_the_groups_on_the_row(app_hub):
    h = app_hub.hub
    async with _live_receiver() as (receiver, port):
        sub = await _subscribe(app_hub, {"channel": "webhook", "url": f"http://127.0.0.1:{port}/hook"})
        await push_scenario(app_hub, seed=82)  # rendered with demographics (names, birth date)
        await _forget_allowed_disclosures(app_hub)
        h.sharing = _agreements(NARROWED)
        await _due_now(app_hub, sub)
        assert await _drain(h.deliverer) == 0 and receiver.requests == 0
        rows = await _rows(app_hub, sub)
        assert rows and {r.status for r in rows} == {"held"}
        assert {r.last_error for r in rows} == {"held: field-groups at delivery"}


async def test_the_feed_holds_by_the_groups_on_the_row(app_hub):
    h = app_hub.hub
    sub = await _subscribe(app_hub, {"channel": "feed"})
    await push_scenario(app_hub, seed=83)
    await _forget_allowed_disclosures(app_hub)
    h.sharing = _agreements(NARROWED)
    page = (await app_hub.http.get(f"/v1/feeds/{sub}?limit=500", headers={"X-API-Key": app_hub.keys[COUNCIL]})).json()
    assert page["items"] == []
    rows = await _rows(app_hub, sub)
    assert rows and {r.status for r in rows} == {"held"} and all(r.attempts == 0 for r in rows)
    assert {r.last_error for r in rows} == {"held: field-groups at delivery"}


async def test_the_replay_by_event_number_withholds_by_the_groups_on_the_row(app_hub):
    h = app_hub.hub
    sub = await _subscribe(app_hub, {"channel": "feed"})
    await push_scenario(app_hub, seed=84)
    await _forget_allowed_disclosures(app_hub)
    h.sharing = _agreements(NARROWED)
    r = await app_hub.http.get(f"/v1/subscriptions/{sub}/events", headers={"X-API-Key": app_hub.keys[COUNCIL]})
    items = r.json()["items"]
    assert items and all("message" not in i and i["withheld"]["kind"] == "field-groups" for i in items)


async def test_a_message_whose_row_carries_no_narrowed_group_goes_whatever_the_disclosures_say(app_hub):
    """The other way round: a row whose groups the narrower agreement still grants is sent, even where
    an `allowed` disclosure of the event to the same organisation names more (the row is its own message's)."""
    h = app_hub.hub
    async with _live_receiver() as (receiver, port):
        sub = await _subscribe(app_hub, {"channel": "webhook", "url": f"http://127.0.0.1:{port}/hook"})
        await push_scenario(app_hub, seed=85)
        async with h.engine.begin() as conn:
            await conn.execute(deliveries.update().where(deliveries.c.subscription_id == sub)
                               .values(field_groups=["identity"]))
            assert (await conn.execute(select(subscriptions.c.org_code)
                                       .where(subscriptions.c.subscription_id == sub))).scalar_one() == COUNCIL
        h.sharing = _agreements(NARROWED)
        await _due_now(app_hub, sub)
        await _drain(h.deliverer)
        rows = await _rows(app_hub, sub)
        assert rows and {r.status for r in rows} == {"delivered"}
        assert receiver.accepted == [r.event_number for r in rows]
