"""The dispatcher writes one "event dispatched" line for a batch it
committed (hub/delivery/dispatcher.py `_BatchCache.count_dispatched`): its
fields are parallel lists naming each message (event id, correlation id,
event type, recipients allowed, refused, without a subscription, deliveries
queued), so a search for a change's correlation id finds its dispatch. A
message rolled back to its savepoint is not on it."""

from __future__ import annotations

import random
from datetime import date

from sqlalchemy import select
from structlog.testing import capture_logs

from hub.delivery import dispatcher as dispatcher_module
from hub.observability.logging import ALLOWED_KEYS
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import dispatched_events
from tests.support import subscribe_webhook

_LISTS = ("event_ids", "correlation_ids", "event_types", "allowed", "denied", "unsubscribed", "queued")


async def _post(app_hub, seed: int, run: str) -> list[str]:  # noqa: ANN001
    """The scenario's changes posted, each with its own correlation id; returns them."""
    ids = []
    for i, c in enumerate(detention_to_move_scenario(random.Random(seed), run, date(2025, 1, 6))):
        cid = f"cafe-{seed}-{i:04d}"
        r = await app_hub.http.post("/v1/register-changes", json=c, headers={
            "X-API-Key": app_hub.keys["trust"], "X-Correlation-Id": cid})
        assert r.status_code == 202, r.text
        ids.append(cid)
    return ids


def _dispatched_lines(logs: list[dict]) -> list[dict]:
    lines = [line for line in logs if line["event"] == "event dispatched"]
    for line in lines:
        assert set(line) - {"log_level"} <= ALLOWED_KEYS
        assert all(len(line[k]) == line["count"] for k in _LISTS)
    return lines


async def test_a_batch_is_one_line_naming_each_message_it_committed(app_hub) -> None:  # noqa: ANN001
    await subscribe_webhook(app_hub, "E06000060", "http://127.0.0.1:9/hook", "s" * 32)
    cids = await _post(app_hub, 41, "line-a")
    with capture_logs() as logs:
        batches = 0
        while await app_hub.hub.dispatcher.run_once():
            batches += 1
    async with app_hub.hub.engine.connect() as conn:
        committed = set((await conn.execute(select(dispatched_events.c.event_id))).scalars())
    lines = _dispatched_lines(logs)
    assert len(lines) == batches >= 1
    event_ids = [e for line in lines for e in line["event_ids"]]
    assert len(event_ids) == len(set(event_ids)) and set(event_ids) == committed
    # Every change's correlation id is on the line of its events' batch.
    assert set(cids) <= {c for line in lines for c in line["correlation_ids"]}
    rows = [dict(zip(_LISTS, row, strict=True)) for line in lines for row in zip(*(line[k] for k in _LISTS))]
    assert all(isinstance(r[k], int) for r in rows for k in _LISTS[3:])
    started = [r for r in rows if r["event_types"] == "s117-entitlement-started"]
    assert started and all(r["allowed"] >= 1 and r["queued"] >= 1 for r in started)


async def test_a_message_rolled_back_to_its_savepoint_is_not_on_the_line(app_hub, monkeypatch) -> None:  # noqa: ANN001
    await subscribe_webhook(app_hub, "E06000060", "http://127.0.0.1:9/hook", "s" * 32)
    await _post(app_hub, 42, "line-b")
    seen: list[str] = []  # handled
    seen_fail: list[str] = []  # the second message handled fails at its end, every time it is tried
    real_handle = dispatcher_module.Dispatcher.handle

    async def handle(self, conn, msg, cache=None):  # noqa: ANN001, ANN202
        if not seen_fail and len(seen) == 1:
            seen_fail.append(msg.event_id)
        seen.append(msg.event_id)
        await real_handle(self, conn, msg, cache)
        if msg.event_id in seen_fail:  # after its handling counted it for the line: rolled back
            raise RuntimeError("handler bug")

    monkeypatch.setattr(dispatcher_module.Dispatcher, "handle", handle)
    with capture_logs() as logs:
        for _ in range(20):  # the retries, then the dead letter, then the rest
            try:
                if not await app_hub.hub.dispatcher.run_once():
                    break
            except dispatcher_module._Retry:
                pass
    async with app_hub.hub.engine.connect() as conn:
        committed = set((await conn.execute(select(dispatched_events.c.event_id))).scalars())
    lines = _dispatched_lines(logs)
    event_ids = [e for line in lines for e in line["event_ids"]]
    assert seen_fail and seen_fail[0] not in event_ids  # failed, then dead-lettered: never dispatched
    assert len(event_ids) == len(set(event_ids)) and set(event_ids) == committed
    assert any(line["event"] == "event moved to dead letters" for line in logs)
