"""Numbers, dates and instants in a query or a path are written one way, and nothing else is read as one.

FastAPI hands query and path values to pydantic's lax mode, which read `?limit=5_0` as 50, `+5`, ` 5 `
and `5.0` as 5, `?as_of=1735689600` (a Unix time) and `2025-01-01T00:00:00Z` as 2025-01-01, and
`?since=1735689600` as an instant: a typo or another system's format became another page, another
cursor, another day's register or a replay from another time, answered 200 as if asked. Each is
refused now with a 422 naming the parameter (never echoing the value), as a JSON body's fields are
(tests/unit/test_no_coercion_*.py); the same request written as the contract says is taken."""

from __future__ import annotations

import pytest

from hub.clients import add_client
from tests.unit.test_feed_cursor_bounds import _queued_feed, _statuses, feed_hub  # noqa: F401 (the fixture)

NUMBERS = ["5_0", "+5", " 5", "5 ", "5.0", "0x5", "５"]  # the last a fullwidth digit
DATES = ["1735689600", "2025-01-01T00:00:00Z", "2025-01-01T00:00:00", "20250101", "2025-1-1"]
INSTANTS = ["1735689600", "1735689600.5", "2025-01-01", "01/01/2025 00:00"]

# (method, path, parameter as the error names it, where it goes, bad values, a good value)
CASES = [
    ("GET", "/v1/quarantine", "limit", "query", NUMBERS, "50"),
    ("GET", "/v1/ops/flows", "hours", "query", NUMBERS, "24"),
    ("GET", "/v1/ops/service-level", "days", "query", NUMBERS, "30"),
    ("GET", "/v1/ops/withheld", "days", "query", NUMBERS, "30"),
    ("GET", "/v1/feeds/no-such-feed", "after", "query", NUMBERS, "0"),
    ("GET", "/v1/feeds/no-such-feed", "limit", "query", NUMBERS, "10"),
    ("POST", "/v1/ops/dead-letters/{}/replay", "dead_letter_id", "path", NUMBERS, "50"),
    ("GET", "/v1/persons/no-such-person/s117", "as_of", "query", DATES, "2025-01-01"),
    ("POST", "/v1/reconciliations?format=ndjson", "as_of", "query", DATES, "2025-01-01"),
    ("GET", "/v1/subscriptions/no-such-subscription/events", "from", "query", NUMBERS, "1"),
    ("GET", "/v1/subscriptions/no-such-subscription/events", "to", "query", NUMBERS, "9"),
    ("GET", "/v1/subscriptions/no-such-subscription/events", "limit", "query", NUMBERS, "9"),
    ("GET", "/v1/subscriptions/no-such-subscription/deliveries", "limit", "query", NUMBERS, "9"),
    ("GET", "/v1/fhir/Subscription/no-such-subscription/$events", "eventsSinceNumber", "query", NUMBERS, "1"),
    ("GET", "/v1/fhir/Subscription/no-such-subscription/$events", "eventsUntilNumber", "query", NUMBERS, "9"),
    ("POST", "/v1/ops/subscriptions/no-such-subscription/replay", "since", "query", INSTANTS,
     "2025-01-01T00:00:00Z"),
]


def _named(r) -> list[str]:  # noqa: ANN001
    body = r.json()
    if body.get("resourceType") == "OperationOutcome":
        return [x for i in body["issue"] for x in i.get("expression", [])]
    return [e["field"] for e in body.get("errors", [])]


async def _ask(app_hub, admin: str, method: str, path: str, name: str, where: str, value: str):  # noqa: ANN001, ANN202
    if where == "path":
        return await app_hub.http.request(method, path.replace("{}", value.replace("/", "%2F")),
                                          headers={"X-API-Key": admin})
    return await app_hub.http.request(method, path, params={name: value}, headers={"X-API-Key": admin})


@pytest.mark.parametrize(("method", "path", "name", "where", "bad", "good"), CASES,
                         ids=[f"{c[0]} {c[1]} {c[2]}" for c in CASES])
async def test_a_parameter_is_read_only_as_the_contract_writes_it(app_hub, method, path, name, where, bad, good):  # noqa: ANN001
    admin = (await add_client(app_hub.hub.engine, "Hub operator", "HUB", "operator", ["hub:admin"]))[1]
    for value in bad:
        r = await _ask(app_hub, admin, method, path, name, where, value)
        assert r.status_code == 422, (value, r.text)
        assert r.headers["content-type"].startswith(  # under /v1/fhir/ an OperationOutcome
            "application/fhir+json" if path.startswith("/v1/fhir/") else "application/problem+json")
        assert _named(r) == [name], (value, r.text)
        if len(value.strip()) > 3:
            assert value.strip() not in r.text  # the reason, never the value
    # Written as the contract says, the parameter is taken (whatever the request then meets: an
    # unknown id's 404, a snapshot with no body).
    r = await _ask(app_hub, admin, method, path, name, where, good)
    assert r.status_code != 422 or name not in _named(r), r.text


@pytest.mark.parametrize("coerced", ["+2", "0_2", "2.0"])
async def test_a_last_event_id_is_only_digits(feed_hub, coerced):  # noqa: ANN001, F811
    """The SSE form's cursor (`Last-Event-ID`) as the query's: "+2" was read as 2 and acknowledged
    the messages up to 2 (delivered, never to be served again) on a header the subscriber did not
    write as an event number."""
    h = feed_hub
    sub, headers, _n = await _queued_feed(h, seed=77)
    await h.http.get(f"/v1/feeds/{sub}?limit=2", headers=headers)  # serves 1-2
    sse = {**headers, "Accept": "text/event-stream"}
    r = await h.http.get(f"/v1/feeds/{sub}", headers={**sse, "Last-Event-ID": coerced})
    assert r.status_code == 422, r.status_code
    assert [e["field"] for e in r.json()["errors"]] == ["Last-Event-ID"]
    assert set((await _statuses(h, sub, headers)).values()) == {"pending"}  # nothing acknowledged


async def test_the_openapi_document_still_states_each_numbers_bounds(app_hub):  # noqa: ANN001
    """The digits-only check must not hide the bounds: placed before `Query(ge=, le=)` it published
    `ge`/`le` (not JSON Schema) for minimum/maximum, so clients and schema-driven tests lost them."""
    doc = (await app_hub.http.get("/openapi.json")).json()

    def schema(path: str, method: str, name: str) -> dict:
        (p,) = [p for p in doc["paths"][path][method]["parameters"] if p["name"] == name]
        s = p["schema"]
        return next((x for x in s.get("anyOf", []) if x.get("type") != "null"), s)

    assert {k: schema("/v1/quarantine", "get", "limit")[k] for k in ("minimum", "maximum")} == \
        {"minimum": 1, "maximum": 1000}
    assert schema("/v1/ops/flows", "get", "hours")["maximum"] == 24 * 366
    assert schema("/v1/subscriptions/{subscription_id}/events", "get", "from")["minimum"] == 1
    assert schema("/v1/subscriptions/{subscription_id}/events", "get", "to")["minimum"] == 1
    assert schema("/v1/ops/dead-letters/{dead_letter_id}/replay", "post", "dead_letter_id")["minimum"] == 1
    assert schema("/v1/persons/{person_id}/s117", "get", "as_of") == {"type": "string", "format": "date"}
    assert schema("/v1/ops/subscriptions/{subscription_id}/replay", "post", "since")["format"] == "date-time"
