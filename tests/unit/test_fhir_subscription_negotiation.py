"""The FHIR subscription routes speak FHIR R4 JSON only, both ways, as the Task and $process-message
routes do (hub/fhir/negotiation.py): a client asking for XML or another FHIR version (`Accept`,
`_format`) is a 406, a Subscription sent in another format or with no Content-Type a 415, each an
OperationOutcome naming where, and nothing is made; before, each was answered in JSON regardless (a
Subscription labelled XML was read as JSON and made)."""

from __future__ import annotations

import orjson
from sqlalchemy import func, select

from hub.fhir.subscriptions import TOPIC_BASE
from hub.store.schema import subscriptions

COUNCIL = "E06000060"
RESOURCE = {"resourceType": "Subscription", "status": "requested", "reason": "S117 register",
            "criteria": f"{TOPIC_BASE}/s117-entitlement-started",
            "channel": {"type": "rest-hook", "endpoint": "https://council.invalid/fhir", "payload": "application/fhir+json"}}


def _names(r, status: int, where: str) -> None:  # noqa: ANN001
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    (issue,) = body["issue"]
    assert issue["code"] == "not-supported" and issue["expression"] == [where], issue


async def _made(app_hub) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(subscriptions))).scalar_one()
        await conn.rollback()
    return n


async def test_fhir_subscriptions_refuse_what_is_not_fhir_r4_json_and_make_nothing(app_hub):
    key = {"X-API-Key": app_hub.keys[COUNCIL]}
    body = orjson.dumps(RESOURCE)
    for content_type in ("application/fhir+xml", "text/plain", "application/fhir+json; fhirVersion=5.0", None):
        headers = {**key, **({"Content-Type": content_type} if content_type else {})}
        _names(await app_hub.http.post("/v1/fhir/Subscription", content=body, headers=headers), 415, "Content-Type")
    r = await app_hub.http.post("/v1/fhir/Subscription", content=body,
                                headers={**key, "Content-Type": "application/fhir+json", "Accept": "application/fhir+xml"})
    _names(r, 406, "Accept")
    assert await _made(app_hub) == 0

    _names(await app_hub.http.get("/v1/fhir/SubscriptionTopic", headers={**key, "Accept": "application/fhir+xml"}),
           406, "Accept")
    _names(await app_hub.http.get("/v1/fhir/SubscriptionTopic?_format=xml", headers=key), 406, "_format")
    r = await app_hub.http.get("/v1/fhir/SubscriptionTopic", headers={**key, "Accept": "application/fhir+json"})
    assert r.status_code == 200 and r.json()["resourceType"] == "Bundle"

    # Labelled as FHIR JSON, it is read: here refused for its endpoint (no such host), naming it.
    r = await app_hub.http.post("/v1/fhir/Subscription", content=body,
                                headers={**key, "Content-Type": "application/fhir+json; fhirVersion=4.0"})
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Subscription.channel.endpoint"], r.text
