"""The hub on a Kafka cluster that requires TLS and SASL (hub/bus/kafka_security.py), with real hub
processes (`s117hub serve`, its workers apart) and a broker of the module's own with a SASL_SSL listener
(tests/servers/kafka.py `sasl_kafka`: a CA made here, SASL PLAIN, KRaft's StandardAuthorizer).

- The right settings: the outbox is relayed, the dispatcher consumes and a `kafka` subscription
  publishes, all over SASL_SSL (PLAIN; SCRAM-SHA-512 with the outbound cluster over mutual TLS).
- A wrong password: `/health/ready` stays 200 (the hub takes changes) and names `misconfigured:
  authentication`, as the log and `s117_kafka_misconfigured` do; the changes are kept and relayed once
  the hub is restarted with the right one. Never the password in a log line.
- A CA the broker's certificate does not chain to: `misconfigured: tls`. A user with no ACLs:
  `misconfigured: authorization`. The outbound cluster's own settings wrong: `kafka_outbound` names it,
  from the deliverers' process."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.helpers import create_ssl_context

from tests.e2e.conftest import make_clients
from tests.e2e.test_mllp import nhs_numbers
from tests.servers.kafka import USERS, SaslBroker
from tests.support import HubProcess, detention

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

COUNCIL = "E06000060"
TOPIC = "s117.out.e06000060"
WRONG = "wrong-pw-0d9e61"
NHS = nhs_numbers()[-6:]


def _security(broker: SaslBroker, tmp: Path, password: str, *, user: str = "hub", ca: Path | None = None,
              prefix: str = "S117_KAFKA_") -> dict[str, str]:
    secret = tmp / f"{prefix.lower()}password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    assert broker.tls is not None
    return {f"{prefix}SECURITY_PROTOCOL": "SASL_SSL", f"{prefix}SSL_CA_FILE": str(ca or broker.tls.ca_file),
            f"{prefix}SASL_MECHANISM": "PLAIN", f"{prefix}SASL_USERNAME": user,
            f"{prefix}SASL_PASSWORD_FILE": str(secret)}


def _hub(tmp: Path, sharing_file: Path, broker: SaslBroker, **env: str) -> HubProcess:
    return HubProcess(tmp, sharing_path=sharing_file, bus_url=f"kafka://{broker.sasl_bootstrap}", own_group=True,
                      S117_KAFKA_PARTITIONS="1", **env)


@pytest.fixture
def hubs() -> Iterator[list[HubProcess]]:
    """Every hub a test starts, stopped after it, failed or not."""
    started: list[HubProcess] = []
    try:
        yield started
    finally:
        for hub in started:
            hub.stop()


async def _post(http: httpx.AsyncClient, key: str, nhs: str) -> list[str]:
    """One person's two changes, each accepted (202): the event ids the hub reported."""
    events: list[str] = []
    for change in detention(nhs, uuid.uuid4().hex[:8]):
        r = await http.post("/v1/register-changes", headers={"X-API-Key": key}, json=change)
        assert r.status_code == 202, r.text
        events += [e["event_id"] for e in r.json()["events"]]
    return events


async def _subscribe_kafka(http: httpx.AsyncClient, keys: dict[str, str]) -> None:
    r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys[COUNCIL]}, json={"channel": "kafka"})
    assert r.status_code == 201, r.text


async def _on_topic(broker: SaslBroker, events: list[str], timeout: float = 60.0) -> set[str]:
    """Read the council's topic over SASL_SSL until a record of each of `events` (their event_id header)
    is there, or the time is up: the event ids seen."""
    assert broker.tls is not None
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=broker.sasl_bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False, security_protocol="SASL_SSL",
                                ssl_context=create_ssl_context(cafile=str(broker.tls.ca_file)),
                                sasl_mechanism="PLAIN", sasl_plain_username="hub", sasl_plain_password=USERS["hub"],
                                metadata_max_age_ms=1000)
    seen: set[str] = set()
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not set(events) <= seen:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                seen |= {dict(r.headers).get("event_id", b"").decode() for r in records}
    finally:
        await consumer.stop()
    return seen


