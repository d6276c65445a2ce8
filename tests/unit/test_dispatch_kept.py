"""What the dispatcher keeps from one batch to the next (hub/delivery/dispatcher.py):
a person's status, evaluated again only for another history or another day;
each person's views of it, worked out again on another day (other agreements
may be in force) or for another status; and, within a batch, one write of
each recipient view with its last values (`_Writes.store_views`)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

from hub.delivery import dispatcher as dispatcher_module
from hub.delivery.dispatcher import _Writes
from hub.sample_data import detention_to_move_scenario
from hub.domain.dates import england_day


async def _post(app_hub, changes: list[dict]) -> None:  # noqa: ANN001
    for c in changes:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text


def _counting(monkeypatch, name: str) -> list[str]:  # noqa: ANN001
    """Each call of the dispatcher module's `name` (evaluate, views_for), by its first argument."""
    real = getattr(dispatcher_module, name)
    calls: list = []

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(dispatcher_module, name, counted)
    return calls


async def test_a_status_and_its_views_are_kept_across_batches_for_one_history_and_one_day(app_hub,  # noqa: ANN001
                                                                                            monkeypatch) -> None:
    d = app_hub.hub.dispatcher
    d._statuses = None  # not ingest's (in this process it holds the same statuses): the dispatcher's own
    changes = detention_to_move_scenario(random.Random(81), "kept-1", date(2025, 1, 6))
    await _post(app_hub, changes[:-1])
    while await d.run_once():
        pass
    # The move of someone entitled: recorded, moved-out-of-area, a review. Every event of one change
    # has the same history (an older change's events tell the history as it was once it was recorded:
    # a history of their own, evaluated for them).
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=changes[-1])
    events = len(r.json()["events"])
    assert events >= 3
    evaluated, viewed = _counting(monkeypatch, "evaluate"), _counting(monkeypatch, "views_for")
    day = england_day()
    d._today = lambda: day
    handled = 0
    for _ in range(events - 1):  # one event a batch
        handled += await d.run_once(1)
    assert handled == events - 1
    assert len(evaluated) == 1 and len(viewed) == 1, "one history, one day: evaluated once, its views worked out once"

    d._today = lambda: day + timedelta(days=1)  # the next day: reviews fall due, agreements come into force
    handled = await d.run_once(1)
    assert handled == 1
    assert len(evaluated) == 2 and len(viewed) == 2, "another day: evaluated again and its views worked out again"


async def test_a_new_change_makes_the_status_evaluated_again(app_hub, monkeypatch) -> None:  # noqa: ANN001
    d = app_hub.hub.dispatcher
    d._statuses = None
    changes = detention_to_move_scenario(random.Random(82), "kept-2", date(2025, 1, 6))
    assert len(changes) >= 2
    await _post(app_hub, changes[:1])
    evaluated = _counting(monkeypatch, "evaluate")
    while await d.run_once():
        pass
    assert len(evaluated) == 1
    await _post(app_hub, changes[1:2])
    while await d.run_once():
        pass
    assert len(evaluated) == 2, "the history has another change: not the status kept for the one before"


def _one_by_one(steps: list[tuple[str, str, dict, bool]]) -> dict[tuple[str, str], dict]:
    """recipient_views as the writes made one at a time would leave it (an insert, then updates)."""
    table: dict[tuple[str, str], dict] = {}
    for person, org, values, new in steps:
        key = (person, org)
        if new:
            assert key not in table
            table[key] = dict(values)
        else:
            table[key] = dict(values)
    return table


def test_a_batch_writes_each_view_once_with_the_rows_the_writes_one_by_one_leave() -> None:
    at = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)

    def v(n: int) -> dict:
        return {"version": n, "view": {"roles": ["council"], "n": n}, "last_event_id": f"e{n}",
                "updated_at": at + timedelta(seconds=n)}

    # (person, org, values, new): a view inserted then moved twice, one held before and moved twice,
    # one held before and moved once, and a view inserted by one message for another person.
    steps = [("p1", "A", v(1), True), ("p1", "B", v(5), False), ("p1", "A", v(2), False),
             ("p2", "A", v(1), True), ("p1", "B", v(6), False), ("p1", "A", v(3), False), ("p1", "C", v(9), False)]
    writes = _Writes()
    for person, org, values, new in steps:  # one message's views at a time, as `handle` stores them
        writes.store_views(person, {org: (values, new)})
    inserted = {(r["person_id"], r["org_code"]): {k: r[k] for k in ("version", "view", "last_event_id", "updated_at")}
                for r in writes.view_inserts.values()}
    updated = {(r["p"], r["o"]): {"version": r["v_version"], "view": r["v_view"], "last_event_id": r["v_last"],
                                  "updated_at": r["v_at"]} for r in writes.view_updates.values()}
    assert not inserted.keys() & updated.keys(), "a view the batch inserts is written by its insert alone"
    assert {**inserted, **updated} == _one_by_one(steps)
    assert len(inserted) == 2 and len(updated) == 2
    assert steps[0][2] == v(1), "the values stored by a message are not changed"


async def test_a_persons_messages_in_a_batch_share_their_rendered_parts_and_validate(app_hub,  # noqa: ANN001
                                                                                       monkeypatch) -> None:
    import orjson  # noqa: PLC0415
    from sqlalchemy import select  # noqa: PLC0415

    from hub.fhir.validate import validate_message  # noqa: PLC0415
    from hub.store.schema import delivery_messages  # noqa: PLC0415

    made: list = []

    class Counted(dispatcher_module.EventMessages):
        def __init__(self, **kwargs) -> None:  # noqa: ANN003
            made.append((id(kwargs["status"]), id(kwargs["change"])))
            super().__init__(**kwargs)

    monkeypatch.setattr(dispatcher_module, "EventMessages", Counted)
    d = app_hub.hub.dispatcher
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys["E06000060"]},
                                json={"url": "http://127.0.0.1:9/hook", "secret": "x" * 32})
    assert r.status_code == 201, r.text
    changes = detention_to_move_scenario(random.Random(83), "kept-3", date(2025, 1, 6))
    await _post(app_hub, changes)
    handled = await d.run_once(100)  # one batch: every change's events
    assert handled >= 3
    async with app_hub.hub.engine.connect() as conn:
        payloads = [r.payload for r in await conn.execute(select(delivery_messages.c.payload))]
    assert len(payloads) >= 3
    # One renderer a status and change: a change's events (a move is three) and their recipients share it.
    assert len(made) == len(set(made)) < len(payloads)
    for p in payloads:
        validate_message(orjson.loads(app_hub.hub.protector.decrypt(p)))
