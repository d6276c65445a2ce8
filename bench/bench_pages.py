"""Which database pages one register change writes, per table and index (SQLite).

Timings on a shared 2-core host move by 10-25% (at times 2x) from one run to
the next; the pages a change writes do not. A write transaction on SQLite in
WAL mode appends a frame (a page: 16 KB for a new file since the fifteenth
session, 4 KB before) for every page it modified (the table's leaf,
a leaf of each index whose entry it adds or moves, a split's extra pages,
page 1 when the file grows), and each frame is written, fsync'd and later
copied back by a checkpoint: the store's share of a change's cost.

A register of `--people` people (4 changes each, through `IngestService`,
in-process, one change per transaction) is built; then for each kind of
change below, `--samples` changes are recorded one at a time, the WAL
emptied (checkpointed) before each, and the frames the change's transaction
appended read back from the WAL file, each named by its page's table or
index (`dbstat`). A page written again with the same bytes (an index entry
deleted and put back) is a frame too: comparing the file's pages would miss it.

    .venv/bin/python bench/bench_pages.py                 # 2,000 people, 5 samples a kind
    .venv/bin/python bench/bench_pages.py --people 500 --samples 10
    .venv/bin/python bench/bench_pages.py --page-size 4096  # a database of 4 KB pages

`--deliveries`: the pages of a webhook delivery's three steps instead, each
a transaction of its own through the hub's own functions (`queue_delivery`,
`claim_batch`, `record_batch`), on one subscription with a backlog of
`--backlog` pending deliveries of `--message` bytes each (a real message,
encrypted, is about 5 KB): queue one, lease the head, mark it delivered; and
the process's CPU a step (user and kernel, the WAL's writes and fsync with it;
`samples` deliveries of their own, with no look at the WAL between steps).
`--batch N`: N deliveries a transaction at each step, as the dispatcher
queues a batch's and the deliverers lease and record theirs (the figures
are still a delivery's).

    .venv/bin/python bench/bench_pages.py --deliveries --samples 20
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub.agreements_loader import load_agreements  # noqa: E402
from hub.crypto import DataProtector  # noqa: E402
from hub.ingest.service import Client, IngestService  # noqa: E402
from hub.refdata.loader import load_reference_data  # noqa: E402
from hub.sample_data import detention_to_move_scenario  # noqa: E402
from hub.settings import REPO_ROOT  # noqa: E402
from hub.store.db import close_inline, create_engine, create_schema  # noqa: E402

# (what, the index in detention_to_move_scenario of the change recorded; those before it are recorded first)
KINDS = (("a new person's detention", 0), ("a section change", 1), ("leaving hospital", 2), ("a move", 3))


def _frames(wal: Path) -> tuple[list[int], int]:
    """The page number of each frame in a WAL file (32-byte file header, its
    bytes 8-11 the page size, then frames of a 24-byte header, its first 4
    bytes the page number, and a page), and the page size."""
    data = wal.read_bytes() if wal.exists() else b""
    if len(data) < 32:
        return [], 0
    page = int.from_bytes(data[8:12], "big")
    return [int.from_bytes(data[i:i + 4], "big") for i in range(32, len(data) - 23, 24 + page)], page


def _owners(path: Path) -> dict[int, str]:
    conn = sqlite3.connect(path)
    try:
        return {page: name for name, page in conn.execute("SELECT name, pageno FROM dbstat")}
    finally:
        conn.close()


def _checkpoint(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


async def run(people: int, samples: int, tmp: Path, page_size: int = 0) -> tuple[int, list[tuple[str, int, Counter[str], int]]]:
    db = tmp / "hub.db"
    engine = create_engine(f"sqlite+aiosqlite:///{db}", **({"sqlite_page_size": page_size} if page_size else {}))
    await create_schema(engine)
    service = IngestService(engine, load_reference_data(),
                            load_agreements(REPO_ROOT / "contracts" / "area-agreements.yaml"),
                            DataProtector.from_settings(None, tmp / "key"))
    client = Client("bench", "trust", "RNU", "trust", ("register:write",))

    async def accept(change: dict) -> None:
        answer = await service.accept(client, orjson.dumps(change))
        assert answer.status_code == 202, answer.body

    rng = random.Random(117)
    for i in range(people):
        for change in detention_to_move_scenario(rng, f"reg-{i}", date(2023, 1, 2)):
            await accept(change)
    out = []
    for what, k in KINDS:
        seen: Counter[str] = Counter()
        written = 0  # the WAL's bytes (frames and their headers)
        for s in range(samples):
            scenario = detention_to_move_scenario(random.Random(10_000 + s), f"k{k}-{s}", date(2024, 1, 2))
            for change in scenario[:k]:
                await accept(change)
            _checkpoint(db)  # the WAL emptied: what it holds next is this change's transaction
            await accept(scenario[k])
            owners = _owners(db)
            frames, page_size = _frames(db.with_name(db.name + "-wal"))
            seen.update(owners.get(page, "(free)") for page in frames)
            written += len(frames) * (24 + page_size)
        out.append((what, samples, seen, written))
    async with engine.connect() as conn:
        page_size = (await conn.exec_driver_sql("PRAGMA page_size")).scalar_one()
    service.close()
    close_inline(engine)
    await engine.dispose()
    return page_size, out


DELIVERY_STEPS = ("queue a delivery", "lease it", "mark it delivered")


async def run_deliveries(backlog: int, samples: int, message: int, tmp: Path,
                         page_size: int = 0, batch: int = 1) -> tuple[int, list[tuple[str, int, Counter[str], int]], dict[str, float]]:
    """The WAL frames of each of a delivery's steps (`DELIVERY_STEPS`), `samples` deliveries,
    and the CPU seconds each step took in all."""
    import os
    import uuid
    from datetime import UTC, datetime

    from hub.delivery.leases import RetryPolicy, claim_batch, record_batch
    from hub.delivery.queue import create_counter, queue_delivery
    from hub.store.schema import subscriptions

    db = tmp / "hub.db"
    engine = create_engine(f"sqlite+aiosqlite:///{db}", **({"sqlite_page_size": page_size} if page_size else {}))
    await create_schema(engine)
    sid = str(uuid.uuid4())

    async def queue(n: int) -> None:
        async with engine.begin() as conn:
            for _ in range(n):
                eid = str(uuid.uuid4())
                await queue_delivery(conn, subscription_id=sid, event_id=eid, message_id=eid,
                                     event_type="s117-entitlement-started", payload=os.urandom(message),
                                     correlation_id=str(uuid.uuid4()))

    async with engine.begin() as conn:
        await conn.execute(subscriptions.insert().values(
            subscription_id=sid, org_code="E06000060", client_id="bench", channel="webhook",
            url="http://127.0.0.1:9/hook", secret=b"s", active=True, created_at=datetime.now(UTC)))
        await create_counter(conn, sid)
    for _ in range(0, backlog, 500):
        await queue(min(500, backlog))
    seen = {step: Counter[str]() for step in DELIVERY_STEPS}
    written = dict.fromkeys(DELIVERY_STEPS, 0)
    cpu = dict.fromkeys(DELIVERY_STEPS, 0.0)  # the process's CPU (user and kernel: the WAL's writes, its fsync)

    async def step(name: str, work: Any) -> Any:
        _checkpoint(db)
        out = await work
        frames, size = _frames(db.with_name(db.name + "-wal"))
        owners = _owners(db)
        seen[name].update(owners.get(page, "(free)") for page in frames)
        written[name] += len(frames) * (24 + size)
        return out

    async def timed(name: str, work: Any) -> Any:
        started = time.process_time()
        out = await work
        cpu[name] += time.process_time() - started
        return out

    for _ in range(samples):  # the CPU, in a run of its own: no checkpoint or look at the WAL between steps
        await timed(DELIVERY_STEPS[0], queue(batch))
        rows = await timed(DELIVERY_STEPS[1], claim_batch(engine, "webhook", sid, batch, 60.0))
        await timed(DELIVERY_STEPS[2], record_batch(engine, rows, None, None, [], RetryPolicy(), "webhook"))
    for _ in range(samples):
        await step(DELIVERY_STEPS[0], queue(batch))
        rows = await step(DELIVERY_STEPS[1], claim_batch(engine, "webhook", sid, batch, 60.0))
        assert len(rows) == batch, rows
        await step(DELIVERY_STEPS[2], record_batch(engine, rows, None, None, [], RetryPolicy(), "webhook"))
    async with engine.connect() as conn:
        page_size = (await conn.exec_driver_sql("PRAGMA page_size")).scalar_one()
    close_inline(engine)
    await engine.dispose()
    return page_size, [(name, samples * batch, seen[name], written[name]) for name in DELIVERY_STEPS], cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, default=2000, help="the register's size first (4 changes each)")
    ap.add_argument("--samples", type=int, default=5, help="changes of each kind measured")
    ap.add_argument("--page-size", type=int, default=0, help="the new database's page size (default: the hub's)")
    ap.add_argument("--deliveries", action="store_true", help="a webhook delivery's steps rather than changes")
    ap.add_argument("--backlog", type=int, default=2000, help="--deliveries: pending deliveries queued first")
    ap.add_argument("--message", type=int, default=5000, help="--deliveries: a message's bytes (encrypted)")
    ap.add_argument("--batch", type=int, default=1,
                    help="--deliveries: deliveries a transaction (queued, leased, recorded together)")
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tmp = Path(tempfile.mkdtemp(prefix="s117-bench-pages-"))
    try:
        if args.deliveries:
            page_size, results, cpu = asyncio.run(run_deliveries(args.backlog, args.samples, args.message, tmp,
                                                                 args.page_size, args.batch))
        else:
            page_size, results = asyncio.run(run(args.people, args.samples, tmp, args.page_size))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.deliveries:
        print(f"Pages a webhook delivery's steps write (SQLite, {page_size // 1024} KB pages), {args.backlog:,}"
              f" pending deliveries of {args.message:,} bytes first, {args.batch} a transaction; WAL frames and CPU"
              f" a delivery, {args.samples * args.batch} deliveries\n")
    else:
        print(f"Pages a register change writes (SQLite, {page_size // 1024} KB pages), a register of {args.people:,}"
              " people first; WAL frames, mean of the samples; page 1 (`sqlite_schema`) holds the file's size\n")
    names = sorted({n for _, _, c, _ in results for n in c})
    print("| table or index | " + " | ".join(what for what, _, _, _ in results) + " |")
    print("|---|" + "---|" * len(results))
    for name in sorted(names, key=lambda n: -sum(c[n] for _, _, c, _ in results)):
        print(f"| {name} | " + " | ".join(f"{c[name] / n:.1f}" if c[name] else "" for _, n, c, _ in results) + " |")
    print("| **all** | " + " | ".join(f"**{sum(c.values()) / n:.1f}**" for _, n, c, _ in results) + " |")
    print("| **WAL KB** | " + " | ".join(f"**{w / n / 1024:.1f}**" for _, n, _, w in results) + " |")
    if args.deliveries:
        print("| **CPU us** (the process, user and kernel) | "
              + " | ".join(f"**{cpu[what] / n * 1e6:.0f}**" for what, n, _, _ in results) + " |")


if __name__ == "__main__":
    main()
