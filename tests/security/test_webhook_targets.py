"""Issue #6, item 6: webhook targets and signatures. Probes replayed: a
council registered webhooks at http://127.0.0.1, [::1], 169.254.169.254,
decimal and hex IPs (and https://127.0.0.1 with https required), and the hub
POSTed signed FHIR there; the delivery log told open ports from closed ones.
`S117-Event-Id` was not signed; verify_webhook raised TypeError on a
non-ASCII v1."""

from __future__ import annotations

import ipaddress
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hub.crypto import sign_webhook, signature_header, verify_webhook, verify_webhook_request
from hub.delivery import targets
from hub.delivery.targets import AllowList, WebhookTargetRefused, address_problem
from hub.delivery.webhook import HostClients
from hub.store.schema import deliveries
from tests.support import Receiver, push_scenario

REFUSED_URLS = [
    "http://127.0.0.1/hook", "http://127.0.0.1:8117/v1/ops/flows", "http://localhost/hook", "http://[::1]/hook",
    "http://169.254.169.254/latest/meta-data/", "http://2130706433/hook", "http://0x7f000001/hook",
    "http://0177.0.0.1/hook", "http://127.1/hook", "http://[::ffff:127.0.0.1]/hook", "http://0.0.0.0/hook",
    "http://[::]/hook", "http://10.0.0.5/hook", "http://192.168.1.10/hook", "http://172.16.0.1/hook",
    "http://100.64.0.1/hook", "http://224.0.0.1/hook", "http://240.0.0.1/hook", "http://[fe80::1]/hook",
    "http://[fc00::1]/hook", "http://[64:ff9b::7f00:1]/hook", "http://[2002:7f00:1::]/hook",
    "http://no-such-host.invalid/hook",
]

REFUSED_ADDRESSES = ["127.0.0.1", "127.255.0.9", "::1", "169.254.169.254", "10.1.2.3", "172.31.0.1", "192.168.0.1",
                     "100.64.0.1", "0.0.0.0", "::", "224.0.0.1", "239.255.255.250", "ff02::1", "240.0.0.1",
                     "255.255.255.255", "fe80::1", "fc00::1", "fd12:3456::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
                     "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "192.0.2.1", "198.18.0.1", "::127.0.0.1"]
PUBLIC_ADDRESSES = ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_non_public_addresses_are_refused(address):
    assert address_problem(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses_pass(address):
    assert address_problem(ipaddress.ip_address(address)) is None


async def subscribe(app_hub, url: str):  # noqa: ANN001, ANN201
    return await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys["E06000060"]},
                                   json={"url": url, "secret": "s" * 32})


@pytest.mark.parametrize("url", REFUSED_URLS)
async def test_subscription_to_an_internal_target_is_422_naming_url(app_hub, url):
    app_hub.hub.settings.webhook_allowed_hosts = []  # production: no allow-list
    r = await subscribe(app_hub, url)
    assert r.status_code == 422, (url, r.text)
    errors = r.json()["errors"]
    assert errors[0]["field"] == "url"
    assert "127.0.0.1" not in errors[0]["reason"]  # the answer does not map the network


async def test_https_required_does_not_open_loopback(app_hub):
    app_hub.hub.settings.webhook_allowed_hosts = []
    app_hub.hub.settings.webhook_require_https = True
    r = await subscribe(app_hub, "https://127.0.0.1/hook")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "url"


async def test_the_operator_allow_list_names_hosts_and_networks(app_hub):
    app_hub.hub.settings.webhook_allowed_hosts = ["127.0.0.1"]
    assert (await subscribe(app_hub, "http://127.0.0.1:9/hook")).status_code == 201
    assert (await subscribe(app_hub, "http://[::1]:9/hook")).status_code == 422  # only what is named
    app_hub.hub.settings.webhook_allowed_hosts = ["10.20.0.0/16", "hooks.lan"]
    assert AllowList.parse(["10.20.0.0/16"]).covers(ipaddress.ip_address("10.20.3.4"))
    assert (await subscribe(app_hub, "http://10.20.3.4/hook")).status_code == 201
    assert (await subscribe(app_hub, "http://10.21.0.1/hook")).status_code == 422


async def test_dns_that_changes_after_subscription_is_caught_at_delivery(app_hub, monkeypatch):
    """The name resolved to a public address when the council subscribed, and
    to loopback when the hub delivers (DNS rebinding): nothing reaches the
    loopback receiver and the delivery log says only that the target was refused."""
    receiver = Receiver(secret="s" * 32)
    await receiver.start()
    answers = iter([[ipaddress.ip_address("93.184.216.34")]])

    async def rebinding(host: str, port: int, timeout: float | None = None):  # noqa: ANN202
        return next(answers, [ipaddress.ip_address("127.0.0.1")])

    monkeypatch.setattr(targets, "resolve", rebinding)
    app_hub.hub.settings.webhook_allowed_hosts = []
    deliverer = app_hub.hub.deliverer
    old_client = deliverer._client
    deliverer._client = HostClients(2.0, allowed_hosts=[])  # the hub's own client, built with no allow-list
    try:
        r = await subscribe(app_hub, f"http://hooks.council.test:{receiver.port}/hooks/E06000060")
        assert r.status_code == 201, r.text
        await push_scenario(app_hub, 11)
        assert await deliverer.run_once() >= 1
        async with app_hub.hub.engine.connect() as conn:
            errors = set((await conn.execute(select(deliveries.c.last_error)
                                             .where(deliveries.c.attempts > 0))).scalars())
        assert errors == {"WebhookTargetRefused"}
        assert receiver.received == []
    finally:
        await deliverer._client.aclose()
        deliverer._client = old_client
        await receiver.stop()


