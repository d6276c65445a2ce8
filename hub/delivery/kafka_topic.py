"""Kafka topic channel: each FHIR message of a `kafka` subscription is
published to the subscriber's topic (default `s117.out.<org code lowercased>`).

* Record: key = the hub's person id (from the message's Patient, the same key
  as the internal s117.events topic, so one person's messages stay on one
  partition and in order); value = the FHIR message bytes exactly as queued
  (application/fhir+json); headers (UTF-8) `event_id`, `message_id`,
  `event_type`, `correlation_id`, `event_number` (the subscription's gap-free
  sequence, hub.delivery.queue) and the CloudEvents 1.0 Kafka binary-mode
  attributes `ce_specversion`, `ce_id` (the message id), `ce_type`
  (`uk.s117hub.<event type>`), `ce_source` (the hub's endpoint), `ce_time`
  (the message's timestamp), `ce_subject` (the hub person id) and
  `content-type`; and `restore_epoch` (hub/store/restores.py): "0" until the
  store is restored from a backup, then that restore's id, as the webhook's
  `S117-Restore-Epoch` (README, "Backup and restore"). hub/asyncapi.py
  describes every topic the hub writes.
* Order: per subscription, oldest first, one at a time: the next is sent only
  once Kafka has acknowledged the previous (producer `acks="all"`,
  `enable_idempotence=True`), so a failure never lets a later message
  overtake an earlier one.
* Durability: a delivery is marked delivered only after the acknowledgement;
  a crash in between sends it again (at least once: consumers de-duplicate by
  `event_id`). Leases, backoff and dead letters are those of every push
  channel (hub.delivery.leases).
* Topics are created on first use (`ensure_topic`, `kafka_partitions`); where
  the hub may not create topics the operator creates them (and grants the
  council read ACLs on its own topic alone).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.bus import kafka_security
from hub.bus.kafka import ensure_topic
from hub.bus.kafka_security import FAULTS
from hub.crypto import DataProtector
from hub.delivery.leases import RetryPolicy, SubscriptionDeliverer
from hub.fhir.namespaces import DEFAULT_NAMESPACES
from hub.observability.logging import get_logger
from hub.store.restores import NO_RESTORE

log = get_logger("hub.kafka_topic")
# The hub person id system, whatever the canonical base: <base>/fhir/Id/person-id.
PERSON_ID_SYSTEM_PATH = DEFAULT_NAMESPACES.person_id_system.removeprefix(DEFAULT_NAMESPACES.base)

CHANNEL = "kafka"
TOPIC_PATTERN = r"^[a-zA-Z0-9._-]{1,200}$"
_TOPIC = re.compile(TOPIC_PATTERN)


def default_topic(org_code: str) -> str:
    return f"s117.out.{org_code.lower()}"


def topic_problem(topic: str, org_code: str) -> str | None:
    """Why a subscriber may not publish to `topic`, or None. Beyond Kafka's own
    rules, the hub's namespace (`s117.*`: its internal bus, other councils'
    default topics) and Kafka's internal topics (`__*`) are off limits, except
    the subscriber's own `s117.out.<org>` and names under it."""
    if not _TOPIC.match(topic) or topic in {".", ".."}:
        return "must be 1-200 of the characters a-z A-Z 0-9 . _ - (and not '.' or '..')"
    if topic.startswith("__"):
        return "names starting '__' are Kafka's internal topics"
    own = default_topic(org_code)
    if topic.lower().startswith("s117.") and not (topic == own or topic.startswith(own + ".")):
        return f"s117.* is the hub's namespace: use {own} (or {own}.<suffix>) or a name outside it"
    return None




CE_TYPE_PREFIX = "uk.s117hub."
CONTENT_TYPE = "application/fhir+json"


def _person_and_time(body: bytes) -> tuple[str | None, str | None]:
    """The hub person id from the message's Patient (always there, whatever
    the data-sharing agreement allows) and the Bundle's timestamp."""
    try:
        bundle = orjson.loads(body)
        when = bundle.get("timestamp")
        for entry in bundle.get("entry", []):
            res = entry.get("resource", {})
            if res.get("resourceType") == "Patient":
                for ident in res.get("identifier", []):
                    # Under whichever canonical base the hub is configured with.
                    if str(ident.get("system", "")).endswith(PERSON_ID_SYSTEM_PATH) and ident.get("value"):
                        return str(ident["value"]), when
        return None, when
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None, None


def _person_key(body: bytes, fallback: str) -> bytes:
    person, _ = _person_and_time(body)
    return (person or fallback).encode()


def record_headers(row: Any, body: bytes, source: str, restore_epoch: str) -> list[tuple[str, bytes]]:
    """The Kafka headers of one outbound record (see the module docstring)."""
    person, when = _person_and_time(body)
    if not when:
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        when = created.isoformat()
    pairs = (
        ("event_id", row.event_id), ("message_id", row.message_id), ("event_type", row.event_type),
        ("correlation_id", row.correlation_id), ("event_number", str(row.event_number or "")),
        ("ce_specversion", "1.0"), ("ce_id", row.message_id), ("ce_type", CE_TYPE_PREFIX + row.event_type),
        ("ce_source", source), ("ce_time", when), ("ce_subject", person or ""),
        ("content-type", CONTENT_TYPE), ("restore_epoch", restore_epoch),
    )
    return [(name, (value or "").encode()) for name, value in pairs]


