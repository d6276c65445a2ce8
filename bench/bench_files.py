"""Council files: rows recorded per second from a council's nightly export.

A real hub process (embedded: SQLite WAL, synchronous=FULL; delivery workers
off) with people put on the register by a trust through the API; then one
SWIFT-style CSV (adapters/council_files) of GP changes and completed reviews
for them is sent to `POST /v1/council-files` and polled until processed.
Prints rows/s from POST to processed beside a bare SQLite row insert measured
in the same run (one fsync'd transaction per row).

    .venv/bin/python bench/bench_files.py                # 200 people, 5,000 rows
    .venv/bin/python bench/bench_files.py --rows 20000 --people 1000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_load import bare_insert, cpu_seconds  # noqa: E402
from hub.clients import add_client  # noqa: E402
from hub.sample_data import detention_to_move_scenario  # noqa: E402
from hub.store.db import create_engine, create_schema  # noqa: E402
from tests.support import HubProcess  # noqa: E402

HEADER = ("RECORD_ID,EVENT,EFFECTIVE_DATE,NOTIFIED_DATE,NHS_NO,SURNAME,FORENAME,DOB,POSTCODE,LA_GSS,NFA,GP_ODS,"
          "REVIEW_REASON,LA_AGREES,NHS_AGREES,PERSON_INVOLVED,END_REASONS,PARTICIPANTS")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, default=200)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--profile", action="store_true", help="py-spy record the hub while it processes the file")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="s117-bench-files-"))
    hub = HubProcess(tmp, S117_RUN_WORKERS="false", S117_LOG_LEVEL="WARNING")
    engine = create_engine(hub.db_url)
    await create_schema(engine)
    _, trust = await add_client(engine, "Bench trust", "RNU", "trust", ["register:write"])
    _, council = await add_client(engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    await engine.dispose()
    rng = random.Random(117)
    people = [detention_to_move_scenario(rng, f"f{i}", date(2023, 1, 2))[:3] for i in range(args.people)]
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=600) as http:
            queue = list(people)

            async def client() -> None:
                while queue:
                    for c in queue.pop():
                        r = await http.post("/v1/register-changes", json=c, headers={"X-API-Key": trust})
                        assert r.status_code == 202, r.text

            await asyncio.gather(*(client() for _ in range(16)))
            lines = [HEADER]
            start = date(2024, 1, 1)
            for i in range(args.rows):
                p = people[i % args.people][0]["person"]["nhs_number"]
                day = (start + timedelta(days=i // args.people)).strftime("%d/%m/%Y")
                if i % 2:
                    lines.append(f"B-{i},REVIEW_DONE,{day},{day},{p},,,,,,,,,,,,,")
                else:
                    lines.append(f"B-{i},GP_CHANGE,{day},{day},{p},,,,,,,{('K82001', 'M81001')[i // 2 % 2]},,,,,,")
            data = ("\r\n".join(lines) + "\r\n").encode()
            profiler = None
            if args.profile:
                spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
                profiler = subprocess.Popen([spy, "record", "--pid", str(hub.proc.pid), "--format", "raw",
                                             "-o", str(Path("/tmp") / "files-profile.txt"), "--rate", "250",
                                             "--nonblocking", "--gil"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1)
            cpu0, t0 = cpu_seconds(hub.proc.pid), time.perf_counter()
            r = await http.post("/v1/council-files", params={"format": "swift_csv"}, content=data,
                                headers={"X-API-Key": council, "Content-Type": "text/csv"})
            assert r.status_code == 202, r.text
            answered = time.perf_counter() - t0
            while True:
                body = (await http.get(r.headers["location"], headers={"X-API-Key": council})).json()
                if body["status"] != "processing":
                    break
                await asyncio.sleep(0.2)
            elapsed, cpu = time.perf_counter() - t0, cpu_seconds(hub.proc.pid) - cpu0
            if profiler is not None:
                profiler.send_signal(2)
                profiler.wait(30)
    finally:
        hub.stop()
    flat = [c for p in people for c in p][:2000]
    bare = bare_insert(tmp / "bare.db", flat)
    rate = args.rows / elapsed
    print(f"{args.rows:,} rows ({len(data) / 1e6:.1f} MB) for {args.people} people; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| rows | 202 after | processed after | rows/s | hub CPU/row | accepted / rejected "
          "| bare insert rows/s | hub / bare |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.rows:,} | {answered * 1000:.0f} ms | {elapsed:.1f} s | {rate:,.0f} | {cpu / args.rows * 1000:.1f} ms "
          f"| {body['accepted']} / {body['rejected']} | {bare:,.0f} | {bare / rate:.1f}x |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