async def test_the_guard_connects_to_the_address_it_checked(monkeypatch):
    """The name below exists in no DNS: a successful POST proves the
    connection went to the checked (allowed) address, not a second lookup."""
    receiver = Receiver(secret="s" * 32)
    await receiver.start()

    async def fixed(host: str, port: int, timeout: float | None = None):  # noqa: ANN202
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(targets, "resolve", fixed)
    url = f"http://checked.council.test:{receiver.port}/hooks/X"
    allowed = HostClients(5.0, allowed_hosts=["127.0.0.1/32"])
    assert (await allowed.post(url, content=b"{}", headers={})).status_code == 204
    await allowed.aclose()
    refusing = HostClients(5.0, allowed_hosts=[])
    with pytest.raises(WebhookTargetRefused):
        await refusing.post(url, content=b"{}", headers={})
    await refusing.aclose()
    assert len(receiver.received) == 1
    await receiver.stop()


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/hook", "http://[::1]:{port}/hook",
                                 "http://[::ffff:127.0.0.1]:{port}/hook", "http://169.254.169.254:{port}/x"])
async def test_the_delivery_client_refuses_a_literal_address_before_connecting(url):
    """A literal address needs no look-up, and is checked all the same
    before connecting: the loopback receiver hears nothing."""
    receiver = Receiver(secret="s" * 32)
    await receiver.start()
    clients = HostClients(5.0, allowed_hosts=[])
    with pytest.raises(WebhookTargetRefused):
        await clients.post(url.format(port=receiver.port), content=b"{}", headers={})
    await clients.aclose()
    assert receiver.received == []
    await receiver.stop()


async def test_an_open_and_a_closed_internal_port_look_the_same(app_hub):
    clients = HostClients(2.0, allowed_hosts=[])
    for port in (1, 9, 22, 8117):
        with pytest.raises(WebhookTargetRefused):
            await clients.post(f"http://127.0.0.1:{port}/hook", content=b"{}", headers={})
    await clients.aclose()


# ---------------------------------------------------------------- signatures

BODY = b'{"resourceType":"Bundle"}'
NOW = 1_700_000_000


def test_the_event_id_is_signed():
    header = signature_header("k" * 32, "event-1", BODY, now=NOW)
    assert verify_webhook("k" * 32, header, BODY, event_id="event-1", now=NOW)
    assert not verify_webhook("k" * 32, header, BODY, event_id="event-2", now=NOW)


@pytest.mark.parametrize(("skew", "ok"), [(0, True), (299, True), (-299, True), (300, True), (-300, True),
                                          (301, False), (-301, False), (3600, False), (-86400, False)])
def test_timestamps_more_than_300_s_either_way_are_refused(skew, ok):
    header = signature_header("k" * 32, "e", BODY, now=NOW + skew)
    assert verify_webhook("k" * 32, header, BODY, event_id="e", now=NOW) is ok


@pytest.mark.parametrize("header", [
    "t=1700000000,v1=é", "t=1700000000,v1=ü" * 50, "t=١٧٠٠٠٠٠٠٠٠,v1=00", "t=1700000000,v1=\ud800",
    "t=,v1=", "", ",,,", "t=1700000000", "v1=abc", "t=1700000000,t=1700000001,v1=00", "t=99999999999999999999,v1=0",
])
def test_malformed_headers_are_false_never_an_exception(header):
    assert verify_webhook("k" * 32, header, BODY, event_id="e", now=NOW) is False


@settings(max_examples=300, deadline=None)
@given(header=st.text(max_size=200), event_id=st.text(max_size=40), secret=st.text(min_size=1, max_size=40))
def test_verify_never_raises(header, event_id, secret):
    assert verify_webhook(secret, header, BODY, event_id=event_id, now=NOW) in (True, False)


def test_the_published_recipe_verifies_a_signature():
    """The README's few lines, written without the hub's code."""
    import hashlib
    import hmac

    secret, event_id = "k" * 32, "6f1c-event"
    header = signature_header(secret, event_id, BODY, now=NOW)
    fields = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.{event_id}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected.encode(), fields["v1"].encode())
    assert fields["v1"] == sign_webhook(secret, NOW, event_id, BODY)
    assert verify_webhook_request(secret, {"S117-Signature": header, "S117-Event-Id": event_id}, BODY, now=NOW)
