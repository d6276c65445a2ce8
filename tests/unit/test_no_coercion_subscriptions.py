"""Subscriptions: a webhook's `pipeline` (POSTs in flight) is a whole JSON number and a FHIR
subscription's heartbeat period a whole number of seconds, nothing a lax int reads as one. `"8"` and
`8.0` were read as 8 and `true` as 1 for `pipeline`; `true` was taken as a heartbeat of 1 second
(a heartbeat sent every second). Each is refused naming the field, and nothing is subscribed."""

from __future__ import annotations

import orjson
import pytest
from sqlalchemy import func, select

from hub.fhir.subscriptions import HEARTBEAT_EXT, PAYLOAD_CONTENT_EXT, TOPIC_BASE
from hub.store.schema import subscriptions

COUNCIL = "E06000060"
URL = "http://127.0.0.1:9199/hook"


async def _count(app_hub) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(subscriptions))).scalar_one()
        await conn.rollback()
    return n


@pytest.mark.parametrize("coerced", ["8", 8.0, True])
async def test_pipeline_is_only_a_whole_json_number(app_hub, coerced) -> None:  # noqa: ANN001
    h = {"X-API-Key": app_hub.keys[COUNCIL]}
    before = await _count(app_hub)
    r = await app_hub.http.post("/v1/subscriptions", headers=h,
                                json={"url": URL, "secret": "s" * 32, "pipeline": coerced})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in r.json()["errors"]] == ["pipeline"]
    assert await _count(app_hub) == before
    r = await app_hub.http.post("/v1/subscriptions", headers=h, json={"url": URL, "secret": "s" * 32, "pipeline": 8})
    assert r.status_code == 201 and r.json()["pipeline"] == 8


async def test_a_heartbeat_of_true_is_not_one_second(app_hub) -> None:  # noqa: ANN001
    channel = {"type": "rest-hook", "endpoint": URL, "payload": "application/fhir+json",
               "_payload": {"extension": [{"url": PAYLOAD_CONTENT_EXT, "valueCode": "id-only"}]},
               "extension": [{"url": HEARTBEAT_EXT, "valueUnsignedInt": True}]}
    resource = {"resourceType": "Subscription", "status": "requested", "reason": "S117 register",
                "criteria": f"{TOPIC_BASE}/s117-entitlement-started", "channel": channel}
    before = await _count(app_hub)
    r = await app_hub.http.post("/v1/fhir/Subscription", content=orjson.dumps(resource),
                                headers={"X-API-Key": app_hub.keys[COUNCIL], "Content-Type": "application/fhir+json"})
    assert r.status_code == 422, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [i["expression"] for i in outcome["issue"]] == [
        ["Subscription.channel.extension(backport-heartbeat-period)"]]
    assert await _count(app_hub) == before
