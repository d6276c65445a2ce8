"""A council's consumer of the hub's outbound feeds, built from the README alone, against the hub
as a real process over real sockets (one hub for the module): what the review of session 31 found
a careful subscriber could not do, or would be misled by.

- A webhook or FHIR rest-hook secret can be rotated (`POST /v1/subscriptions/{id}/secret`): the
  messages after it are signed under the new secret, with the same event numbers going on; before,
  the only way was to delete the subscription and make another, numbered from 1 again, the old
  one's pending messages stranded.
- The subscription API's times (`created_at`, `suspended_at`, a delivery's `queued_at`,
  `created_at`, `delivered_at`, `next_attempt_at`) carry their offset: in embedded mode (SQLite)
  they came without one (`2026-12-04T19:21:47.423185`), on PostgreSQL with `+00:00`, so a
  consumer an hour off UTC (BST) read a retry as due an hour away."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from hub.sample_data import synthetic_nhs_number
from tests.e2e.conftest import SHARING, make_clients
from tests.support import HubProcess, detention, free_port

pytestmark = pytest.mark.e2e
COUNCIL = "E06000060"
TOPIC = "https://s117-hub.localhost/fhir/SubscriptionTopic/s117-entitlement-started"
_rng = random.Random(3117)


def readme_verify(secret: str, signature: str, event_id: str, body: bytes) -> bool:
    """The README's "Webhook signatures" verifier, as a council would copy it."""
    fields = [p.partition("=") for p in signature.split(",")]
    t = next((v for k, _, v in fields if k.strip() == "t"), "")
    if not (t.isascii() and t.isdigit()) or abs(time.time() - int(t)) > 300:
        return False
    mac = hmac.new(secret.encode(), f"{t}.{event_id}.".encode() + body, hashlib.sha256).hexdigest().encode()
    return any(hmac.compare_digest(mac, v.strip().encode()) for k, _, v in fields if k.strip() == "v1")


class RawEndpoint:
    """A council's endpoint on a real socket: every request's path, headers (lower-cased) and exact body."""

    def __init__(self, status: int = 204) -> None:
        self.status = status  # what every request is answered
        self.port = free_port()
        self.got: list[tuple[str, dict[str, str], bytes]] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                headers = {}
                for line in head[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.got.append((head[0].split()[1], headers, body))
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % self.status)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def __aenter__(self) -> "RawEndpoint":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):  # the hub's kept-alive connections: closed, their readers end
            writer.transport.abort()
        await asyncio.sleep(0.05)

    async def wait_for(self, predicate, timeout: float = 15.0) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; got {[(p, h.get('s117-event-number')) for p, h, _ in self.got]}")
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    tmp: Path = tmp_path_factory.mktemp("review31")
    sharing = tmp / "sharing.yaml"
    sharing.write_text(yaml.safe_dump(SHARING))
    process = HubProcess(tmp, sharing_path=sharing)
    keys = asyncio.run(make_clients(process.db_url))
    asyncio.run(process.start())
    try:
        yield process, keys
    finally:
        process.stop()


async def _detain(http: httpx.AsyncClient, keys: dict[str, str], run: str) -> None:
    """One person detained and discharged: Bucks gets two register-change-recorded events and one
    s117-entitlement-started."""
    for change in detention(synthetic_nhs_number(_rng), run):
        r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
        assert r.status_code == 202, r.text


async def test_a_council_rotates_its_webhook_secret_and_the_messages_after_verify_under_the_new_one(hub) -> None:
    process, keys = hub
    old, new = "old-secret-" + "a" * 32, "new-secret-" + "b" * 32
    h = {"X-API-Key": keys[COUNCIL]}
    async with RawEndpoint() as endpoint, httpx.AsyncClient(base_url=process.base_url, timeout=10) as http:
        sub = (await http.post("/v1/subscriptions", headers=h, json={
            "url": endpoint.url("wh"), "secret": old, "event_types": ["s117-entitlement-started"]})).json()
        sid = sub["subscription_id"]
        await _detain(http, keys, "rot-1")
        await endpoint.wait_for(lambda: len(endpoint.got) == 1)
        _, first, body = endpoint.got[0]
        assert first["s117-event-number"] == "1"
        assert readme_verify(old, first["s117-signature"], first["s117-event-id"], body)

        rotated = await http.post(f"/v1/subscriptions/{sid}/secret", headers=h, json={"secret": new})
        assert rotated.status_code == 200, rotated.text
        assert rotated.json()["secret"] == new and rotated.json()["subscription_id"] == sid
        assert rotated.headers["cache-control"] == "no-store"  # a secret is never cached on the way

        await _detain(http, keys, "rot-2")
        await endpoint.wait_for(lambda: len(endpoint.got) == 2)
        _, second, body = endpoint.got[1]
        assert second["s117-event-number"] == "2"  # the same subscription: its numbers go on
        assert readme_verify(new, second["s117-signature"], second["s117-event-id"], body)
        assert not readme_verify(old, second["s117-signature"], second["s117-event-id"], body)

        # No body: the hub makes one, shown once.
        made = (await http.post(f"/v1/subscriptions/{sid}/secret", headers=h)).json()["secret"]
        assert len(made) >= 32 and made != new
        # A secret the hub would not take at creation is refused naming the field, nothing changed.
        short = await http.post(f"/v1/subscriptions/{sid}/secret", headers=h, json={"secret": "short"})
        assert short.status_code == 422 and short.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in short.json()["errors"]] == ["secret"]
        # A channel that is not signed has no secret: 409 naming the channel, as problem details.
        feed = (await http.post("/v1/subscriptions", headers=h, json={"channel": "feed"})).json()["subscription_id"]
        unsigned = await http.post(f"/v1/subscriptions/{feed}/secret", headers=h)
        assert unsigned.status_code == 409 and unsigned.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in unsigned.json()["errors"]] == ["channel"]
        # Another organisation's subscription: 404, as for every other subscription route.
        other = await http.post(f"/v1/subscriptions/{sid}/secret", headers={"X-API-Key": keys["QU9"]})
        assert other.status_code == 404
        # A stopped one is not given a secret.
        await http.delete(f"/v1/subscriptions/{sid}", headers=h)
        stopped = await http.post(f"/v1/subscriptions/{sid}/secret", headers=h)
        assert stopped.status_code == 409 and stopped.json()["type"].endswith("/subscription-stopped")
        await http.delete(f"/v1/subscriptions/{feed}", headers=h)


