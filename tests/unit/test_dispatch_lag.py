"""The dispatcher's lag gauge (`s117_consumer_lag_messages`): what is left
after the committed offset, counted after a batch at most once a
`lag_every` while batches come, and 0 as soon as a fetch finds nothing."""

from __future__ import annotations

from prometheus_client import REGISTRY

from hub.bus.port import EVENTS_TOPIC
from hub.delivery.dispatcher import GROUP
from tests.support import push_scenario


def _lag() -> float | None:
    return REGISTRY.get_sample_value("s117_consumer_lag_messages", {"group": GROUP, "topic": EVENTS_TOPIC})


async def test_the_lag_is_counted_after_a_batch_at_most_once_a_period_and_zero_when_idle(app_hub) -> None:  # noqa: ANN001
    hub = app_hub.hub
    dispatcher = hub.dispatcher
    await push_scenario(app_hub, seed=71)  # dispatched: nothing waiting
    events = await push_scenario_undispatched(app_hub)
    assert len(events) >= 4
    dispatcher.lag_every = 3600.0
    dispatcher._lag_counted_at = float("-inf")
    assert await dispatcher.run_once(limit=1) == 1
    assert _lag() == len(events) - 1  # counted: the first batch since the period began
    assert await dispatcher.run_once(limit=1) == 1
    assert _lag() == len(events) - 1  # within the period: not counted again
    while await dispatcher.run_once():
        pass
    assert _lag() == 0  # the fetch that found nothing


async def push_scenario_undispatched(app_hub) -> list[dict]:  # noqa: ANN001
    """One more person's changes posted, not dispatched; the events the hub reported."""
    import random
    from datetime import date

    from hub.sample_data import detention_to_move_scenario

    events: list[dict] = []
    for c in detention_to_move_scenario(random.Random(72), "lag-check", date(2025, 1, 6)):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
        events += r.json()["events"]
    return events


async def test_the_workflow_consumers_lag_is_counted_at_most_once_a_period(app_hub, monkeypatch) -> None:  # noqa: ANN001
    """The workflow consumer counts its lag as the dispatcher does: on Kafka a
    count is four requests to the broker, and it came after every batch."""
    hub = app_hub.hub
    consumer = hub.workflow_consumer
    await push_scenario_undispatched(app_hub)
    monkeypatch.setattr(hub.bus, "pass_over", None, raising=False)  # as on Kafka: every batch committed
    consumer.lag_every = 3600.0
    consumer._lag_counted_at = float("-inf")
    waiting = await hub.bus.lag("workflows", EVENTS_TOPIC)
    assert waiting >= 3

    def lag() -> float | None:
        return REGISTRY.get_sample_value("s117_consumer_lag_messages", {"group": "workflows", "topic": EVENTS_TOPIC})

    assert await consumer.run_once(limit=1) == 1
    assert lag() == waiting - 1  # counted: the first batch since the period began
    assert await consumer.run_once(limit=1) == 1
    assert lag() == waiting - 1  # within the period: not counted again
    while await consumer.run_once():
        pass
    assert lag() == 0  # the fetch that found nothing
