"""How long the shared SQLite writer's COMMITs hold the event loop, with the
WAL checkpointed by its own thread (hub.store.db.WalCheckpointer, as the hub
runs) beside SQLite's automatic checkpoint inside the COMMIT every 1,000
pages (what the hub did before), in the same run on the same disk.

N write transactions of R outbox-sized rows each (random keys, 1.5 KB
payloads: a few hundred WAL frames a transaction) through
`write_transaction`, one after another on the loop; per COMMIT (the
transaction block's exit, where SQLite's own checkpoint runs when due): p50,
p90, p99, max, and the total time the loop spent in COMMITs; the process's
CPU. The checkpoint's work is the same either way; what moves is where it
runs.

    .venv/bin/python bench/bench_checkpoint.py            # 600 transactions of 40 rows, 3 rounds
    .venv/bin/python bench/bench_checkpoint.py --transactions 1000 --rows 40 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hub.store.db as store_db  # noqa: E402
from hub.store.db import close_inline, create_engine, create_schema, write_transaction  # noqa: E402
from hub.store.schema import bus_messages  # noqa: E402


async def level(thread: bool, transactions: int, rows: int) -> dict[str, float]:
    store_db.CHECKPOINT_THREAD = thread
    tmp = Path(tempfile.mkdtemp(prefix="s117-bench-ckpt-"))
    engine = create_engine(f"sqlite+aiosqlite:///{tmp / 'hub.db'}")
    await create_schema(engine)
    now = datetime.now(UTC)
    commits: list[float] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        for _ in range(transactions):
            batch = [{"topic": "t", "key": str(uuid.uuid4()), "event_id": str(uuid.uuid4()),
                      "payload": {"pad": "x" * 1500}, "headers": {}, "created_at": now} for _ in range(rows)]
            async with write_transaction(engine) as conn:
                await conn.execute(bus_messages.insert(), batch)
                began = time.perf_counter()
            commits.append(time.perf_counter() - began)
            await asyncio.sleep(0)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        close_inline(engine)
        await engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
        store_db.CHECKPOINT_THREAD = True
    commits.sort()

    def pct(p: float) -> float:
        return 1000 * commits[min(len(commits) - 1, int(len(commits) * p))]

    return {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": 1000 * commits[-1],
            "total": sum(commits), "wall": wall, "cpu": cpu}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transactions", type=int, default=600)
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"{args.transactions} write transactions of {args.rows} rows (SQLite WAL, synchronous=FULL), "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print("| round | checkpoints | COMMIT p50 / p90 / p99 / max | loop in COMMITs | wall | CPU |")
    print("|---|---|---|---|---|---|")
    for r in range(1, args.rounds + 1):
        for thread in (False, True):  # the baseline first, then as the hub runs, alternating
            x = await level(thread, args.transactions, args.rows)
            label = "own thread (as run)" if thread else "SQLite's, in COMMIT"
            print(f"| {r} | {label} | {x['p50']:.2f} / {x['p90']:.2f} / {x['p99']:.2f} / {x['max']:.1f} ms "
                  f"| {x['total']:.2f} s | {x['wall']:.2f} s | {x['cpu']:.2f} s |")
    print(f"(load average at end {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    asyncio.run(main())
