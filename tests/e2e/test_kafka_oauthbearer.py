"""The hub on a Kafka cluster that takes SASL/OAUTHBEARER (hub/bus/kafka_oauth.py), with real hub
processes (`s117hub serve`), a broker of the module's own with an OAUTHBEARER listener over TLS
(tests/servers/kafka.py `oauth_kafka`: Kafka's unsecured validator, the scope `kafka` required,
sessions ending when their token does) and a real OAuth 2.0 token endpoint here (http.server in a
thread, on loopback) minting unsigned JWTs for the client-credentials grant.

- The right client secret: the hub gets a token (HTTP Basic, the scope asked for), relays the outbox,
  its dispatcher consumes and a `kafka` subscription publishes, all over OAUTHBEARER; the tokens live
  a few seconds, the broker ends each session when its token does, and the hub fetches a new token
  before the old one ends and carries on (changes made after the first token ended are published).
- A wrong client secret: the token endpoint answers 401 `invalid_client`; `/health/ready` stays 200
  and names `misconfigured: authentication`. Never the secret or a token in the hub's log."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote_plus

import httpx
import pytest

from tests.e2e.conftest import make_clients
from tests.e2e.test_kafka_security import COUNCIL, _on_topic, _post, _subscribe_kafka, _waiting
from tests.e2e.test_mllp import nhs_numbers
from tests.servers.kafka import OAUTH_SCOPE, OAuthBroker
from tests.servers.token_endpoint import answer_json, serving
from tests.support import HubProcess

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CLIENT_ID = "s117-hub"
SECRET = "oauth-client-secret-3e8f0a"
WRONG = "wrong-client-secret-91c2d7"
LIFETIME = 6  # seconds a token lives: the hub fetches a new one 3 s before it ends
NHS = nhs_numbers()[-9:-6]
assert COUNCIL  # the council whose `kafka` subscription the helpers make (s117.out.e06000060)


@dataclass
class Issued:
    at: float
    client_ok: bool
    scope: str
    token: str = ""


@dataclass
class TokenEndpoint:
    """An OAuth 2.0 token endpoint: the client-credentials grant, the client authenticated by HTTP Basic
    (RFC 6749 §2.3.1: id and secret form-urlencoded), answering an unsigned JWT (`alg: none`, the
    principal `hub` in `sub`, the scope asked for) that lives LIFETIME seconds, or 401 invalid_client."""

    server: ThreadingHTTPServer
    issued: list[Issued] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/oauth2/token"

    def tokens(self) -> list[Issued]:
        return [i for i in self.issued if i.token]


def _unsigned_jwt(claims: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}."


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    endpoint: TokenEndpoint

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            scheme, _, encoded = (self.headers.get("Authorization") or "").partition(" ")
            user, _, password = base64.b64decode(encoded or "").decode().partition(":")
            client_ok = (scheme == "Basic" and unquote_plus(user) == CLIENT_ID and unquote_plus(password) == SECRET
                         and form.get("grant_type") == "client_credentials"
                         and self.path == "/oauth2/token"
                         and self.headers.get("Content-Type") == "application/x-www-form-urlencoded")
            issued = Issued(time.monotonic(), client_ok, form.get("scope", ""))
            if client_ok:
                now = time.time()
                issued.token = _unsigned_jwt({"sub": "hub", "iat": now, "exp": now + LIFETIME,
                                              "scope": issued.scope.split()})
                status, body = 200, {"access_token": issued.token, "token_type": "Bearer", "expires_in": LIFETIME}
            else:
                status, body = 401, {"error": "invalid_client", "error_description": "client authentication failed"}
            endpoint.issued.append(issued)
            answer_json(self, status, json.dumps(body).encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoint = TokenEndpoint(server)
    with serving(server):
        yield endpoint


@pytest.fixture
def hubs() -> Iterator[list[HubProcess]]:
    started: list[HubProcess] = []
    try:
        yield started
    finally:
        for hub in started:
            hub.stop()


def _hub(tmp: Path, sharing_file: Path, broker: OAuthBroker, endpoint: TokenEndpoint, secret: str) -> HubProcess:
    assert broker.tls is not None
    secret_file = tmp / "kafka-client-secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    return HubProcess(tmp, sharing_path=sharing_file, bus_url=f"kafka://{broker.oauth_bootstrap}", own_group=True,
                      S117_KAFKA_PARTITIONS="1", S117_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
                      S117_KAFKA_SSL_CA_FILE=str(broker.tls.ca_file), S117_KAFKA_SASL_MECHANISM="OAUTHBEARER",
                      S117_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL=endpoint.url,
                      S117_KAFKA_SASL_OAUTHBEARER_CLIENT_ID=CLIENT_ID,
                      S117_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET_FILE=str(secret_file),
                      S117_KAFKA_SASL_OAUTHBEARER_SCOPE=OAUTH_SCOPE)


def _no_secret_in(logs: str, endpoint: TokenEndpoint) -> None:
    assert SECRET not in logs and WRONG not in logs
    for issued in endpoint.tokens():
        assert issued.token.split(".")[1] not in logs  # not a token, nor its claims
    assert "Traceback" not in logs


async def test_the_hub_gets_tokens_from_the_endpoint_and_works_over_oauthbearer_as_they_expire(
        oauth_kafka, token_endpoint, tmp_path, sharing_file, hubs):
    hub = _hub(tmp_path, sharing_file, oauth_kafka, token_endpoint, SECRET)
    keys = await make_clients(hub.db_url)
    hubs.append(hub)
    await hub.start(timeout=60)
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
        r = await http.get("/health/ready")
        assert r.status_code == 200 and "waiting" not in r.json(), r.text  # the topic made over OAUTHBEARER
        assert token_endpoint.tokens(), "the hub asked the token endpoint"
        assert all(i.client_ok and i.scope == OAUTH_SCOPE for i in token_endpoint.issued), token_endpoint.issued
        await _subscribe_kafka(http, keys)
        events = await _post(http, keys["trust"], NHS[0])
        seen = await _on_topic(oauth_kafka, events)
        assert set(events) <= seen, (events, seen)  # relayed, consumed, published: OAUTHBEARER all
        # Every token the hub had so far has ended, and the broker ended the sessions they opened: the
        # hub's clients carry on with new tokens, fetched before the old ones ended.
        first = token_endpoint.tokens()[-1].at
        await asyncio.sleep(max(0.0, first + LIFETIME + 2 - time.monotonic()))
        later = await _post(http, keys["trust"], NHS[1])
        seen = await _on_topic(oauth_kafka, later)
        assert set(later) <= seen, (later, seen)
        assert any(i.at > first for i in token_endpoint.tokens()), token_endpoint.issued  # fetched again
        assert all(i.client_ok for i in token_endpoint.issued), token_endpoint.issued
        r = await http.get("/health/ready")
        assert r.status_code == 200 and "waiting" not in r.json(), r.text
        metrics = (await http.get("/metrics")).text
        assert 's117_kafka_misconfigured{cause="authentication",cluster="bus"} 1.0' not in metrics
    hub.stop()
    logs = hub.logs()
    assert '"event":"kafka oauth token fetched"' in logs, logs[-3000:]
    _no_secret_in(logs, token_endpoint)


async def test_a_wrong_client_secret_is_named_authentication_while_changes_are_kept(
        oauth_kafka, token_endpoint, tmp_path, sharing_file, hubs):
    hub = _hub(tmp_path, sharing_file, oauth_kafka, token_endpoint, WRONG)
    keys = await make_clients(hub.db_url)
    hubs.append(hub)
    await hub.start(timeout=60)
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
        body = await _waiting(http, "bus", "misconfigured: authentication")
        assert body["status"] == "ready"
        await _post(http, keys["trust"], NHS[2])  # accepted, kept in the outbox
    assert token_endpoint.issued and not token_endpoint.tokens()  # asked, refused
    hub.stop()
    logs = hub.logs()
    assert '"event":"kafka oauth token refused"' in logs, logs[-3000:]
    assert "answered 401 (invalid_client)" in logs
    assert "client authentication failed" not in logs  # the answer's error_description is not repeated
    _no_secret_in(logs, token_endpoint)