async def _waiting(http: httpx.AsyncClient, name: str, starts: str, timeout: float = 30.0) -> dict:
    """`/health/ready` once its `waiting` names `name` as `starts`...: answered 200 all along."""
    deadline = time.monotonic() + timeout
    while True:
        r = await http.get("/health/ready")
        assert r.status_code == 200, r.text  # the hub takes changes meanwhile
        if r.json().get("waiting", {}).get(name, "").startswith(starts):
            return r.json()
        assert time.monotonic() < deadline, r.text
        await asyncio.sleep(0.3)


def _no_secret_in(logs: str) -> None:
    for secret in (*USERS.values(), WRONG):
        assert secret not in logs
    assert "Traceback" not in logs


async def test_the_hub_relays_consumes_and_publishes_over_sasl_ssl(sasl_kafka, tmp_path, sharing_file, hubs):
    hub = _hub(tmp_path, sharing_file, sasl_kafka, **_security(sasl_kafka, tmp_path, USERS["hub"]))
    keys = await make_clients(hub.db_url)
    hubs.append(hub)
    await hub.start(timeout=60)
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
        r = await http.get("/health/ready")
        assert r.status_code == 200 and "waiting" not in r.json(), r.text  # the topic made over SASL_SSL at start
        await _subscribe_kafka(http, keys)
        events = await _post(http, keys["trust"], NHS[0])
        seen = await _on_topic(sasl_kafka, events)
        assert set(events) <= seen, (events, seen)  # relayed, consumed by the dispatcher, published: SASL_SSL all
        metrics = (await http.get("/metrics")).text
        assert 's117_kafka_misconfigured{cause="authentication",cluster="bus"} 1.0' not in metrics
    _no_secret_in(hub.logs())


async def test_scram_sha_512_on_the_bus_and_mutual_tls_to_the_outbound_cluster(sasl_kafka, tmp_path, sharing_file,
                                                                                hubs):
    """The bus over SASL_SSL with SCRAM-SHA-512; the `kafka` subscriptions' cluster with a set of its own
    (S117_KAFKA_OUTBOUND_*): SSL with the hub's client certificate (the broker's SSL listener requires one)."""
    assert sasl_kafka.tls is not None
    security = {**_security(sasl_kafka, tmp_path, USERS["hub"]), "S117_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "S117_KAFKA_OUTBOUND_BOOTSTRAP": sasl_kafka.ssl_bootstrap,
                "S117_KAFKA_OUTBOUND_SECURITY_PROTOCOL": "SSL",
                "S117_KAFKA_OUTBOUND_SSL_CA_FILE": str(sasl_kafka.tls.ca_file),
                "S117_KAFKA_OUTBOUND_SSL_CERT_FILE": str(sasl_kafka.tls.client_cert),
                "S117_KAFKA_OUTBOUND_SSL_KEY_FILE": str(sasl_kafka.tls.client_key)}
    hub = _hub(tmp_path, sharing_file, sasl_kafka, **security)
    keys = await make_clients(hub.db_url)
    hubs.append(hub)
    await hub.start(timeout=60)
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
        r = await http.get("/health/ready")
        assert r.status_code == 200 and "waiting" not in r.json(), r.text
        await _subscribe_kafka(http, keys)
        events = await _post(http, keys["trust"], NHS[5])
        seen = await _on_topic(sasl_kafka, events)
        assert set(events) <= seen, (events, seen)
        r = await http.get("/health/ready")
        assert "waiting" not in r.json(), r.text
    _no_secret_in(hub.logs())


