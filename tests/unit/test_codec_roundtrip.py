"""hub/codec.py: what the outbox stores (`to_jsonable` of events, changes and
statuses) comes back as equal objects (`from_jsonable`), through the
converters worked out once per type; over many generated people and over
the rules' own output, so every field type the domain uses is crossed."""

from __future__ import annotations

import random
from datetime import date

import orjson
import pytest

from hub.codec import from_jsonable, to_jsonable
from hub.domain.model import DomainEvent, RegisterChange, S117Status


@pytest.fixture(scope="module")
def outbox(tmp_path_factory):  # noqa: ANN001, ANN201
    """The bus payloads of a few hundred changes accepted through the real ingest path."""
    import asyncio

    from hub.agreements_loader import load_agreements
    from hub.crypto import DataProtector
    from hub.ingest.service import Client, IngestService
    from hub.refdata.loader import load_reference_data
    from hub.sample_data import detention_to_move_scenario
    from hub.settings import REPO_ROOT
    from hub.store.db import create_engine, create_schema
    from hub.store.schema import bus_messages
    from sqlalchemy import select

    tmp = tmp_path_factory.mktemp("codec")

    async def run() -> list[dict]:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp / 'hub.db'}")
        await create_schema(engine)
        service = IngestService(engine, load_reference_data(),
                                load_agreements(REPO_ROOT / "contracts" / "area-agreements.yaml"),
                                DataProtector.from_settings(None, tmp / "key"))
        client = Client("t", "trust", "RNU", "trust", ("register:write",))
        rng = random.Random(117)
        for i in range(40):
            for change in detention_to_move_scenario(rng, f"c{i}", date(2023, 1, 2)):
                assert (await service.accept(client, orjson.dumps(change))).status_code == 202
        async with engine.connect() as conn:
            rows = (await conn.execute(select(bus_messages.c.payload))).scalars().all()
        service.close()
        await engine.dispose()
        return list(rows)

    return asyncio.run(run())


def test_events_changes_and_statuses_come_back_equal(outbox) -> None:  # noqa: ANN001
    assert len(outbox) >= 100
    kinds = set()
    for payload in outbox:
        for key, cls in (("event", DomainEvent), ("change", RegisterChange), ("status", S117Status)):
            obj = from_jsonable(cls, payload[key])
            assert isinstance(obj, cls)
            assert to_jsonable(obj) == payload[key]  # nothing lost or changed on the way back
            assert from_jsonable(cls, to_jsonable(obj)) == obj
            kinds.add(type(obj).__name__)
    assert kinds == {"DomainEvent", "RegisterChange", "S117Status"}


def test_dates_enums_and_nested_dataclasses_are_rebuilt_not_left_as_json(outbox) -> None:  # noqa: ANN001
    status = from_jsonable(S117Status, next(p["status"] for p in outbox if p["status"].get("responsible_council")))
    assert status.responsible_council is not None and not isinstance(status.responsible_council, dict)
    change = from_jsonable(RegisterChange, outbox[0]["change"])
    assert isinstance(change.effective_date, date)
    event = from_jsonable(DomainEvent, outbox[0]["event"])
    assert type(event.event_type).__name__ == "EventType"


def _reference_to_jsonable(value):  # noqa: ANN001, ANN202 - to_jsonable as it was before its encoders were generated
    import dataclasses
    from datetime import datetime
    from enum import Enum

    if type(value) in (str, int, float, bool, type(None)):
        return value
    if dataclasses.is_dataclass(type(value)):
        return {f.name: _reference_to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(type(value))}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, (list, tuple, frozenset, set)):
        return [_reference_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _reference_to_jsonable(v) for k, v in value.items()}
    return value


def test_generated_encoders_give_the_walk_of_the_fields_byte_for_byte(outbox) -> None:  # noqa: ANN001
    """to_jsonable's per-type generated encoders against the plain walk they
    replaced, over the outbox's events, changes and statuses and over the odd
    values a field may hold (enums that are str or int, datetimes, sets,
    non-string keys, tuple subclasses, an object it does not know)."""
    import dataclasses
    from collections import namedtuple
    from datetime import datetime
    from enum import Enum, IntEnum

    for payload in outbox:
        for key, cls in (("event", DomainEvent), ("change", RegisterChange), ("status", S117Status)):
            obj = from_jsonable(cls, payload[key])
            assert orjson.dumps(to_jsonable(obj)) == orjson.dumps(_reference_to_jsonable(obj))

    class Colour(str, Enum):
        RED = "red"

    class Size(IntEnum):
        BIG = 3

    Pair = namedtuple("Pair", "a b")  # noqa: PYI024

    class Opaque:
        pass

    opaque = Opaque()

    @dataclasses.dataclass
    class Inner:
        when: datetime
        tags: frozenset

    @dataclasses.dataclass(frozen=True, slots=True)
    class Outer:
        colour: Colour
        size: Size
        inner: Inner | None
        pairs: tuple
        by_number: dict
        other: object
        flag: bool = True
        value: str = "x"

    values = [
        Outer(Colour.RED, Size.BIG, Inner(datetime(2025, 1, 2, 3, 4, 5), frozenset({"b"})), (Pair(1, date(2024, 1, 1)),),
              {1: [Colour.RED], "k": {2: None}}, opaque),
        Outer(Colour.RED, Size.BIG, None, (), {}, None, False, ""),
        [Size.BIG, {"x": (1.5, None)}], {3, 4}, opaque, "plain", 7, None,
    ]
    for value in values:
        assert to_jsonable(value) == _reference_to_jsonable(value)
        assert repr(to_jsonable(value)) == repr(_reference_to_jsonable(value))  # same order, same types


def test_a_status_with_its_history_memoised_is_the_same_json(outbox) -> None:  # noqa: ANN001
    """The bulk path's status JSON (to_jsonable_with + HistoryJson: a
    person's history entries encoded once over their successive statuses) is
    to_jsonable's, byte for byte: statuses that extend the history held,
    that replace it (a replayed fold: new entry objects) and that shorten it."""
    from dataclasses import replace
    from functools import partial

    from hub.codec import to_jsonable_with
    from hub.ingest.service import HistoryJson

    memo = HistoryJson()
    statuses = [from_jsonable(S117Status, p["status"]) for p in outbox]
    longest = max(statuses, key=lambda s: len(s.history))
    entries = longest.history
    assert len(entries) >= 3
    encoded = []
    for status in [
        *(replace(longest, history=entries[:k]) for k in range(len(entries) + 1)),  # grown one at a time
        replace(longest, history=entries[:2]),  # shorter than the one held
        replace(longest, history=entries),
        replace(longest, history=(*from_jsonable(S117Status, to_jsonable(longest)).history,)),  # new objects
        *statuses,  # other people's under the same id: none of their entries is the one held
    ]:
        got = to_jsonable_with(status, "history", partial(memo.encode, "P"))
        assert orjson.dumps(got) == orjson.dumps(to_jsonable(status))
        encoded.append(got)
    # Nothing encoded later changed a list handed out before (payloads wait for the batch's flush).
    assert [orjson.dumps(e) for e in encoded] == [orjson.dumps(to_jsonable(s)) for s in [
        *(replace(longest, history=entries[:k]) for k in range(len(entries) + 1)),
        replace(longest, history=entries[:2]), longest, longest, *statuses]]
