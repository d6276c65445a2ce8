"""Council files: rows recorded per second from a council's nightly export.

A real hub process (embedded: SQLite WAL, synchronous=FULL; delivery workers
off) with people put on the register by a trust through the API; then one
SWIFT-style CSV (adapters/council_files) of GP changes and completed reviews
for them (25 rows a person by default) is sent to `POST /v1/council-files`
and polled until processed. Each run is a fresh hub, for each path:

- `after`: the bulk path (a chunk of 500 rows per transaction, the default);
- `before`: each row through the per-change path (`S117_FILES_BULK=false`),
  as before the bulk path.

Prints rows/s from POST to processed, hub CPU per row (from /proc: robust to
other load on the machine), the hub's peak RSS while it took and processed
the file (its high-water mark reset just before the POST) and its growth over
the RSS before, while the file is processed and with the GET of the per-row report, beside a bare SQLite row insert measured in the same run on
the same disk: one fsync'd transaction per row, and 500 rows per transaction.

    .venv/bin/python bench/bench_files.py                           # 5,000 rows, before and after
    .venv/bin/python bench/bench_files.py --rows 5000 50000 --paths after   # memory: 5k vs 50k rows
    .venv/bin/python bench/bench_files.py --profile                 # py-spy the hub (GIL samples)
    .venv/bin/python bench/bench_files.py --in-process 6            # 6 files in this process: CPU per row
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
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
PATHS = {"before": "false", "after": "true"}
GIL_ONLY = True  # --profile samples the thread holding the GIL; --profile-native: every active thread


def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def db_bytes(tmp: Path) -> int:
    """The hub's SQLite database with its WAL (what the rows made it write, checkpoints aside)."""
    return sum(f.stat().st_size for f in tmp.glob("hub.db*"))


def bare_bytes(path: Path, rows: int, size: int, per_txn: int = 500) -> float:
    """Rows/s of a bare insert writing as many bytes per row as the hub's
    database grew by per file row (`size`), `per_txn` rows per fsync'd
    transaction, the hub's pragmas: what storing that volume costs alone."""
    import sqlite3
    import uuid

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, body TEXT)")
    body = os.urandom(size // 2).hex()
    t0 = time.perf_counter()
    for i in range(0, rows, per_txn):
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO t VALUES (?, ?)", [(str(uuid.uuid4()), body) for _ in range(min(per_txn, rows - i))])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    db.close()
    return rows / elapsed


def council_file(people: list, rows: int) -> bytes:
    lines = [HEADER]
    start = date(2024, 1, 1)
    for i in range(rows):
        p = people[i % len(people)][0]["person"]["nhs_number"]
        day = (start + timedelta(days=i // len(people))).strftime("%d/%m/%Y")
        if i % 2:
            lines.append(f"B-{i},REVIEW_DONE,{day},{day},{p},,,,,,,,,,,,,")
        else:
            lines.append(f"B-{i},GP_CHANGE,{day},{day},{p},,,,,,,{('K82001', 'M81001')[i // 2 % 2]},,,,,,")
    return ("\r\n".join(lines) + "\r\n").encode()


async def register(http: httpx.AsyncClient, people: list, key: str, clients: int = 16) -> None:
    """Each person's changes through `POST /v1/register-changes`, in order, `clients` people at a time."""
    queue = list(people)

    async def client() -> None:
        while queue:
            for c in queue.pop():
                r = await http.post("/v1/register-changes", json=c, headers={"X-API-Key": key})
                assert r.status_code == 202, r.text

    await asyncio.gather(*(client() for _ in range(clients)))


async def run(path: str, rows: int, n_people: int, profile: Path | None, env: dict[str, str]) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="s117-bench-files-"))
    hub = HubProcess(tmp, S117_RUN_WORKERS="false", S117_LOG_LEVEL="WARNING", S117_FILES_BULK=PATHS[path], **env)
    engine = create_engine(hub.db_url)
    await create_schema(engine)
    _, trust = await add_client(engine, "Bench trust", "RNU", "trust", ["register:write"])
    _, council = await add_client(engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    await engine.dispose()
    rng = random.Random(117)
    people = [detention_to_move_scenario(rng, f"f{i}", date(2023, 1, 2))[:3] for i in range(n_people)]
    data = council_file(people, rows)
    await hub.start()
    profiler = None
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=600) as http:
            await register(http, people, trust)
            assert hub.proc is not None
            pid = hub.proc.pid
            if profile is not None:
                spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
                assert spy, "--profile needs py-spy (pip install py-spy)"
                profiler = subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "-o", str(profile),
                                             "--rate", os.environ.get("BENCH_SPY_RATE", "250"), "--nonblocking", *(["--gil"] if GIL_ONLY else [])],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                await asyncio.sleep(1)
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak RSS to the RSS now
            rss_before = memory_kb(pid)["VmRSS"]
            load = os.getloadavg()[0]
            db0 = db_bytes(tmp)
            cpu0, t0 = cpu_seconds(pid), time.perf_counter()
            r = await http.post("/v1/council-files", params={"format": "swift_csv"}, content=data,
                                headers={"X-API-Key": council, "Content-Type": "text/csv"})
            assert r.status_code == 202, r.text
            answered = time.perf_counter() - t0
            series = []  # (rows done, RSS in kB)
            while True:
                mem = memory_kb(pid)
                processing_peak = mem["VmHWM"]  # before the GET that brings the report
                body = (await http.get(r.headers["location"], headers={"X-API-Key": council})).json()
                series.append((body["rows_done"], mem["VmRSS"]))
                if body["status"] != "processing":
                    break
                await asyncio.sleep(0.05)
            elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
            peak = memory_kb(pid)["VmHWM"]
            db_growth = db_bytes(tmp) - db0
            load = max(load, os.getloadavg()[0])
            statuses = Counter(e["status"] for e in body["report"])
    finally:
        if profiler is not None:
            profiler.send_signal(2)
            profiler.wait(30)
        hub.stop()
    flat = [c for p in people for c in p][:2000]
    bare = bare_insert(tmp / "bare.db", flat)
    batched = bare_insert(tmp / "bare-batched.db", [c for p in people for c in p] * 3, per_txn=500)
    same_bytes = bare_bytes(tmp / "bare-bytes.db", min(rows, 5000), int(db_growth / rows))
    if os.environ.get("BENCH_KEEP"):
        print(f"kept: {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"path": path, "rows": rows, "people": n_people, "mb": len(data) / 1e6, "answered": answered,
            "elapsed": elapsed, "rate": rows / elapsed, "cpu_ms": cpu / rows * 1000, "rss_before": rss_before,
            "peak": peak, "processing_peak": processing_peak, "series": series, "accepted": statuses["accepted"], "rejected": statuses["rejected"], "bare": bare,
            "batched": batched, "load": load, "db_kb_per_row": db_growth / rows / 1024,
            "same_bytes": same_bytes}