async def test_a_wrong_password_is_named_while_changes_are_kept_and_relayed_once_it_is_right(
        sasl_kafka, tmp_path, sharing_file, hubs):
    hub = _hub(tmp_path, sharing_file, sasl_kafka, **_security(sasl_kafka, tmp_path, WRONG))
    keys = await make_clients(hub.db_url)
    hubs.append(hub)
    await hub.start(timeout=60)
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
        body = await _waiting(http, "bus", "misconfigured: authentication")
        assert body["status"] == "ready"
        await _subscribe_kafka(http, keys)
        events = await _post(http, keys["trust"], NHS[1])  # accepted, kept in the outbox
        metrics = (await http.get("/metrics")).text
        assert 's117_kafka_misconfigured{cause="authentication",cluster="bus"} 1.0' in metrics
        assert 's117_kafka_failures_total{cause="authentication",cluster="bus"}' in metrics
    hub.stop()
    logs = hub.logs()
    assert '"error_kind":"misconfigured: authentication"' in logs, logs[-3000:]
    assert '"event":"kafka misconfigured; the topic and the relay wait"' in logs, logs[-3000:]
    # The same store, the right password: what was accepted meanwhile is relayed and published.
    fixed = _hub(tmp_path, sharing_file, sasl_kafka, **_security(sasl_kafka, tmp_path, USERS["hub"]))
    hubs.append(fixed)
    await fixed.start(timeout=60)
    seen = await _on_topic(sasl_kafka, events)
    assert set(events) <= seen, (events, seen)  # every change accepted meanwhile
    async with httpx.AsyncClient(base_url=fixed.base_url, timeout=30) as http:
        r = await http.get("/health/ready")
        assert r.status_code == 200 and "waiting" not in r.json(), r.text
    _no_secret_in(fixed.logs())  # both runs' lines (one log file)


async def test_an_untrusted_ca_is_named_tls(sasl_kafka, tmp_path, sharing_file, hubs):
    assert sasl_kafka.tls is not None
    hub = _hub(tmp_path, sharing_file, sasl_kafka,
               **_security(sasl_kafka, tmp_path, USERS["hub"], ca=sasl_kafka.tls.other_ca_file))
    keys = await make_clients(hub.db_url)
    hubs.append(hub)
    await hub.start(timeout=60)
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
        await _waiting(http, "bus", "misconfigured: tls")
        await _post(http, keys["trust"], NHS[2])
    hub.stop()
    assert '"error_kind":"misconfigured: tls"' in hub.logs()
    _no_secret_in(hub.logs())


async def test_a_user_without_acls_is_named_authorization(sasl_kafka, tmp_path, sharing_file, hubs):
    hub = _hub(tmp_path, sharing_file, sasl_kafka, **_security(sasl_kafka, tmp_path, USERS["reader"], user="reader"))
    keys = await make_clients(hub.db_url)
    hubs.append(hub)
    await hub.start(timeout=60)
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
        await _waiting(http, "bus", "misconfigured: authorization")
        await _post(http, keys["trust"], NHS[3])
    _no_secret_in(hub.logs())


async def test_the_outbound_clusters_own_settings_wrong_are_named_from_the_deliverers_process(
        sasl_kafka, tmp_path, sharing_file, hubs):
    """An embedded hub (SQL bus) publishing to a cluster with its own settings (S117_KAFKA_OUTBOUND_*), the
    password wrong: the deliverers' process meets it; the front's readiness names it (the shared gauge)."""
    hub = HubProcess(tmp_path, sharing_path=sharing_file, own_group=True,
                     S117_KAFKA_OUTBOUND_BOOTSTRAP=sasl_kafka.sasl_bootstrap,
                     **_security(sasl_kafka, tmp_path, WRONG, prefix="S117_KAFKA_OUTBOUND_"))
    keys = await make_clients(hub.db_url)
    hubs.append(hub)
    await hub.start(timeout=60)
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
        assert hub.workers(), "the deliverers in a process of their own"
        await _subscribe_kafka(http, keys)
        await _post(http, keys["trust"], NHS[4])
        await _waiting(http, "kafka_outbound", "misconfigured: authentication")
    _no_secret_in(hub.logs())
