"""A pull feed's message held because the council's agreement no longer allowed it (a `denied`
disclosure), released by an operator once an agreement allowed it again, and read: recorded as
disclosed again (`allowed`, channel `feed`, the operator named), once, as a push channel's send is
(tests/security/test_audit_gaps_review30_release.py). Before, the record showed it allowed when
queued, denied when held, then nothing, though the council read it. ASGI app, real SQLite store."""

from __future__ import annotations

from sqlalchemy import select

from hub.store.schema import disclosures
from tests.support import push_scenario
from tests.unit.test_delivery_agreement_ended import COUNCIL, _admin, _agreements, _rows, _subscribe


async def _told(app_hub, event_id: str) -> list:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        rows = list((await conn.execute(
            select(disclosures).where(disclosures.c.recipient_org == COUNCIL, disclosures.c.event_id == event_id)
            .order_by(disclosures.c.disclosure_id))).all())
        await conn.rollback()
    return rows


async def test_a_held_feed_message_released_and_read_is_recorded_allowed_naming_the_operator(app_hub):
    h = app_hub.hub
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    sub = await _subscribe(app_hub, {"channel": "feed"})
    await push_scenario(app_hub, seed=76)
    in_force = h.sharing
    h.sharing = _agreements(lambda rec: {**rec, "events": ["s117-entitlement-started"]})
    page = (await app_hub.http.get(f"/v1/feeds/{sub}?limit=500", headers=key)).json()
    held = [r for r in await _rows(app_hub, sub) if r.status == "held"]
    assert held
    target = held[0]
    assert [(d.decision, d.channel) for d in await _told(app_hub, target.event_id)][-1] == ("denied", "feed")

    h.sharing = in_force
    admin = await _admin(app_hub)
    assert (await app_hub.http.post(f"/v1/ops/deliveries/{target.delivery_id}/retry",
                                    headers=admin)).status_code == 200
    again = (await app_hub.http.get(f"/v1/feeds/{sub}?after={target.event_number - 1}&limit=1", headers=key)).json()
    assert [i["event_id"] for i in again["items"]] == [target.event_id]
    told = await _told(app_hub, target.event_id)
    assert [d.decision for d in told][-2:] == ["denied", "allowed"]
    last = told[-1]
    assert last.channel == "feed" and "released by" in last.reason and last.person_id == told[0].person_id
    assert last.agreement_id is not None and last.field_groups
    # Read again (the cursor rewound once more): no second record.
    again = (await app_hub.http.get(f"/v1/feeds/{sub}?after={target.event_number - 1}&limit=1", headers=key)).json()
    assert len(await _told(app_hub, target.event_id)) == len(told)
    assert page["items"]
