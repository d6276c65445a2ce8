"""Reconciliation of a big list, embedded mode (SQLite), each phase in its own
process so its peak RSS is its own.

A register of `--register` people (default 10,000; each a qualifying s3
detention and discharge, written straight to the store) and a council's
snapshot of `--rows` rows (default 100,000: the register's people, with one in
fifty seeded to differ, plus people the hub never heard of), as NDJSON.

- baseline: read the same file in the same chunks, parse each row and compute
  the keyed hash of its NHS number (the least any reconciliation must do);
- hub: `ReconciliationService.receive` (validate, store in batches) then
  `Reconciler.compare_snapshot` (merge join against the register, each person
  evaluated from their history, items written).

Prints rows/s and peak RSS of each, and the ratio.

    .venv/bin/python bench/bench_snapshot.py [--rows 100000] [--register 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import orjson

CHUNK = 256 * 1024


def nhs_numbers(n: int) -> list[str]:
    from hub.ingest.nhs_number import with_check_digit

    out, i = [], 0
    while len(out) < n:
        num = with_check_digit(f"{900000000 + i:09d}")
        i += 1
        if num:
            out.append(num)
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _prepare(work: Path, rows: int, register: int) -> None:
    from hub.codec import to_jsonable
    from hub.crypto import DataProtector
    from hub.domain.model import ChangeType, RegisterChange
    from hub.store.db import create_engine, create_schema
    from hub.store.schema import persons, register_changes

    engine = create_engine(f"sqlite+aiosqlite:///{work / 'hub.db'}")
    await create_schema(engine)
    protector = DataProtector.from_settings(None, work / "data.key")
    numbers = nhs_numbers(rows)
    now = datetime.now(UTC)
    for start in range(0, register, 2000):
        p_rows, c_rows = [], []
        for nhs in numbers[start:min(register, start + 2000)]:
            pid = str(uuid.uuid4())
            p_rows.append({"person_id": pid, "nhs_number_index": protector.index(nhs),
                           "details": protector.encrypt(orjson.dumps({"nhs_number": nhs})),
                           "created_at": now, "updated_at": now})
            for ct, eff, extra in ((ChangeType.DETAINED, date(2025, 1, 6),
                                    {"legal_status_code": "03", "hospital_ods": "RNU", "gp_practice_ods": "K82001",
                                     "residence_la_gss": "E06000060"}),
                                   (ChangeType.LEFT_HOSPITAL, date(2025, 4, 7), {"hospital_ods": "RNU"})):
                ch = RegisterChange(change_id=str(uuid.uuid4()), person_id=pid, change_type=ct, effective_date=eff,
                                    notified_on=eff, recorded_on=eff, source="bench", **extra)
                c_rows.append({"change_id": ch.change_id, "person_id": pid, "source": "bench",
                               "source_message_id": ch.change_id, "change_type": ct.value, "effective_date": eff,
                               "notified_on": eff, "recorded_on": eff, "canonical": to_jsonable(ch),
                               "correlation_id": "bench", "received_at": now})
        async with engine.begin() as conn:
            await conn.execute(persons.insert(), p_rows)
            await conn.execute(register_changes.insert(), c_rows)
    await engine.dispose()
    with (work / "snapshot.ndjson").open("wb") as f:
        for i, nhs in enumerate(numbers):
            row = {"nhs_number": nhs, "local_id": f"SW-{i}", "entitled": True, "responsible_council": "E06000060",
                   "responsible_icb": "QU9" if i % 50 else "QHL", "entitlement_start": "2025-04-07"}
            f.write(orjson.dumps(row) + b"\n")


def baseline(work: Path) -> dict:
    from hub.crypto import DataProtector

    protector = DataProtector.from_settings(None, work / "data.key")
    t0 = time.perf_counter()
    n, buf = 0, b""
    with (work / "snapshot.ndjson").open("rb") as f:
        while chunk := f.read(CHUNK):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line:
                    protector.index(orjson.loads(line)["nhs_number"])
                    n += 1
    return {"rows": n, "seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib()}


async def hub_phase(work: Path) -> dict:
    from hub.agreements_loader import load_agreements
    from hub.crypto import DataProtector
    from hub.observability.logging import configure_logging
    from hub.reconciliation import Body, ReconciliationService, Reconciler
    from hub.refdata.loader import load_reference_data
    from hub.settings import REPO_ROOT
    from hub.store.db import create_engine

    configure_logging("WARNING")
    engine = create_engine(f"sqlite+aiosqlite:///{work / 'hub.db'}")
    protector = DataProtector.from_settings(None, work / "data.key")
    service = ReconciliationService(engine, protector)
    ref = load_reference_data()
    agreements = load_agreements(REPO_ROOT / "contracts" / "area-agreements.yaml")

    async def chunks():  # noqa: ANN202
        with (work / "snapshot.ndjson").open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    t0 = time.perf_counter()
    snap = await service.receive(Body("bench", "E06000060", "council"), "ndjson", chunks(), date(2026, 11, 1))
    t1 = time.perf_counter()
    row = await service.snapshot_row(snap["snapshot_id"])
    await Reconciler(engine, ref, agreements, service).compare_snapshot(row)
    t2 = time.perf_counter()
    done = await service.snapshot(snap["snapshot_id"])
    await engine.dispose()
    return {"rows": done["rows_read"], "receive_seconds": t1 - t0, "compare_seconds": t2 - t1,
            "seconds": t2 - t0, "differences": done["differences_found"], "persons": done["persons_compared"],
            "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--register", type=int, default=10_000)
    ap.add_argument("--phase", choices=["prepare", "baseline", "hub"])
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    if args.phase == "prepare":
        asyncio.run(_prepare(args.work, args.rows, args.register))
        return
    if args.phase == "baseline":
        print(json.dumps(baseline(args.work)))
        return
    if args.phase == "hub":
        print(json.dumps(asyncio.run(hub_phase(args.work))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run = lambda phase: subprocess.run(  # noqa: E731
            [sys.executable, __file__, "--phase", phase, "--work", str(work), "--rows", str(args.rows),
             "--register", str(args.register)], check=True, capture_output=True, text=True).stdout
        t = time.perf_counter()
        run("prepare")
        print(f"prepared {args.register:,} people on the register and a {args.rows:,}-row snapshot "
              f"in {time.perf_counter() - t:.1f} s")
        base = json.loads(run("baseline"))
        hub = json.loads(run("hub"))
    b_rate = base["rows"] / base["seconds"]
    h_rate = hub["rows"] / hub["seconds"]
    print(f"{'':28}{'rows/s':>10}{'seconds':>10}{'peak RSS MiB':>14}")
    print(f"{'baseline: read + hash':28}{b_rate:>10,.0f}{base['seconds']:>10.2f}{base['peak_rss_mib']:>14.0f}")
    print(f"{'hub: receive + compare':28}{h_rate:>10,.0f}{hub['seconds']:>10.2f}{hub['peak_rss_mib']:>14.0f}")
    print(f"  receive {hub['receive_seconds']:.2f} s, compare {hub['compare_seconds']:.2f} s "
          f"({hub['persons']:,} register persons evaluated), {hub['differences']:,} differences")
    print(f"ratio: the hub takes {base['rows'] / base['seconds'] / h_rate:.1f}x the baseline's time per row")


if __name__ == "__main__":
    main()