class KafkaTopicDeliverer(SubscriptionDeliverer):
    channel = CHANNEL
    handler = "kafka-topic"
    # The store's restore epoch, set when the hub starts (hub/bootstrap.py): the `restore_epoch` header.
    restore_epoch = NO_RESTORE

    """Publishes pending `kafka` deliveries. Create and close on the running loop:

        deliverer = KafkaTopicDeliverer(engine, protector, "broker:9092")
        while await deliverer.run_once(): ...
        await deliverer.close()

    The producer connects lazily: while Kafka is unreachable, attempts fail
    and back off, and deliveries wait in the store.
    """

    def __init__(
        self, engine: AsyncEngine, protector: DataProtector, bootstrap_servers: str | Sequence[str], *,
        backoff_base: float = 1.0, backoff_cap: float = 300.0, max_attempts: int = 0, lease_seconds: float = 90.0,
        partitions: int = 6, per_subscription_batch: int = 100, client_id: str = "s117-hub-outbound",
        producer_options: Mapping[str, Any] | None = None, source: str = "urn:s117-hub",
        timeout_seconds: float = 30.0, max_in_flight: int = 100,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        # The outbound cluster's security (hub/bus/kafka_security.py), for every client made here.
        self._security = dict(client_options or {})
        self._bootstrap = bootstrap_servers if isinstance(bootstrap_servers, str) else ",".join(bootstrap_servers)
        self._engine = engine
        self._protector = protector
        self._servers = bootstrap_servers if isinstance(bootstrap_servers, str) else list(bootstrap_servers)
        self._policy = RetryPolicy(backoff_base, backoff_cap, max_attempts, lease_seconds)
        self._partitions = partitions
        self._batch = per_subscription_batch
        self._client_id = client_id
        self._options = dict(producer_options or {})
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self._topics: set[str] = set()
        self._source = source
        self._deadline = min(timeout_seconds, lease_seconds)  # one attempt, all in; below the lease
        self._max_in_flight = max_in_flight

    async def _ensure_producer(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            if self._producer is None:
                options: dict[str, Any] = {"linger_ms": 0, "request_timeout_ms": 30_000, **self._options}
                producer = AIOKafkaProducer(bootstrap_servers=self._servers, client_id=self._client_id,
                                            acks="all", enable_idempotence=True, **self._security, **options)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()  # a producer whose start failed cannot be started again
                    raise
                self._producer = producer
            return self._producer

    async def _ensure_topic(self, topic: str) -> None:
        if topic in self._topics:
            return
        try:
            await ensure_topic(self._servers, topic, partitions=self._partitions, client_options=self._security)
        except Exception as exc:  # noqa: BLE001 - may lack the right to create: the send says if the topic is there
            log.warning("outbound topic not created", topic=topic, exc_type=type(exc).__name__)
            return
        self._topics.add(topic)

    async def close(self) -> None:
        async with self._producer_lock:
            if self._producer is not None:
                producer, self._producer = self._producer, None
                await producer.stop()

    async def _send(self, row: Any) -> str | None:
        # Leased by hub.delivery.leases.claim_batch; the next record of the
        # subscription is sent only once Kafka has acknowledged this one.
        topic = row.topic
        if topic is None:
            return "no topic"
        body = self._protector.decrypt(row.payload)
        headers = record_headers(row, body, self._source, self.restore_epoch)
        try:
            async with asyncio.timeout(self._deadline):
                producer = await self._ensure_producer()
                await self._ensure_topic(topic)
                await producer.send_and_wait(topic, value=body, key=_person_key(body, row.message_id),
                                             headers=headers)
        except Exception as exc:  # noqa: BLE001 - any failure is retried with backoff
            # A setting the cluster refuses (authentication, tls, authorization) told apart from a broker
            # down: named in the delivery's error, readiness and s117_kafka_misconfigured.
            cause = await kafka_security.note_failure("outbound", "kafka-topic", exc, self._bootstrap, self._security)
            return f"misconfigured: {cause} ({type(exc).__name__})" if cause else type(exc).__name__
        FAULTS.succeeded("outbound", "kafka-topic")
        return None

    def _outcome(self, row: Any, error: str | None, wait: float | None) -> None:
        attempts, topic = row.attempts + 1, row.topic
        if error is None:
            log.info("kafka topic delivered", delivery_id=row.delivery_id, event_id=row.event_id,
                     recipient=row.org_code, topic=topic, attempt=attempts, correlation_id=row.correlation_id)
        elif wait is None:
            log.error("kafka topic delivery dead-lettered", delivery_id=row.delivery_id, recipient=row.org_code,
                      topic=topic, attempt=attempts, error_kind=error, correlation_id=row.correlation_id)
        else:
            log.warning("kafka topic delivery failed, will retry", delivery_id=row.delivery_id,
                        recipient=row.org_code, topic=topic, attempt=attempts, error_kind=error,
                        next_attempt_in=round(wait, 2), correlation_id=row.correlation_id)
