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
from collections import Counter
from datetime import date
from pathlib import Path

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, default=2000, help="the register's size first (4 changes each)")
    ap.add_argument("--samples", type=int, default=5, help="changes of each kind measured")
    ap.add_argument("--page-size", type=int, default=0, help="the new database's page size (default: the hub's)")
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tmp = Path(tempfile.mkdtemp(prefix="s117-bench-pages-"))
    try:
        page_size, results = asyncio.run(run(args.people, args.samples, tmp, args.page_size))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"Pages a register change writes (SQLite, {page_size // 1024} KB pages), a register of {args.people:,}"
          " people first; WAL frames, mean of the samples; page 1 (`sqlite_schema`) holds the file's size\n")
    names = sorted({n for _, _, c, _ in results for n in c})
    print("| table or index | " + " | ".join(what for what, _, _, _ in results) + " |")
    print("|---|" + "---|" * len(results))
    for name in sorted(names, key=lambda n: -sum(c[n] for _, _, c, _ in results)):
        print(f"| {name} | " + " | ".join(f"{c[name] / n:.1f}" if c[name] else "" for _, n, c, _ in results) + " |")
    print("| **all** | " + " | ".join(f"**{sum(c.values()) / n:.1f}**" for _, n, c, _ in results) + " |")
    print("| **WAL KB** | " + " | ".join(f"**{w / n / 1024:.1f}**" for _, n, _, w in results) + " |")


if __name__ == "__main__":
    main()
