"""TLS to subscribers: a council's https endpoint whose certificate comes from its own CA and which admits
only senders with a certificate from that CA (mutual TLS), reached by the hub as a real process
(S117_WEBHOOK_TLS_CA_FILE, S117_WEBHOOK_TLS_CLIENT_CERT / _KEY: hub/delivery/http1.py `client_tls`)."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import httpx
import pytest

from hub.delivery.http1 import HostClients, client_tls
from tests.e2e.conftest import SECRET, make_clients, subscribe_webhook
from tests.e2e.test_durability import _push_people
from tests.support import HubProcess, Receiver
from tests.tls_certs import CertAuthority

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def _log(hub: HubProcess, key: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
        h = {"X-API-Key": key}
        sub = (await http.get("/v1/subscriptions", headers=h)).json()["items"][0]["subscription_id"]
        return (await http.get(f"/v1/subscriptions/{sub}/deliveries?limit=1000", headers=h)).json()["items"]


async def _until(hub: HubProcess, key: str, done, what: str, timeout: float = 30) -> list[dict]:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        log = await _log(hub, key)
        if done(log):
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {[(d['status'], d.get('last_error')) for d in log][:5]}; "
                                 f"hub log tail: {hub.logs()[-1500:]}")
        await asyncio.sleep(0.2)


async def _refusal(receiver: Receiver, tls: ssl.SSLContext) -> str | None:
    """What the hub's own webhook client (hub/delivery/http1.py) meets posting to `receiver` with `tls`:
    None if answered, else the error's kind as a delivery records it."""
    clients = HostClients(5.0, allowed_hosts=["127.0.0.1"], ssl_context=tls)
    try:
        await clients.post(receiver.url("E06000060"), content=b"{}", headers={"Content-Type": "application/json"})
    except Exception as exc:  # noqa: BLE001 - its kind is what is asserted
        return type(exc).__name__
    finally:
        await clients.aclose()
    return None


async def test_a_council_endpoint_on_its_own_ca_that_asks_for_the_hubs_certificate(tmp_path: Path,
                                                                                    sharing_file: Path) -> None:
    certs = tmp_path / "certs"
    council_ca = CertAuthority.make(certs, "Council CA")
    endpoint = council_ca.issue(certs / "endpoint", "hooks.council.test", hosts=("127.0.0.1",))
    hub_cert = council_ca.issue(certs / "hub", "s117hub", client=True)
    stranger = CertAuthority.make(certs, "Stranger CA").issue(certs / "stranger", "s117hub", client=True)
    receiver = Receiver(secret=SECRET, tls={"ssl_certfile": str(endpoint.cert), "ssl_keyfile": str(endpoint.key),
                                            "ssl_ca_certs": str(council_ca.pem), "ssl_cert_reqs": ssl.CERT_REQUIRED})
    await receiver.start()
    bucks = "E06000060"
    try:
        # The hub's client as the settings make it (client_tls): without the council's CA the endpoint is not
        # trusted; with it, the endpoint refuses a hub with no certificate, or one of another CA's.
        assert await _refusal(receiver, client_tls()) == "SSLCertVerificationError"
        for hub_side in (client_tls(council_ca.pem), client_tls(council_ca.pem, stranger.cert, stranger.key)):
            assert await _refusal(receiver, hub_side) in {"SSLError", "ConnectionResetError", "AnswerError"}
        assert not receiver.received
        # The hub as a process, the council's CA and its own certificate from it set: every message arrives,
        # signed, in order, through the deliverers' process.
        hub = HubProcess(tmp_path, sharing_path=sharing_file, S117_WEBHOOK_TLS_CA_FILE=str(council_ca.pem),
                         S117_WEBHOOK_TLS_CLIENT_CERT=str(hub_cert.cert), S117_WEBHOOK_TLS_CLIENT_KEY=str(hub_cert.key))
        keys = await make_clients(hub.db_url)
        await hub.start()
        try:
            async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
                await subscribe_webhook(http, keys, receiver)
                await _push_people(http, keys["trust"], people=2, seed=3)
            log = await _until(hub, keys[bucks], lambda log: log and all(d["status"] == "delivered" for d in log),
                               "the hub's certificate from the council's CA")
        finally:
            hub.stop()
        assert {r.headers["s117-event-id"] for r in receiver.received} == {d["event_id"] for d in log}
        assert all(r.signature_ok for r in receiver.received)
    finally:
        await receiver.stop()


def test_a_tls_file_the_hub_cannot_use_stops_it_naming_the_setting(tmp_path: Path) -> None:
    import subprocess
    import sys

    from pydantic import ValidationError

    from hub.settings import Settings

    (tmp_path / "not-a-cert.pem").write_text("hello\n")
    hub = HubProcess(tmp_path, S117_WEBHOOK_TLS_CA_FILE=str(tmp_path / "missing.pem"))
    done = subprocess.run([sys.executable, "-m", "hub.cli", "serve"], env=hub.env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
    assert done.stderr.startswith("s117hub serve: setting webhook_tls_ca_file: "), done.stderr
    not_a_cert = tmp_path / "not-a-cert.pem"
    for kw, named in (({"webhook_tls_client_cert": not_a_cert, "webhook_tls_client_key": not_a_cert},
                       "webhook_tls_client_cert: cannot be read"),
                      ({"webhook_tls_client_cert": not_a_cert}, "webhook_tls_client_cert, webhook_tls_client_key")):
        with pytest.raises(ValidationError) as refused:
            Settings(**kw)
        said = refused.value.errors()[0]["msg"]
        assert named in said and "hello" not in said
