"""Ingest batches on both stores: a batch's people, earlier answers and
histories are read in three statements for the batch
(hub/ingest/prefetch.py); every change must get exactly the answer it would
get alone: events from the person's whole history, a repeat's first answer,
a 409 for a message id reused with another payload, a new person created once."""

from __future__ import annotations

import asyncio
import random
from datetime import date

import pytest
from sqlalchemy import event, func, select

from hub.domain.rules import derive_events, evaluate
from hub.codec import from_jsonable
from hub.domain.model import RegisterChange
from hub.observability import metrics
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import including_retracted, ingest_results, persons, register_changes

pytestmark = pytest.mark.integration


def _people(n: int, seed: int) -> list[list[dict]]:
    return [detention_to_move_scenario(random.Random(seed + i), f"pf-{seed}-{i}", date(2025, 1, 6)) for i in range(n)]


async def test_a_batch_answers_each_change_as_it_would_alone(store_hub) -> None:  # noqa: ANN001
    hub, http, key = store_hub.hub, store_hub.http, {"X-API-Key": store_hub.keys["trust"]}
    people = _people(12, 700)
    firsts = [p[0] for p in people]
    for r in await asyncio.gather(*(http.post("/v1/register-changes", headers=key, json=c) for c in firsts)):
        assert r.status_code == 202, r.text

    statements: list[str] = []
    listen = hub.engine.dialect.name == "postgresql"
    if listen:
        event.listen(hub.engine.sync_engine, "before_cursor_execute",
                     lambda _c, _cur, stmt, *_a: statements.append(stmt))
    # In one burst (one or a few batches): each person's next change, a repeat
    # of a first change, a first change's id reused with another payload, a new person.
    seconds = [p[1] for p in people[:8]]
    repeat = firsts[8]
    reused = {**firsts[9], "effective_date": "2024-12-01"}
    newcomer = _people(1, 900)[0][0]
    sent = [*seconds, repeat, reused, newcomer]
    # Which units found the batch's reads (both stores), and no batch fell back to one change at a
    # time (the newcomer's row is inserted with the batch's inserts: ahead of them all, or
    # the others' rows, queued first, would name a person not there yet).
    ingest = hub.ingest
    prefetched: list[bool] = []
    lock_or_create = ingest._lock_or_create_person

    async def spy(conn, nhs_number, details, now, pre=None, index=None):  # noqa: ANN001, ANN202
        prefetched.append(pre is not None)
        return await lock_or_create(conn, nhs_number, details, now, pre, index)

    ingest._lock_or_create_person = spy
    fallbacks = metrics.INGEST_FALLBACKS._value.get()
    answers = await asyncio.gather(*(http.post("/v1/register-changes", headers=key, json=c) for c in sent))
    del ingest._lock_or_create_person
    assert any(prefetched) and metrics.INGEST_FALLBACKS._value.get() == fallbacks
    by_id = dict(zip((c["source_message_id"] for c in sent), answers, strict=True))
    for c in seconds:
        assert by_id[c["source_message_id"]].status_code == 202, by_id[c["source_message_id"]].text
        assert not by_id[c["source_message_id"]].json().get("duplicate")
    assert by_id[repeat["source_message_id"]].status_code == 202
    assert by_id[repeat["source_message_id"]].json()["duplicate"] is True
    assert by_id[reused["source_message_id"]].status_code == 409
    assert by_id[newcomer["source_message_id"]].status_code == 202

    # Each second change's events are those its person's whole history gives, as evaluated alone.
    async with hub.engine.connect() as conn:
        for c in seconds:
            body = by_id[c["source_message_id"]].json()
            pid = body["person_id"]
            rows = (await conn.execute(including_retracted(select(register_changes.c.canonical)
                                       .where(register_changes.c.person_id == pid)))).scalars().all()
            history = [from_jsonable(RegisterChange, r) for r in rows]
            assert len(history) == 2
            [change] = [h for h in history if h.source_message_id == c["source_message_id"]]
            earlier = [h for h in history if h is not change]
            today = ingest._today()
            before = evaluate(pid, earlier, ingest._ref, ingest._agreements, today)
            after = evaluate(pid, history, ingest._ref, ingest._agreements, today)
            expected = [e.event_type.value for e in
                        derive_events(before, after, change, holidays=ingest._ref.bank_holidays())]
            assert [e["event_type"] for e in body["events"]] == expected
            assert expected  # a second change of the scenario always tells someone something
        people_n = (await conn.execute(select(func.count()).select_from(persons))).scalar_one()
        answers_n = (await conn.execute(select(func.count()).select_from(ingest_results))).scalar_one()
        await conn.rollback()
    assert people_n == 13 and answers_n == 12 + 8 + 1
    if listen:  # the batch read, not a lock and a history read per change
        locks = [s for s in statements if "FOR UPDATE" in s]
        assert locks and all("unnest" in s for s in locks), locks  # one array: the batch read
        # The newcomer's row went out with the batch's inserts (the topic lock held), not as an
        # `INSERT ... ON CONFLICT` round trip of its own inside the batch.
        person_inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO PERSONS")]
        assert person_inserts and not any("ON CONFLICT" in s.upper() for s in person_inserts), person_inserts
