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
