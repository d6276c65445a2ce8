"""Bodies FastAPI parses (subscriptions, disputes, exports, the person look-up...) that are not JSON are
answered as every other bad input: a 422 problem naming `(body)` and why, never the text. Bytes that are
not UTF-8 were a bare `400 There was an error parsing the body` naming nothing; a JSON syntax error named
the character offset as if it were a field (`"field": "1"`). A 405 keeps its `Allow` header (RFC 9110
15.5.6), which the problem handler dropped. (Found by tests/security/test_api_schema_fuzz.py's explorer.)"""

from __future__ import annotations

import pytest

COUNCIL = "E06000060"


@pytest.mark.parametrize(("path", "key"), [("/v1/subscriptions", COUNCIL), ("/v1/persons/lookup", COUNCIL),
                                           ("/v1/disputes", "trust")])
@pytest.mark.parametrize(("body", "reason"), [
    (b'{"url": "caf\xe9"}', "must be JSON text in UTF-8"),
    (b"8.Q~4eEh0\x16\xff", "must be JSON text in UTF-8"),
    (b'{"url": 1,}', "is not valid JSON"),
    (b"{", "is not valid JSON"),
])
async def test_a_body_that_is_not_json_is_a_422_naming_the_body(app_hub, path, key, body, reason):  # noqa: ANN001
    r = await app_hub.http.post(path, content=body, headers={"X-API-Key": app_hub.keys[key],
                                                             "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    (error,) = r.json()["errors"]
    assert error["field"] == "(body)" and error["reason"].startswith(reason), error
    assert "caf" not in r.text  # the reason, never the text


async def test_a_405_says_which_methods_are_allowed(app_hub):  # noqa: ANN001
    r = await app_hub.http.request("TRACE", "/health")
    assert r.status_code == 405 and r.headers["content-type"].startswith("application/problem+json")
    assert "GET" in r.headers["allow"]
    r = await app_hub.http.delete("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]})
    assert r.status_code == 405 and "POST" in r.headers["allow"], dict(r.headers)
