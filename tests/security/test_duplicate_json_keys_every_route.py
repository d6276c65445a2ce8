"""Every other JSON body under /v1/ (subscriptions, disputes, workflow actions, FHIR Subscription and
Task, operations) is checked by the front (hub/api/limits.py) before its route reads it: an object
naming a key twice is a 422 naming the key's path and "duplicate key", never a value, and nothing is
done. Before, `{"channel": "webhook", ..., "channel": "feed"}` made a feed subscription (201): the
parser kept the last value. Routes that quarantine their input check it themselves
(tests/security/test_duplicate_json_keys.py)."""

from __future__ import annotations

from sqlalchemy import func, select

from hub.api.limits import CHECKS_OWN_JSON
from hub.codec import DUPLICATE_KEY
from hub.store.schema import subscriptions

COUNCIL = "E06000060"
TWICE = b'{"channel": "webhook", "url": "https://council.example/hook", "channel": "feed"}'


async def _subscriptions(hub) -> int:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(subscriptions))).scalar_one()


async def test_a_subscription_naming_channel_twice_is_refused_and_nothing_made(app_hub) -> None:  # noqa: ANN001
    headers = {"X-API-Key": app_hub.keys[COUNCIL], "Content-Type": "application/json"}
    before = await _subscriptions(app_hub.hub)
    r = await app_hub.http.post("/v1/subscriptions", headers=headers, content=TWICE)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"] == [{"field": "channel", "reason": DUPLICATE_KEY}]
    assert "feed" not in r.text and "webhook" not in r.text  # no value quoted
    assert await _subscriptions(app_hub.hub) == before


async def test_a_chunked_body_and_one_without_a_content_type_are_checked_too(app_hub) -> None:  # noqa: ANN001
    key = {"X-API-Key": app_hub.keys[COUNCIL]}

    async def chunks():  # noqa: ANN202 - no Content-Length: sent chunked
        yield TWICE[:20]
        yield TWICE[20:]

    r = await app_hub.http.post("/v1/subscriptions", headers={**key, "Content-Type": "application/json"},
                                content=chunks())
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "channel", r.text
    r = await app_hub.http.post("/v1/subscriptions", headers=key, content=TWICE)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "channel", r.text


async def test_a_fhir_body_naming_a_key_twice_is_an_operation_outcome(app_hub) -> None:  # noqa: ANN001
    body = (b'{"resourceType": "Subscription", "status": "requested", "status": "active", '
            b'"reason": "s117", "criteria": "x", "channel": {"type": "rest-hook", "type": "email"}}')
    r = await app_hub.http.post("/v1/fhir/Subscription", content=body, headers={
        "X-API-Key": app_hub.keys[COUNCIL], "Content-Type": "application/fhir+json"})
    assert r.status_code == 422, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [i["expression"] for i in outcome["issue"]] == [["status"], ["channel.type"]]
    assert all(DUPLICATE_KEY in i["diagnostics"] for i in outcome["issue"])


async def test_the_same_body_with_each_key_once_is_taken(app_hub) -> None:  # noqa: ANN001
    headers = {"X-API-Key": app_hub.keys[COUNCIL], "Content-Type": "application/json"}
    r = await app_hub.http.post("/v1/subscriptions", headers=headers, content=b'{"channel": "feed"}')
    assert r.status_code == 201, r.text
    # A string holding an escaped quote then a colon is no key: not refused.
    r = await app_hub.http.post("/v1/disputes", headers=headers,
                                content=b'{"reason": "a \\"quoted\\": word", "reason2": 1}')
    assert r.status_code != 422 or all(e["reason"] != DUPLICATE_KEY for e in r.json().get("errors", [])), r.text


def test_the_routes_that_quarantine_check_their_own_bodies() -> None:
    assert ("POST", "/v1/register-changes") in CHECKS_OWN_JSON and ("POST", "/v1/subscriptions") not in CHECKS_OWN_JSON
