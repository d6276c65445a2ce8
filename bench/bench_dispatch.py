"""The dispatcher alone, in-process: CPU per event on a register made by the
hub itself.

`bench_load.py --ingest-only --keep` records N changes through a real hub
process (workers off: nothing dispatched), beside its bare-insert baseline;
then, R times, a copy of that database is dispatched here by the hub's own
`Dispatcher.run_once` in batches of B (every event: routing, the agreements,
views, one FHIR message per recipient, deliveries and disclosures queued and
committed), and the process's CPU per event is printed. Alternate two
checkouts' runs on one database (`--db DIR`) to compare them.

    .venv/bin/python bench/bench_dispatch.py                     # 4,000 changes, batches of 64, 3 rounds
    .venv/bin/python bench/bench_dispatch.py --db /tmp/kept-dir   # a kept bench_load level (hub.db, data.key, sharing.yaml)
    .venv/bin/python bench/bench_dispatch.py --db DIR --batch 16 24 64   # rounds of each size in turn: the fixed cost a batch
    .venv/bin/python bench/bench_dispatch.py --db DIR --batch 16 --rounds 1 --profile out.prof   # cProfile (CPU clock)
    .venv/bin/python bench/bench_dispatch.py --db DIR --batch 16 --rounds 1 --dump out.txt   # the dispatched tables, masked
    .venv/bin/python bench/bench_dispatch.py --db DIR --batch 16 --rounds 1 --log out.log    # the hub's log lines, masked

`--dump` writes what the dispatch wrote (deliveries, their messages
decrypted, disclosures, recipient views, dispatched events, counters,
offsets, dead letters), one line a row, sorted, with times and the random
delivery ids masked: diff two checkouts' dumps of one register. `--log`
writes the hub's log lines of the dispatch (its "event dispatched" lines and
any other), in order, each with its `timestamp` and times masked: diff two
checkouts' logs of one register at one batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_register(changes: int) -> tuple[Path, str]:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_load.py"), "--clients", "32", "--changes",
                          str(changes), "--ingest-only", "--keep"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    kept = Path(re.search(r"data in (\S+)", out).group(1))
    level = next(p for p in kept.iterdir() if (p / "hub.db").exists())
    row = next((line for line in out.splitlines() if line.startswith("| 32 ")), "")
    return level, row


DUMP = r"""
import json, re
from sqlalchemy import select
from hub.store import schema
_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?")
def masked(v):
    if isinstance(v, (dict, list)):
        v = json.dumps(v, sort_keys=True, default=str)
    return _TIME.sub("<time>", str(v))
async def dump(hub, path):
    lines = []
    async with hub.engine.connect() as conn:
        for t in (schema.deliveries, schema.delivery_messages, schema.disclosures, schema.recipient_views,
                  schema.dispatched_events, schema.subscription_counters, schema.consumer_offsets,
                  schema.dead_letters):
            for r in (await conn.execute(select(t))).mappings():
                row = {k: ("<id>" if k == "delivery_id" else masked(v)) for k, v in r.items()}
                if t is schema.delivery_messages:
                    row["payload"] = masked(json.loads(hub.protector.decrypt(r["payload"])))
                lines.append(t.name + " " + json.dumps(row, sort_keys=True))
    with open(path, "w") as f:
        f.write("\n".join(sorted(lines)) + "\n")
"""


_LOG_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?")


def masked_log(text: str) -> str:
    """The hub's JSON lines with their `timestamp` dropped and any time in them masked, in order."""
    out = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            out.append(_LOG_TIME.sub("<time>", line))
            continue
        row.pop("timestamp", None)
        out.append(_LOG_TIME.sub("<time>", json.dumps(row, sort_keys=True)))
    return "\n".join(out) + "\n"


