"""A hub started while Kafka does not answer (hub/bus/kafka.py `TopicWait`): the topic is not made,
and nothing that needs it starts, until Kafka answers; the end-to-end case is
tests/e2e/test_production_faults.py::test_the_hub_started_while_kafka_is_down_takes_changes_and_relays_them_once_it_is_up."""

from __future__ import annotations

import asyncio
import time

from hub.bus.kafka import KafkaLog, TopicWait
from tests.support import free_port


async def test_kafka_not_answering_at_start_is_a_wait_named_not_an_exception():
    port = free_port()  # nothing listens there: connections refused, as a broker that is down
    wait = TopicWait(f"127.0.0.1:{port}", "s117.events", partitions=3)
    assert await wait.try_once(timeout_ms=2000) is False
    assert not wait.ready.is_set()
    assert "kafka not reachable" in wait.waiting and "s117.events" in wait.waiting and "outbox" in wait.waiting


async def test_no_consumer_is_started_before_the_topic_is_made():
    """Before the topic is made a fetch waits its usual time and finds nothing, and the lag is 0 (what
    waits is in the outbox): no consumer joins a group on a topic the broker might make itself."""
    ready = asyncio.Event()
    log = KafkaLog(f"127.0.0.1:{free_port()}", fetch_timeout_ms=200, topic_ready=ready)
    started = time.monotonic()
    assert await log.fetch("dispatcher", "s117.events") == []
    assert 0.15 < time.monotonic() - started < 2
    assert await log.lag("dispatcher", "s117.events") == 0
    assert log._groups == {} and log._probe is None
    await log.close()
