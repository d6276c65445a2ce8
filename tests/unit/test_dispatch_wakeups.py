"""The dispatcher wakes, after a batch commits, the deliverer of each channel
it queued deliveries on, and only those (a wake-up makes a deliverer look
for due heads at once rather than at its next poll; waking every channel on
every batch cost each of them a poll)."""

from __future__ import annotations

from tests.support import push_scenario, subscribe_webhook


async def test_only_the_channels_queued_on_are_woken(app_hub) -> None:  # noqa: ANN001
    woken: list[str] = []
    app_hub.hub.dispatcher.on_queued = {ch: (lambda ch=ch: woken.append(ch))
                                        for ch in ("webhook", "kafka", "council-file", "fhir")}
    await push_scenario(app_hub, 3)  # no subscriber yet: nothing queued, nobody woken
    assert woken == []
    await subscribe_webhook(app_hub, "E06000060", "http://127.0.0.1:9/hooks", "s" * 32)
    await push_scenario(app_hub, 4)
    assert woken and set(woken) == {"webhook"}
