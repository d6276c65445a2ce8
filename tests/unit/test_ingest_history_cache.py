"""A change sent alone for someone this process recorded before takes their
history from the status cache (hub/ingest/status_cache.py `history`) when the
store holds as many changes for them (changes are only ever inserted), and
reads it again when it does not (another instance, or another service on the
same store, recorded one meanwhile): the answers and events are those of a
store read each time."""

from __future__ import annotations

import random
from datetime import date
from pathlib import Path

import orjson

from hub.agreements_loader import load_agreements
from hub.crypto import DataProtector
from hub.ingest.service import Client, IngestService
from hub.refdata.loader import load_reference_data
from hub.sample_data import detention_to_move_scenario
from hub.settings import REPO_ROOT
from hub.store.db import close_inline, create_engine, create_schema

_REF = load_reference_data()
_AGREEMENTS = load_agreements(REPO_ROOT / "contracts" / "area-agreements.yaml")
CLIENT = Client("t1", "Oxford Health", "RNU", "trust", ("register:write",))


def _service(engine, tmp_path: Path) -> IngestService:  # noqa: ANN001
    return IngestService(engine, _REF, _AGREEMENTS, DataProtector.from_settings(None, tmp_path / "key"))


def _answer(body: dict) -> tuple:
    assert body["status"] == "accepted", body
    return (body["status"], body["entitled"], [e["event_type"] for e in body["events"]], body["service_level"]["state"])


async def test_the_history_is_taken_from_the_cache_only_while_the_store_holds_as_many(tmp_path: Path) -> None:
    changes = detention_to_move_scenario(random.Random(5), "h", date(2025, 1, 6))  # detained ... moved
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    control_engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'control.db'}")
    try:
        await create_schema(engine)
        await create_schema(control_engine)
        control = _service(control_engine, tmp_path)
        expected = [_answer((await control.accept(CLIENT, orjson.dumps(c))).body) for c in changes]

        one, other = _service(engine, tmp_path), _service(engine, tmp_path)
        got = [_answer((await one.accept(CLIENT, orjson.dumps(c))).body) for c in changes[:2]]
        assert one.statuses.history_hits == 1  # the second change: the first's history, counted
        # Another service on the same store records the third: `one`'s history is one short.
        got.append(_answer((await other.accept(CLIENT, orjson.dumps(changes[2]))).body))
        got.append(_answer((await one.accept(CLIENT, orjson.dumps(changes[3]))).body))
        assert got == expected
        assert one.statuses.history_hits == 1  # read again: the store holds more
        # ... and from then on held again.
        again = dict(changes[3], source_message_id="h-again", effective_date="2025-02-20")
        await one.accept(CLIENT, orjson.dumps(again))
        assert one.statuses.history_hits == 2
    finally:
        close_inline(engine)
        close_inline(control_engine)
        await engine.dispose()
        await control_engine.dispose()
