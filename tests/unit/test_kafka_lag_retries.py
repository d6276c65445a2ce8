"""`KafkaLog.lag` (the consumer-lag gauge, `s117_consumer_lag_messages`, and its alert; the dispatcher's
and the relay's readiness read it too): a partition's leadership moving or a topic just made answers
with a retriable Kafka error for a moment; it is asked again rather than reported (the contract test
tests/contract/test_bus_contract.py::test_lag_counts_what_the_group_has_not_committed_and_reaches_zero
once failed on a fresh broker with NotLeaderForPartitionError). A lasting or non-retriable error is
still raised."""

from __future__ import annotations

import pytest
from aiokafka.errors import GroupAuthorizationFailedError, NotLeaderForPartitionError

from hub.bus import kafka
from hub.bus.kafka import KafkaLog


def _log(monkeypatch, answers: list) -> tuple[KafkaLog, list[int]]:  # noqa: ANN001
    log, asked = KafkaLog("127.0.0.1:9"), []
    monkeypatch.setattr(kafka, "LAG_RETRY_SECONDS", 0.001)

    async def lag(group_id: str, topic: str) -> int:
        asked.append(1)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(log, "_lag", lag)
    return log, asked


async def test_a_leadership_moving_is_asked_again(monkeypatch) -> None:  # noqa: ANN001
    log, asked = _log(monkeypatch, [NotLeaderForPartitionError(), NotLeaderForPartitionError(), 5])
    assert await log.lag("dispatcher", "s117.events") == 5
    assert len(asked) == 3


async def test_a_lasting_or_non_retriable_error_is_raised(monkeypatch) -> None:  # noqa: ANN001
    log, asked = _log(monkeypatch, [NotLeaderForPartitionError()] * kafka.LAG_ATTEMPTS)
    with pytest.raises(NotLeaderForPartitionError):
        await log.lag("dispatcher", "s117.events")
    assert len(asked) == kafka.LAG_ATTEMPTS
    log, asked = _log(monkeypatch, [GroupAuthorizationFailedError(), 5])
    with pytest.raises(GroupAuthorizationFailedError):
        await log.lag("dispatcher", "s117.events")
    assert len(asked) == 1  # an ACL refusal is not a moment's: said at once