async def test_a_fhir_rest_hook_secret_rotates_too(hub) -> None:
    process, keys = hub
    h = {"X-API-Key": keys[COUNCIL]}
    async with RawEndpoint() as endpoint, httpx.AsyncClient(base_url=process.base_url, timeout=10) as http:
        made = await http.post("/v1/fhir/Subscription", headers={**h, "Content-Type": "application/fhir+json"},
                               content=orjson.dumps({
                                   "resourceType": "Subscription", "status": "requested", "reason": "review 31",
                                   "criteria": TOPIC, "channel": {"type": "rest-hook", "endpoint": endpoint.url("fhir"),
                                                                  "payload": "application/fhir+json"}}))
        assert made.status_code == 201, made.text
        sid = made.json()["id"]
        new = "rotated-fhir-secret-" + "c" * 32
        rotated = await http.post(f"/v1/subscriptions/{sid}/secret", headers=h, json={"secret": new})
        assert rotated.status_code == 200, rotated.text
        await _detain(http, keys, "rot-fhir")
        await endpoint.wait_for(lambda: any("s117-event-id" in hd for _p, hd, _b in endpoint.got))
        _, headers, body = next(g for g in endpoint.got if "s117-event-id" in g[1])
        assert readme_verify(new, headers["s117-signature"], headers["s117-event-id"], body)
        await http.delete(f"/v1/fhir/Subscription/{sid}", headers=h)


def _aware(value: str | None) -> None:
    if value is not None:
        assert datetime.fromisoformat(value).tzinfo is not None, value


async def test_the_subscription_apis_times_carry_their_offset(hub) -> None:
    process, keys = hub
    h = {"X-API-Key": keys[COUNCIL]}
    async with RawEndpoint(status=410) as gone, httpx.AsyncClient(base_url=process.base_url, timeout=10) as http:
        sub = (await http.post("/v1/subscriptions", headers=h, json={"channel": "feed"})).json()
        sid = sub["subscription_id"]
        _aware(sub["created_at"])
        hook = (await http.post("/v1/subscriptions", headers=h, json={"url": gone.url("gone")})).json()
        await _detain(http, keys, "times")
        await gone.wait_for(lambda: len(gone.got) >= 1)  # answered 410 Gone: suspended
        deadline = time.monotonic() + 15
        while (suspended := (await http.get(f"/v1/subscriptions/{hook['subscription_id']}", headers=h)).json()
               )["state"] != "suspended":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        _aware(suspended["suspended_at"])
        assert suspended["suspended_at"] is not None
        deadline = time.monotonic() + 15
        while not (await http.get(f"/v1/subscriptions/{sid}/status", headers=h)).json()["head"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        status = (await http.get(f"/v1/subscriptions/{sid}/status", headers=h)).json()
        _aware(status["head"]["queued_at"])
        _aware(status["head"]["next_attempt_at"])
        page = (await http.get(f"/v1/feeds/{sid}", headers=h)).json()
        await http.get(f"/v1/feeds/{sid}?after={page['next_cursor']}", headers=h)  # acknowledged: delivered_at
        log = (await http.get(f"/v1/subscriptions/{sid}/deliveries", headers=h)).json()["items"]
        assert any(item["delivered_at"] for item in log)
        for item in log:
            for key in ("created_at", "delivered_at", "next_attempt_at"):
                _aware(item[key])
        for item in (await http.get(f"/v1/subscriptions/{sid}/events?from=1", headers=h)).json()["items"]:
            _aware(item["queued_at"])
        for item in (await http.get("/v1/subscriptions", headers=h)).json()["items"]:
            _aware(item["created_at"])
            _aware(item["suspended_at"])
        _aware((await http.get(f"/v1/subscriptions/{sid}", headers=h)).json()["created_at"])
        await http.delete(f"/v1/subscriptions/{sid}", headers=h)
        await http.delete(f"/v1/subscriptions/{hook['subscription_id']}", headers=h)