def run_round(source: Path, batch: int, profile: Path | None = None,
              dump: Path | None = None, log_to: Path | None = None) -> tuple[int, int, float, float]:
    """One dispatch of a copy of `source` in a child process (a fresh hub each round)."""
    code = f"""
import asyncio, cProfile, os, sys, time
sys.path.insert(0, {str(ROOT)!r})
{DUMP}
from hub.settings import Settings
from hub.bootstrap import build_hub
from hub.observability.logging import configure_logging
from sqlalchemy import text
async def main():
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)  # as `s117hub serve` and `workers` do: JSON lines
    hub = await build_hub(settings)
    from hub.server import tune_gc
    tune_gc()  # as the worker process does after its start-up (hub/worker_process.py)
    d = hub.dispatcher
    await d.run_once(1)
    prof = cProfile.Profile(time.process_time) if {str(profile) if profile else ""!r} else None
    n, c0, w0 = 0, time.process_time(), time.perf_counter()
    if prof is not None:
        prof.enable()
    while (k := await d.run_once({batch})):
        n += k
    if prof is not None:
        prof.disable()
    c1, w1 = time.process_time(), time.perf_counter()
    if prof is not None:
        prof.dump_stats({str(profile)!r})
    if {str(dump) if dump else ""!r}:
        await dump(hub, {str(dump)!r})
    async with hub.engine.connect() as conn:
        queued = (await conn.execute(text("select count(*) from deliveries"))).scalar()
    print(n, queued, c1 - c0, w1 - w0, file=sys.stderr)  # the hub's JSON lines are on stdout
    await hub.close()
asyncio.run(main())
"""
    work = Path(tempfile.mkdtemp(prefix="s117-bench-dispatch-"))
    try:
        for name in ("hub.db", "data.key", "sharing.yaml"):
            shutil.copy(source / name, work / name)
        env = {**os.environ, "S117_DATABASE_URL": f"sqlite+aiosqlite:///{work / 'hub.db'}",
               "S117_DATA_KEY_FILE": str(work / "data.key"), "S117_SHARING_AGREEMENTS_PATH": str(work / "sharing.yaml"),
               "S117_BUS_URL": "sql", "S117_LOG_LEVEL": "INFO", "S117_CANONICAL_BASE": "https://s117hub.example.org",
               "S117_REVIEW_SCAN_INTERVAL_SECONDS": "0"}
        with open(work / "hub.log", "w") as log:  # the hub's lines go to a file, as deployed
            out = subprocess.run([sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.PIPE,
                                 text=True, check=True).stderr.split("\n")
        if log_to is not None:
            log_to.write_text(masked_log((work / "hub.log").read_text()))
        line = next(x for x in reversed(out) if x.strip() and x.split()[0].isdigit())
        n, queued, cpu, wall = line.split()
        return int(n), int(queued), float(cpu), float(wall)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=4000)
    ap.add_argument("--batch", type=int, nargs="+", default=[64],
                    help="batch sizes (messages a run_once): each round runs every size in turn")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--db", type=Path, help="a kept bench_load level to dispatch (else one is made)")
    ap.add_argument("--profile", type=Path, help="cProfile (CPU clock) the dispatch into this file (the last round's)")
    ap.add_argument("--dump", type=Path, help="write the dispatched tables, masked and sorted, to this file")
    ap.add_argument("--log", type=Path, help="write the hub's log lines of the dispatch, masked, to this file")
    args = ap.parse_args()
    if args.db:
        source, row = args.db, ""
    else:
        source, row = make_register(args.changes)
        print(f"register: {args.changes} changes by bench_load.py --ingest-only (kept in {source.parent})")
        print(f"  its level: {row}")
    sizes = ", ".join(map(str, args.batch))
    print(f"dispatching a copy of {source} in batches of {sizes}; 2 cores, load average {os.getloadavg()[0]:.1f}")
    print("| round | batch | events | deliveries queued | CPU per event | wall per event |")
    print("|---|---|---|---|---|---|")
    for r in range(1, args.rounds + 1):
        for b in args.batch:
            n, queued, cpu, wall = run_round(source, b, args.profile, args.dump, args.log)
            print(f"| {r} | {b} | {n:,} | {queued:,} | {1000 * cpu / max(n, 1):.3f} ms | "
                  f"{1000 * wall / max(n, 1):.3f} ms |", flush=True)
    print(f"(load average at end {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
