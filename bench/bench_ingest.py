"""Ingest throughput and latency, embedded mode (SQLite), in-process.

Measures `IngestService.accept` (validate, person upsert, re-evaluate the
person's timeline, derive events, write change + outbox + service level +
idempotency answer in one fsync'd transaction) against a baseline measured in
the same run: inserting the same register-change row alone, one transaction
each, on the same database file. The ratio is the price of the rules, the
outbox and the audit trail on top of the unavoidable durable write.

    .venv/bin/python bench/bench_ingest.py [people]   (4 changes per person)
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import orjson

from hub.agreements_loader import load_agreements
from hub.crypto import DataProtector
from hub.ingest.service import Client, IngestService
from hub.observability.logging import configure_logging
from hub.refdata.loader import load_reference_data
from hub.sample_data import detention_to_move_scenario
from hub.settings import REPO_ROOT
from hub.store.db import create_engine, create_schema
from hub.store.schema import persons, register_changes


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1]


async def main(people: int) -> None:
    configure_logging("WARNING")
    tmp = Path(tempfile.mkdtemp())
    rng = random.Random(117)
    changes = [c for i in range(people)
               for c in detention_to_move_scenario(rng, f"b{i}", date(2024, 1, 1))]
    client = Client("bench-trust", "bench", "RNU", "trust", ("register:write",))

    engine = create_engine(f"sqlite+aiosqlite:///{tmp / 'baseline.db'}")
    await create_schema(engine)
    async with engine.begin() as conn:
        await conn.execute(persons.insert().values(person_id="p", nhs_number_index="x", details=b"x",
                                                   created_at=datetime.now(UTC), updated_at=datetime.now(UTC)))
    base_lat = []
    t0 = time.perf_counter()
    for c in changes:
        s = time.perf_counter()
        async with engine.begin() as conn:
            await conn.execute(register_changes.insert().values(
                change_id=str(uuid.uuid4()), person_id="p", source="bench", source_message_id=c["source_message_id"],
                change_type=c["change_type"], effective_date=date.fromisoformat(c["effective_date"]),
                notified_on=date.today(), recorded_on=date.today(), canonical=orjson.loads(orjson.dumps(c)),
                correlation_id="x", received_at=datetime.now(UTC)))
        base_lat.append(time.perf_counter() - s)
    base_total = time.perf_counter() - t0
    await engine.dispose()

    engine = create_engine(f"sqlite+aiosqlite:///{tmp / 'hub.db'}")
    await create_schema(engine)
    service = IngestService(engine, load_reference_data(),
                            load_agreements(REPO_ROOT / "contracts" / "area-agreements.yaml"),
                            DataProtector.from_settings(None, tmp / "key"))
    hub_lat = []
    t0, cpu0 = time.perf_counter(), time.process_time()
    for c in changes:
        body = orjson.dumps(c)
        s = time.perf_counter()
        outcome = await service.accept(client, body)
        hub_lat.append(time.perf_counter() - s)
        assert outcome.status_code == 202, outcome.body
    hub_total, hub_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await engine.dispose()

    n = len(changes)
    print(f"{n} register changes ({people} people x 4), SQLite WAL synchronous=FULL, one process")
    print(f"{'':28}{'changes/s':>10}{'p50 ms':>9}{'p95 ms':>9}")
    for name, total, lat in (("baseline: bare row insert", base_total, base_lat),
                             ("hub: IngestService.accept", hub_total, hub_lat)):
        print(f"{name:28}{n / total:10.0f}{pct(lat, 50) * 1000:9.2f}{pct(lat, 95) * 1000:9.2f}")
    print(f"ratio hub/baseline time per change: {hub_total / base_total:.2f}x")
    # The process's CPU (its threads, the WAL checkpointer's too; user and kernel): a figure the disk's speed moves less.
    print(f"hub CPU per change: {hub_cpu / n * 1000:.3f} ms")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 250))