async def in_process(files: int, rows: int, n_people: int) -> list[dict]:
    """`files` council files of `rows` rows, each for `n_people` people new to the register, through
    the hub's app in this process (the bulk path; no HTTP polls, no report GET): the process's and
    the main thread's CPU from POST until processed (`FileJobs.wait`). Steadier than the hub process's
    CPU over HTTP: the same process, warm, several files a run (take the min or the median)."""
    from hub.api.app import create_app
    from hub.fhir.namespaces import DEFAULT_CANONICAL_BASE
    from hub.observability.logging import configure_logging
    from hub.settings import REPO_ROOT, Settings

    tmp = Path(tempfile.mkdtemp(prefix="s117-bench-files-inproc-"))
    configure_logging("WARNING", True)
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp / 'hub.db'}", data_key_file=tmp / "data.key",
                              canonical_base=DEFAULT_CANONICAL_BASE, run_workers=False, log_level="WARNING",
                              sharing_agreements_path=REPO_ROOT / "contracts" / "data-sharing-agreements.yaml"))
    out = []
    try:
        async with app.router.lifespan_context(app):
            hub = app.state.hub
            _, trust = await add_client(hub.engine, "Bench trust", "RNU", "trust", ["register:write"])
            _, council = await add_client(hub.engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub",
                                         timeout=600) as http:
                for f in range(files):
                    rng = random.Random(117 + f)
                    people = [detention_to_move_scenario(rng, f"f{f}-{i}", date(2023, 1, 2))[:3]
                              for i in range(n_people)]
                    await register(http, people, trust)
                    data = council_file(people, rows).replace(b"\r\nB-", f"\r\nF{f}-".encode())
                    load = os.getloadavg()[0]
                    cpu0, main0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
                    r = await http.post("/v1/council-files", params={"format": "swift_csv"}, content=data,
                                        headers={"X-API-Key": council, "Content-Type": "text/csv"})
                    assert r.status_code == 202, r.text
                    await hub.files.wait(r.json()["file_id"])
                    cpu, main, elapsed = (time.process_time() - cpu0, time.thread_time() - main0,
                                          time.perf_counter() - t0)
                    got = (await http.get(r.headers["location"], headers={"X-API-Key": council})).json()
                    assert got["accepted"] == rows, {k: v for k, v in got.items() if k != "report"}
                    out.append({"rate": rows / elapsed, "cpu_us": cpu / rows * 1e6, "main_us": main / rows * 1e6,
                                "load": max(load, os.getloadavg()[0])})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[5000])
    ap.add_argument("--people", type=int, default=0, help="people on the register (default: rows / 25)")
    ap.add_argument("--paths", nargs="+", choices=list(PATHS), default=["before", "after"])
    ap.add_argument("--profile", action="store_true", help="py-spy record the hub while it takes the file")
    ap.add_argument("--profile-native", action="store_true",
                    help="with --profile: sample every running thread, not only the GIL holder (SQLite's own "
                         "work runs without the GIL)")
    ap.add_argument("--env", nargs="*", default=[], help="KEY=VALUE for the hub process (e.g. MALLOC_ARENA_MAX=2)")
    ap.add_argument("--rss-series", action="store_true", help="also print the hub's RSS as the rows are done")
    ap.add_argument("--in-process", type=int, default=0, metavar="FILES",
                    help="instead: FILES files through the hub's app in this process (the bulk path), each for "
                         "new people; CPU per row from POST to processed")
    args = ap.parse_args()
    if args.in_process:
        for rows in args.rows:
            runs = await in_process(args.in_process, rows, args.people or max(1, rows // 25))
            cpus = sorted(r["cpu_us"] for r in runs)

            def each(key: str, fmt: str, runs: list[dict] = runs) -> str:
                return " ".join(format(r[key], fmt) for r in runs)

            loads = [r["load"] for r in runs]
            print(f"in-process, {rows:,} rows a file: CPU us/row min {cpus[0]:.1f} median "
                  f"{statistics.median(cpus):.1f} | per file: CPU {each('cpu_us', '.0f')} | main thread "
                  f"{each('main_us', '.0f')} | rows/s {each('rate', ',.0f')} | load {min(loads):.1f}-{max(loads):.1f}")
        return
    env = dict(e.split("=", 1) for e in args.env)
    global GIL_ONLY
    GIL_ONLY = not args.profile_native
    results = []
    for rows in args.rows:
        for path in args.paths:
            profile = Path(tempfile.gettempdir()) / f"files-profile-{path}-{rows}.txt" if args.profile else None
            results.append(await run(path, rows, args.people or max(1, rows // 25), profile, env))
            if profile:
                print(f"profile: {profile}", file=sys.stderr)
    print(f"{os.cpu_count()} cores; load average (1 min) in brackets")
    print("| path | rows (MB) | people | 202 after | processed after | rows/s | hub CPU/row | hub peak RSS "
          "(growth): processing / with the report GET | accepted / rejected | bare insert rows/s: 1 / 500 per txn "
          "| rows/s / bare (1 per txn) | database growth per row | bare insert of that many bytes, 500 per txn: rows/s "
          "(hub / it) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['path']} ({r['load']:.1f}) | {r['rows']:,} ({r['mb']:.1f}) | {r['people']:,} "
              f"| {r['answered'] * 1000:.0f} ms | {r['elapsed']:.1f} s | {r['rate']:,.0f} | {r['cpu_ms']:.2f} ms "
              f"| {r['processing_peak'] / 1024:.0f} MB (+{(r['processing_peak'] - r['rss_before']) / 1024:.0f} MB) / "
              f"{r['peak'] / 1024:.0f} MB (+{(r['peak'] - r['rss_before']) / 1024:.0f} MB) "
              f"| {r['accepted']} / {r['rejected']} | {r['bare']:,.0f} / {r['batched']:,.0f} "
              f"| {r['rate'] / r['bare']:.2f}x | {r['db_kb_per_row']:.1f} KB "
              f"| {r['same_bytes']:,.0f} ({r['rate'] / r['same_bytes']:.2f}x) |")
    if args.rss_series:
        for r in results:
            step = max(1, len(r["series"]) // 10)
            print(f"{r['path']} {r['rows']:,}: RSS (MB) by rows done: " + ", ".join(
                f"{done:,}: {rss / 1024:.0f}" for done, rss in r["series"][::step] + r["series"][-1:]))
    by = {(r["path"], r["rows"]): r for r in results}
    for rows in args.rows:
        if ("before", rows) in by and ("after", rows) in by:
            b, a = by["before", rows], by["after", rows]
            print(f"{rows:,} rows: after / before: {a['rate'] / b['rate']:.1f}x rows/s, "
                  f"{b['cpu_ms'] / a['cpu_ms']:.1f}x less CPU per row")


if __name__ == "__main__":
    asyncio.run(main())
