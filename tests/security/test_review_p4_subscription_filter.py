"""Outside review (session 26, access and notifications): `POST
/v1/subscriptions` took an `event_types` filter naming event types the
organisation's agreements in force do not let it receive (and any filter
from an organisation no agreement names), `201`, a subscription that could
never deliver them, while `POST /v1/fhir/Subscription` refuses such a topic
(`422` at `Subscription.criteria`). Probe replayed against a running hub:
Worcestershire (its host-area agreement: moves out of area, transfers,
disputes) subscribed to `s117-entitlement-started` and `s117-review-due`,
and Oxfordshire (no agreement) to `s117-entitlement-started`: both `201`.
Now `422` naming `event_types` and each type outside the agreement; nothing
is kept."""

from __future__ import annotations

from sqlalchemy import func, select

from hub.clients import add_client
from hub.store.schema import subscriptions

WORCS, OXON = "E10000034", "E10000025"  # a narrow host-area agreement; no agreement at all


async def _count(app_hub) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(subscriptions))).scalar_one()


async def _key(app_hub, org: str) -> dict[str, str]:  # noqa: ANN001
    return {"X-API-Key": (await add_client(app_hub.hub.engine, org, org, "council", ["subscriptions:write"]))[1]}


async def test_a_filter_outside_the_agreement_is_refused_naming_the_field_and_the_types(app_hub):
    worcs = await _key(app_hub, WORCS)
    before = await _count(app_hub)
    r = await app_hub.http.post("/v1/subscriptions", headers=worcs, json={
        "channel": "feed", "event_types": ["s117-review-due", "s117-moved-out-of-area", "s117-entitlement-started"]})
    assert r.status_code == 422, r.text  # old: 201
    problem = r.json()
    assert problem["errors"][0]["field"] == "event_types"
    reason = problem["errors"][0]["reason"]
    assert reason.endswith("s117-entitlement-started, s117-review-due") and "moved-out-of-area" not in reason
    assert await _count(app_hub) == before  # nothing kept

    oxon = await _key(app_hub, OXON)
    r = await app_hub.http.post("/v1/subscriptions", headers=oxon,
                                json={"channel": "webhook", "url": "http://127.0.0.1:9/hook",
                                      "event_types": ["s117-entitlement-started"]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "event_types", r.text
    assert await _count(app_hub) == before


async def test_a_filter_within_the_agreement_and_no_filter_are_taken_as_before(app_hub):
    worcs = await _key(app_hub, WORCS)
    r = await app_hub.http.post("/v1/subscriptions", headers=worcs, json={
        "channel": "feed", "event_types": ["s117-moved-out-of-area", "s117-notification-corrected"]})
    assert r.status_code == 201, r.text  # a correction is owed under any agreement in force
    assert r.json()["event_types"] == ["s117-moved-out-of-area", "s117-notification-corrected"]
    r = await app_hub.http.post("/v1/subscriptions", headers=worcs, json={"channel": "feed"})
    assert r.status_code == 201 and r.json()["event_types"] is None
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys["E06000060"]}, json={
        "channel": "feed", "event_types": ["s117-entitlement-started", "s117-review-due"]})  # every event: "*"
    assert r.status_code == 201, r.text
