"""Scale: does the cost per change stay flat as the register grows?

A real hub process (embedded: SQLite WAL, synchronous=FULL; workers off, so
this measures ingest and reads, not delivery) is filled through the API with
people of 10 register changes each (detained, s2 -> s3, left hospital, moved,
then six GP changes / reviews), by 32 concurrent clients. At each size it
prints the cost per change while loading that tranche (wall and hub CPU),
the person query (`GET /v1/persons/{id}/s117`) and register summary
(`GET /v1/reports/register-summary`) latency, the hub's RSS and the database
size per person, beside a bare SQLite row insert measured in the same run.

    .venv/bin/python bench/bench_scale.py                 # 1,000 and 10,000 people
    .venv/bin/python bench/bench_scale.py --sizes 200 1000   # a quick look
    .venv/bin/python bench/bench_scale.py --full          # 1k, 10k and 100k (hours on 2 cores)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_load import bare_insert, cpu_seconds  # noqa: E402
from bench.rawhttp import RawClient  # noqa: E402
from hub.clients import add_client  # noqa: E402
from hub.sample_data import detention_to_move_scenario  # noqa: E402
from hub.store.db import create_engine, create_schema  # noqa: E402
from tests.support import HubProcess  # noqa: E402

GPS = ("K82001", "M81001")


def ten_changes(rng: random.Random, run: str) -> list[dict]:
    first = detention_to_move_scenario(rng, run, date(2023, 1, 2) + timedelta(days=rng.randint(0, 300)))
    base = {k: first[0][k] for k in ("source_system", "person")}
    day = date.fromisoformat(first[-1]["effective_date"])
    more = []
    for i in range(6):
        day += timedelta(days=30)
        if i % 2:
            more.append({**base, "source_message_id": f"{run}-{5 + i}", "change_type": "review-completed",
                         "effective_date": day.isoformat()})
        else:
            more.append({**base, "source_message_id": f"{run}-{5 + i}", "change_type": "gp-changed",
                         "effective_date": day.isoformat(), "gp_practice_ods": GPS[(i // 2) % 2]})
    return first + more


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", help="register sizes in people (default 1000 10000)")
    ap.add_argument("--full", action="store_true", help="1,000, 10,000 and 100,000 people")
    ap.add_argument("--clients", type=int, default=32)
    args = ap.parse_args()
    sizes = args.sizes or ([1000, 10000, 100000] if args.full else [1000, 10000])
    tmp = Path(tempfile.mkdtemp(prefix="s117-bench-scale-"))
    print(f"register grown to {', '.join(f'{s:,}' for s in sizes)} people x 10 changes through the API, "
          f"{args.clients} clients; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    hub = HubProcess(tmp, S117_RUN_WORKERS="false", S117_LOG_LEVEL="WARNING")
    db_path = Path(hub.db_url.split("///", 1)[1])
    engine = create_engine(hub.db_url)
    await create_schema(engine)
    _, trust = await add_client(engine, "Bench trust", "RNU", "trust", ["register:write", "s117:read"])
    _, admin = await add_client(engine, "Hub operator", "HUB", "hub-operator", ["hub:admin"])
    await engine.dispose()
    await hub.start()
    rows = []
    person_ids: list[str] = []
    loaded = 0
    try:
        limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4)
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=120, limits=limits) as http:
            h = {"X-API-Key": trust, "Content-Type": "application/json"}
            host, port = hub.base_url.split("//", 1)[1].rsplit(":", 1)
            for size in sizes:
                # People made as they are sent (a 100k register is a million changes: not held at once).
                todo = iter(range(loaded, size))
                sample = [ten_changes(random.Random(i), f"s{i}") for i in range(loaded, min(size, loaded + 500))]
                counts: list[int] = []

                async def client() -> None:
                    raw = RawClient(host, int(port), h)  # bench/rawhttp.py: httpx would take the hub's core
                    try:
                        for i in todo:
                            p = ten_changes(random.Random(i), f"s{i}")
                            for c in p:
                                status, answer = await raw.post_json("/v1/register-changes", orjson.dumps(c))
                                if status != 202:
                                    raise RuntimeError(f"{status}: {str(answer)[:300]}")
                            counts.append(len(p))
                            person_ids.append(answer["person_id"])
                    finally:
                        await raw.close()

                cpu0, t0 = cpu_seconds(hub.proc.pid), time.perf_counter()
                await asyncio.gather(*(client() for _ in range(args.clients)))
                wall, cpu = time.perf_counter() - t0, cpu_seconds(hub.proc.pid) - cpu0
                n_changes = sum(counts)
                loaded = size
                q_lat = []
                for pid in random.Random(size).sample(person_ids, min(50, len(person_ids))):
                    s = time.perf_counter()
                    r = await http.get(f"/v1/persons/{pid}/s117", headers={"X-API-Key": trust})
                    q_lat.append(time.perf_counter() - s)
                    assert r.status_code == 200, r.text
                s_lat = []
                for _ in range(5):
                    s = time.perf_counter()
                    r = await http.get("/v1/reports/register-summary", headers={"X-API-Key": admin})
                    s_lat.append(time.perf_counter() - s)
                    assert r.status_code == 200, r.text
                flat = [c for p in sample for c in p][:2000]
                bare = bare_insert(tmp / f"bare-{size}.db", flat)
                rows.append((size, n_changes / wall, wall / n_changes * 1000, cpu / n_changes * 1000,
                             statistics.median(q_lat) * 1000, statistics.median(s_lat) * 1000,
                             rss_mb(hub.proc.pid), db_bytes(db_path) / size / 1024, bare))
                r = rows[-1]
                print(f"  {size:,} people loaded ({n_changes:,} changes in {wall:.0f} s): {r[1]:,.0f} changes/s, "
                      f"{r[3]:.2f} ms hub CPU per change, person query p50 {r[4]:.1f} ms, summary p50 {r[5]:.1f} ms, "
                      f"RSS {r[6]:.0f} MB, {r[7]:.1f} KB per person, bare insert {r[8]:,.0f} rows/s; "
                      f"load average {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        hub.stop()
    print()
    print("| people | changes/s (tranche) | ms/change wall | hub CPU ms/change | person query p50 | summary p50 "
          "| hub RSS | DB per person | bare insert rows/s | hub / bare |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size, rate, wall_ms, cpu_ms, q, srep, rss, kb, bare in rows:
        print(f"| {size:,} | {rate:,.0f} | {wall_ms:.1f} | {cpu_ms:.1f} | {q:.1f} ms | {srep:.1f} ms | {rss:.0f} MB "
              f"| {kb:.1f} KB | {bare:,.0f} | {bare / rate:.1f}x |")
    if len(rows) > 1:
        print(f"hub CPU per change, largest / smallest register: {rows[-1][3] / rows[0][3]:.2f}x "
              f"(target within 1.5x); load average at end {os.getloadavg()[0]:.1f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
