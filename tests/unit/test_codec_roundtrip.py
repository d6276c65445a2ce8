"""hub/codec.py: what the outbox stores (`to_jsonable` of events, changes and
statuses) comes back as equal objects (`from_jsonable`), through the
converters worked out once per type; over many generated people and over
the rules' own output, so every field type the domain uses is crossed."""

from __future__ import annotations

import random
from datetime import date

import orjson
import pytest

from hub.bus.payload import status_on_the_bus
from hub.codec import from_jsonable, to_jsonable
from hub.domain.model import DomainEvent, RegisterChange, S117Status
from hub.domain.dates import england_day


@pytest.fixture(scope="module")
def outbox(tmp_path_factory):  # noqa: ANN001, ANN201
    """The bus payloads of a few hundred changes accepted through the real
    ingest path; the last payload of each person also carries, as
    `whole_status`, their status evaluated with its history (the bus leaves
    the history out: hub/bus/payload.py)."""
    import asyncio

    from hub.agreements_loader import load_agreements
    from hub.crypto import DataProtector
    from hub.ingest.service import Client, IngestService
    from hub.refdata.loader import load_reference_data
    from hub.sample_data import detention_to_move_scenario
    from hub.settings import REPO_ROOT
    from hub.store.db import create_engine, create_schema
    from hub.domain.rules import evaluate
    from hub.store.schema import bus_messages, register_changes
    from sqlalchemy import select

    tmp = tmp_path_factory.mktemp("codec")

    async def run() -> list[dict]:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp / 'hub.db'}")
        await create_schema(engine)
        ref, agreements = load_reference_data(), load_agreements(REPO_ROOT / "contracts" / "area-agreements.yaml")
        service = IngestService(engine, ref, agreements, DataProtector.from_settings(None, tmp / "key"))
        client = Client("t", "trust", "RNU", "trust", ("register:write",))
        rng = random.Random(117)
        for i in range(40):
            for change in detention_to_move_scenario(rng, f"c{i}", date(2023, 1, 2)):
                assert (await service.accept(client, orjson.dumps(change))).status_code == 202
        async with engine.connect() as conn:
            rows = (await conn.execute(select(bus_messages.c.payload).order_by(bus_messages.c.offset))).scalars().all()
            histories: dict[str, list[RegisterChange]] = {}
            for r in await conn.execute(select(register_changes.c.person_id, register_changes.c.canonical)):
                histories.setdefault(r.person_id, []).append(from_jsonable(RegisterChange, r.canonical))
        service.close()
        await engine.dispose()
        last = {p["event"]["person_id"]: p for p in rows}
        for pid, p in last.items():
            p["whole_status"] = to_jsonable(evaluate(pid, histories[pid], ref, agreements, england_day()))
        return list(rows)

    return asyncio.run(run())


def test_events_changes_and_statuses_come_back_equal(outbox) -> None:  # noqa: ANN001
    assert len(outbox) >= 100
    kinds = set()
    for payload in outbox:
        for key, cls in (("event", DomainEvent), ("change", RegisterChange), ("status", S117Status)):
            obj = from_jsonable(cls, payload[key])
            assert isinstance(obj, cls)
            # nothing lost or changed on the way back
            assert (status_on_the_bus(obj) if cls is S117Status else to_jsonable(obj)) == payload[key]
            assert from_jsonable(cls, to_jsonable(obj)) == obj
            kinds.add(type(obj).__name__)
    assert kinds == {"DomainEvent", "RegisterChange", "S117Status"}
    wholes = [p["whole_status"] for p in outbox if "whole_status" in p]
    assert len(wholes) == 40 and all(w["history"] for w in wholes)
    for whole in wholes:  # statuses with their history
        obj = from_jsonable(S117Status, whole)
        assert to_jsonable(obj) == whole and from_jsonable(S117Status, to_jsonable(obj)) == obj
        assert all(not isinstance(e, dict) for e in obj.history)


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


def test_the_status_on_the_bus_is_the_status_without_its_history(outbox) -> None:  # noqa: ANN001
    """hub/bus/payload.py: the outbox's status is to_jsonable's, byte for
    byte, but for the history it leaves out; it decodes to the same status
    with no history."""
    from dataclasses import replace

    statuses = [from_jsonable(S117Status, p["whole_status"]) for p in outbox if "whole_status" in p]
    assert statuses and all(len(s.history) >= 3 for s in statuses)
    for status in statuses:
        whole = to_jsonable(status)
        del whole["history"]
        got = status_on_the_bus(status)
        assert "history" not in got
        assert orjson.dumps(got) == orjson.dumps(whole)
        assert from_jsonable(S117Status, got) == replace(status, history=())

