"""Kafka topic channel against a real broker: a council's `kafka` subscription
receives every FHIR message on its topic, in order, keyed by person, with the
event headers, and each delivery is marked delivered only after Kafka's
acknowledgement; while Kafka cannot be reached, deliveries back off and wait."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from datetime import date, datetime

import httpx
import jsonschema
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from hub.api.app import create_app
from hub.clients import add_client
from hub.delivery.kafka_topic import KafkaTopicDeliverer
from hub.fhir.namespaces import HUB_PERSON_ID_SYSTEM
from hub.fhir.validate import validate_message
from hub.sample_data import detention_to_move_scenario
from tests.conftest import InProcessHub
from tests.conftest import test_settings as make_settings
from tests.support import push_scenario

pytestmark = pytest.mark.integration

COUNCIL = "E06000060"


async def _hub(tmp_path: Path, outbound: str) -> AsyncIterator[InProcessHub]:
    # The embedded hub (SQL bus) publishing outbound to Kafka: S117_KAFKA_OUTBOUND_BOOTSTRAP.
    app = create_app(make_settings(tmp_path, kafka_outbound_bootstrap=outbound, kafka_partitions=3))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        keys = {
            "trust": (await add_client(hub.engine, "Oxford Health", "RNU", "trust", ["register:write"]))[1],
            COUNCIL: (await add_client(hub.engine, "Bucks", COUNCIL, "council", ["subscriptions:write"]))[1],
        }
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            yield InProcessHub(http, hub, keys)


@pytest.fixture
async def kafka_hub(tmp_path: Path, kafka_bootstrap: str) -> AsyncIterator[InProcessHub]:
    async for h in _hub(tmp_path, kafka_bootstrap):
        yield h


async def _push(app_hub, seed: int) -> list[dict]:  # noqa: ANN001
    return await push_scenario(app_hub, seed)


async def _consume(bootstrap: str, topic: str, n: int, timeout: float = 30.0) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    got: list = []
    try:
        async with asyncio.timeout(timeout):
            while len(got) < n:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    got += records
        await asyncio.sleep(0.5)  # anything beyond n would be a duplicate: look for it
        for records in (await consumer.getmany(timeout_ms=500)).values():
            got += records
    finally:
        await consumer.stop()
    return got


async def test_every_message_reaches_the_topic_in_order_with_its_headers(kafka_hub, kafka_bootstrap):
    h = {"X-API-Key": kafka_hub.keys[COUNCIL]}
    r = await kafka_hub.http.post("/v1/subscriptions", headers=h, json={"channel": "kafka"})
    assert r.status_code == 201, r.text
    assert r.json()["topic"] == "s117.out.e06000060" and r.json()["url"] is None and "secret" not in r.json()
    await kafka_hub.http.delete(f"/v1/subscriptions/{r.json()['subscription_id']}", headers=h)

    topic = f"s117.out.e06000060.test-{uuid.uuid4().hex[:8]}"
    r = await kafka_hub.http.post("/v1/subscriptions", headers=h, json={"channel": "kafka", "topic": topic})
    assert r.status_code == 201, r.text
    sub = r.json()["subscription_id"]
    events = await _push(kafka_hub, seed=21) + await _push(kafka_hub, seed=22)  # two people

    deliverer = kafka_hub.hub.kafka_deliverer
    sent = 0
    for _ in range(50):
        if not (n := await deliverer.run_once()):
            break
        sent += n
    log = (await kafka_hub.http.get(f"/v1/subscriptions/{sub}/deliveries", headers=h)).json()["items"]
    assert log and all(d["status"] == "delivered" and d["attempts"] == 1 for d in log)
    assert sent == len(log)
    queued = [d["event_id"] for d in reversed(log)]  # the log is newest first

    records = await _consume(kafka_bootstrap, topic, len(log))
    assert len(records) == len(log)  # each once
    by_id = {d["event_id"]: d for d in log}
    per_person: dict[bytes, list[str]] = {}
    # What the hub publishes is what its AsyncAPI document says, header by header.
    doc = (await kafka_hub.http.get("/asyncapi.json")).json()
    assert doc["asyncapi"] == "3.0.0" and doc["servers"]["outbound"]["protocol"] == "kafka"
    message_doc = doc["components"]["messages"]["S117EventMessage"]
    channel = doc["channels"]["councilOutbound"]
    assert re.fullmatch(channel["address"].replace("{orgCode}", "[a-z0-9]+") + r"(\..+)?", topic)
    checker = jsonschema.FormatChecker()
    for rec in records:
        headers = {k: v.decode() for k, v in rec.headers}
        jsonschema.validate(headers, message_doc["headers"], format_checker=checker)
        jsonschema.validate(rec.key.decode(), message_doc["bindings"]["kafka"]["key"], format_checker=checker)
        jsonschema.validate(orjson.loads(rec.value), message_doc["payload"], format_checker=checker)
        d = by_id[headers["event_id"]]
        assert headers["message_id"] == d["message_id"] and headers["event_type"] == d["event_type"]
        assert int(headers["event_number"]) == d["event_number"]
        assert headers["correlation_id"]
        # CloudEvents 1.0, Kafka binary mode: attributes in ce_ headers, the FHIR message as the value.
        assert headers["ce_specversion"] == "1.0" and headers["ce_id"] == d["message_id"]
        assert headers["ce_type"] == "uk.s117hub." + d["event_type"]
        assert headers["ce_source"] == kafka_hub.hub.settings.hub_endpoint
        assert headers["content-type"] == "application/fhir+json"
        assert headers["restore_epoch"] == "0"  # a store never restored (as the webhook's S117-Restore-Epoch)
        message = orjson.loads(rec.value)
        validate_message(message)
        assert datetime.fromisoformat(headers["ce_time"]) == datetime.fromisoformat(message["timestamp"])
        patient = next(e["resource"] for e in message["entry"] if e["resource"]["resourceType"] == "Patient")
        person_id = next(i["value"] for i in patient["identifier"] if i["system"] == HUB_PERSON_ID_SYSTEM)
        assert rec.key == person_id.encode() and headers["ce_subject"] == person_id
        per_person.setdefault(rec.key, []).append(headers["event_id"])
    # Event numbers: 1..n in the order the subscription's messages were queued.
    numbers = {dict(r.headers)["event_id"].decode(): int(dict(r.headers)["event_number"]) for r in records}
    assert [numbers[i] for i in queued] == list(range(1, len(queued) + 1))
    assert len(per_person) == 2
    # Per person (one partition each), the records are in the order the deliveries were queued,
    # which is the order the events happened.
    order = {e["event_id"]: i for i, e in enumerate(events)}
    for ids in per_person.values():
        assert ids == [i for i in queued if i in ids]
        assert [order[i] for i in ids] == sorted(order[i] for i in ids)


def _dead_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


async def test_while_kafka_is_unreachable_deliveries_back_off_and_wait(tmp_path, kafka_bootstrap):
    async for app_hub in _hub(tmp_path, _dead_port()):
        h = {"X-API-Key": app_hub.keys[COUNCIL]}
        topic = f"s117.out.e06000060.down-{uuid.uuid4().hex[:8]}"
        sub = (await app_hub.http.post("/v1/subscriptions", headers=h,
                                       json={"channel": "kafka", "topic": topic})).json()["subscription_id"]
        await _push(app_hub, seed=23)
        down = app_hub.hub.kafka_deliverer
        assert await down.run_once() == 1  # the head only; the rest wait behind it
        log = (await app_hub.http.get(f"/v1/subscriptions/{sub}/deliveries", headers=h)).json()["items"]
        assert log[-1]["status"] == "pending" and log[-1]["attempts"] == 1 and log[-1]["last_error"]
        assert all(d["attempts"] == 0 for d in log[:-1])
        assert await down.run_once() == 0  # backing off

        # Kafka is back (the real broker): once the backoff has run out, everything goes, in order.
        up = KafkaTopicDeliverer(app_hub.hub.engine, app_hub.hub.protector, kafka_bootstrap, partitions=3)
        try:
            for _ in range(200):
                await up.run_once()
                log = (await app_hub.http.get(f"/v1/subscriptions/{sub}/deliveries", headers=h)).json()["items"]
                if all(d["status"] == "delivered" for d in log):
                    break
                await asyncio.sleep(0.1)
        finally:
            await up.close()
        assert all(d["status"] == "delivered" for d in log) and log[-1]["attempts"] == 2
        records = await _consume(kafka_bootstrap, topic, len(log))
        assert [dict(r.headers)["event_id"].decode() for r in records] == [d["event_id"] for d in reversed(log)]


async def test_the_internal_event_topic_matches_its_asyncapi_description(tmp_path, kafka_bootstrap):
    """s117.events as the hub writes it in Kafka mode (outbox relayed by KafkaRelay)."""
    app = create_app(make_settings(tmp_path, bus_url=f"kafka://{kafka_bootstrap}", kafka_partitions=3))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        trust = (await add_client(hub.engine, "Oxford Health", "RNU", "trust", ["register:write"]))[1]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            doc = (await http.get("/asyncapi.json")).json()
            assert doc["servers"]["bus"]["protocol"] == "kafka"
            ids: set[str] = set()
            for c in detention_to_move_scenario(random.Random(24), f"ce-{uuid.uuid4().hex[:6]}", date(2025, 1, 6)):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": trust}, json=c)
                assert r.status_code == 202, r.text
                ids |= {e["event_id"] for e in r.json()["events"]}
            while await hub.relay.run_once():
                pass
        topic = doc["channels"]["internalEvents"]["address"]
        message_doc = doc["components"]["messages"]["BusEvent"]
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        mine = []
        try:
            async with asyncio.timeout(30):
                while len(mine) < len(ids):
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        mine += [r for r in records if dict(r.headers).get("event_id", b"").decode() in ids]
        finally:
            await consumer.stop()
        checker = jsonschema.FormatChecker()
        for rec in mine:
            jsonschema.validate({k: v.decode() for k, v in rec.headers}, message_doc["headers"], format_checker=checker)
            jsonschema.validate(rec.key.decode(), message_doc["bindings"]["kafka"]["key"], format_checker=checker)
            jsonschema.validate(orjson.loads(rec.value), message_doc["payload"])
        assert {dict(r.headers)["event_id"].decode() for r in mine} == ids
