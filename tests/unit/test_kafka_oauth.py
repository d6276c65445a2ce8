"""The OAUTHBEARER token provider (hub/bus/kafka_oauth.py) against a token endpoint faked with httpx's
MockTransport (the real broker and a real token server: tests/e2e/test_kafka_oauthbearer.py): the
client-credentials grant as RFC 6749 says it, one token shared and fetched again before it ends, a
bounded wait, and failures that name the status and the OAuth error code, never the secret or the token."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx
import orjson
import pytest
from aiokafka.abc import AbstractTokenProvider

from hub.bus.kafka_oauth import (
    OAuthBearerTokenProvider,
    OAuthTokenRefused,
    OAuthTokenUnavailable,
    refresh_margin,
)
from hub.bus.kafka_security import misconfiguration
from hub.observability.logging import configure_logging

URL = "https://idp.example.nhs.uk/oauth2/token"
SETTING = "S117_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL"
CLIENT_ID = "s117-hub@trust"
SECRET = "cs+/7e:é-never-shown"  # characters RFC 6749 §2.3.1 has form-urlencoded before Basic
TOKEN = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJodWIifQ."


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Endpoint:
    """A token endpoint: records each request; answers with `answer(n)` (status, JSON body or bytes)."""

    def __init__(self, answer: Callable[[int], tuple[int, object]] | None = None, delay: float = 0.0) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = answer or (lambda n: (200, {"access_token": f"{TOKEN}{n}", "token_type": "Bearer",
                                                  "expires_in": 100}))
        self.delay = delay

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        status, body = self.answer(len(self.requests))
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers={"Content-Type": "application/json"})

    def form(self, n: int = 0) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.requests[n].content.decode()).items()}


def provider(endpoint: Endpoint, clock: Clock | None = None, **kw: object) -> OAuthBearerTokenProvider:
    return OAuthBearerTokenProvider(token_url=URL, client_id=CLIENT_ID, client_secret=SECRET, setting=SETTING,
                                    transport=httpx.MockTransport(endpoint), clock=clock or Clock(), **kw)


async def test_the_client_credentials_grant_with_http_basic_as_rfc_6749_says() -> None:
    endpoint = Endpoint()
    p = provider(endpoint, scope="kafka s117.write", audience="urn:kafka:bus",
                 extensions={"logicalCluster": "lkc-1"})
    assert isinstance(p, AbstractTokenProvider)
    assert await p.token() == f"{TOKEN}1"
    request = endpoint.requests[0]
    assert request.method == "POST" and str(request.url) == URL
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert endpoint.form() == {"grant_type": "client_credentials", "scope": "kafka s117.write",
                               "audience": "urn:kafka:bus"}
    # §2.3.1: the id and the secret form-urlencoded, then "id:secret" in Base64.
    scheme, _, encoded = request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "s117-hub%40trust:cs%2B%2F7e%3A%C3%A9-never-shown"
    assert p.extensions() == {"logicalCluster": "lkc-1"}
    assert SECRET not in repr(p) and CLIENT_ID not in repr(p)


async def test_the_client_credentials_in_the_body_when_asked() -> None:
    endpoint = Endpoint()
    await provider(endpoint, client_auth="body").token()
    assert "Authorization" not in endpoint.requests[0].headers
    assert endpoint.form() == {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": SECRET}
    with pytest.raises(ValueError, match="client_auth"):
        provider(endpoint, client_auth="jwt")


async def test_one_token_shared_and_fetched_again_before_it_ends() -> None:
    endpoint, clock = Endpoint(delay=0.05), Clock()
    p = provider(endpoint, clock)
    # Many connections at once (aiokafka opens one a broker): one request.
    assert await asyncio.gather(*(p.token() for _ in range(5))) == [f"{TOKEN}1"] * 5
    assert len(endpoint.requests) == 1
    # expires_in 100: kept until 30 s are left (a fifth of its life, but at least half a minute) ...
    assert refresh_margin(100) == 30
    clock.now += 69
    assert await p.token() == f"{TOKEN}1" and len(endpoint.requests) == 1
    # ... then fetched again, before it ends: a connection opened now carries a token the broker accepts.
    clock.now += 2
    assert await p.token() == f"{TOKEN}2" and len(endpoint.requests) == 2
    assert p.fetches == 2
    # A long-lived token is fetched again when a fifth of its life is left; a short one at half.
    assert refresh_margin(3600) == 720 and refresh_margin(10) == 5


async def test_an_early_fetch_that_fails_keeps_the_token_in_force_until_it_ends() -> None:
    clock = Clock()
    endpoint = Endpoint(lambda n: (200, {"access_token": TOKEN, "expires_in": 100}) if n == 1
                        else (503, {"error": "temporarily_unavailable"}))
    p = provider(endpoint, clock)
    await p.token()
    clock.now += 80  # within the margin: fetched again, refused, the token still in force
    assert await p.token() == TOKEN and len(endpoint.requests) == 2
    clock.now += 1  # within RETRY_AFTER of the failure: the endpoint is not asked again
    assert await p.token() == TOKEN and len(endpoint.requests) == 2
    clock.now += 20  # the token has ended: the failure is the caller's
    with pytest.raises(OAuthTokenUnavailable) as caught:
        await p.token()
    assert str(caught.value).endswith(f"{SETTING}: the token endpoint answered 503 (temporarily_unavailable)")
    assert len(endpoint.requests) == 3


async def test_a_refusal_names_the_status_and_error_code_only_and_is_a_misconfiguration(
        capsys, restore_logging) -> None:  # noqa: ANN001
    configure_logging("INFO")
    answer = {"error": "invalid_client", "error_description": f"client {CLIENT_ID} secret {SECRET} wrong",
              "access_token": TOKEN}
    clock = Clock()
    endpoint = Endpoint(lambda n: (401, answer))
    p = provider(endpoint, clock)
    with pytest.raises(OAuthTokenRefused) as caught:
        await p.token()
    text = str(caught.value)
    assert text == f"OAuthTokenRefused: {SETTING}: the token endpoint answered 401 (invalid_client)"
    # kafka_security tells it from an outage: `misconfigured: authentication`, in readiness and the metric.
    assert misconfiguration(caught.value) == "authentication"
    # Asked again at once (aiokafka reconnecting): the same error, the endpoint not asked again.
    with pytest.raises(OAuthTokenRefused):
        await p.token()
    assert len(endpoint.requests) == 1
    clock.now += 3
    with pytest.raises(OAuthTokenRefused):
        await p.token()
    assert len(endpoint.requests) == 2
    out = capsys.readouterr().out
    lines = [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]
    refused = [line for line in lines if line["event"] == "kafka oauth token refused"]
    assert len(refused) == 1, lines  # said once while it lasts
    assert refused[0]["error_kind"] == "misconfigured: authentication"
    assert "401 (invalid_client)" in refused[0]["problem"]
    for secret in (SECRET, TOKEN, "error_description", "wrong", base64.b64encode(SECRET.encode()).decode()):
        assert secret not in out and secret not in text


@pytest.mark.parametrize(("status", "body", "kind", "says"), [
    (400, {"error": "invalid_scope"}, OAuthTokenRefused, "answered 400 (invalid_scope)"),
    (404, b"<html>not here</html>", OAuthTokenRefused, "answered 404"),
    (302, b"", OAuthTokenRefused, "answered 302"),
    (401, {"error": f"bad\"{SECRET}"}, OAuthTokenRefused, "answered 401"),  # not an RFC 6749 error code: not said
    (500, {"error": "server_error"}, OAuthTokenUnavailable, "answered 500 (server_error)"),
    (429, b"", OAuthTokenUnavailable, "answered 429"),
    (200, b"<html>a login page</html>", OAuthTokenRefused, "answered 200 with no JSON object"),
    (200, {"token_type": "Bearer"}, OAuthTokenRefused, "answered 200 without a usable access_token"),
    (200, {"access_token": f"{TOKEN} \x01auth=x"}, OAuthTokenRefused, "answered 200 without a usable access_token"),
    (200, {"access_token": TOKEN, "expires_in": "soon"}, OAuthTokenRefused,
     "answered 200 with an expires_in that is not a positive number"),
    (200, {"access_token": TOKEN, "expires_in": 0}, OAuthTokenRefused,
     "answered 200 with an expires_in that is not a positive number"),
    (200, b"x" * 70_000, OAuthTokenRefused, "answered 200 with more than 65536 bytes"),
])
async def test_what_is_not_a_token_is_named_without_the_answer(status, body, kind, says) -> None:  # noqa: ANN001
    with pytest.raises(kind) as caught:
        await provider(Endpoint(lambda n: (status, body))).token()
    text = str(caught.value)
    assert text.endswith(f"{SETTING}: the token endpoint {says}"), text
    assert SECRET not in text and TOKEN not in text and "login" not in text
    assert (misconfiguration(caught.value) == "authentication") == (kind is OAuthTokenRefused)


async def test_expires_in_as_digits_and_absent() -> None:
    clock = Clock()
    p = provider(Endpoint(lambda n: (200, {"access_token": TOKEN, "expires_in": "3599"})), clock)
    await p.token()
    clock.now += 3599 - 720 - 1
    await p.token()
    assert p.fetches == 1
    # Without expires_in (only RECOMMENDED): kept five minutes, fetched again a minute before.
    clock2 = Clock()
    p2 = provider(Endpoint(lambda n: (200, {"access_token": TOKEN})), clock2)
    await p2.token()
    clock2.now += 239
    await p2.token()
    assert p2.fetches == 1
    clock2.now += 2
    await p2.token()
    assert p2.fetches == 2


async def test_an_endpoint_that_does_not_answer_is_given_up_in_bounded_time() -> None:
    p = provider(Endpoint(delay=5.0), timeout=0.2)
    loop = asyncio.get_running_loop()
    begun = loop.time()
    with pytest.raises(OAuthTokenUnavailable) as caught:
        await p.token()
    assert loop.time() - begun < 2.0
    assert str(caught.value).endswith(f"{SETTING}: the token endpoint did not answer within 0.2s")
    assert misconfiguration(caught.value) is None  # an outage: retried as ever


async def test_an_endpoint_that_cannot_be_reached_names_the_class_not_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url}")

    p = OAuthBearerTokenProvider(token_url=URL, client_id=CLIENT_ID, client_secret=SECRET, setting=SETTING,
                                 transport=httpx.MockTransport(refuse))
    with pytest.raises(OAuthTokenUnavailable) as caught:
        await p.token()
    assert str(caught.value).endswith(f"{SETTING}: the token endpoint could not be reached (ConnectError)")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
