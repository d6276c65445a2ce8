"""The disk's fsync tail, with no hub and no SQLite: what bounds the POST ->
webhook p99 at a steady rate (bench_load.py --rate) on this machine.

A register change reaches a webhook only after at least two fsync'd
COMMITs in a row (the change's, then the dispatcher's), so a disk whose
fsync sometimes takes hundreds of milliseconds holds every change in that
window whatever the hub does. This measures the disk alone, on the
filesystem the hub's database would use (`--dir`, default the system's
temporary directory):

    alone        a 4 KB write and fdatasync every 3 ms to one file (a WAL's
                 commits), nothing else on the disk
    checkpoint   the same, while another thread writes N random 4 KB pages
                 into a 64 MB file and fdatasyncs it every 250 ms (a WAL
                 checkpoint's copy into the database file)

For each: the small fsyncs' p50 / p99 / max, how many took over 100 ms and
how often that happened, and the big fsyncs' p50 / max.

    .venv/bin/python bench/bench_disk.py                 (20 s each: alone, 200 pages, 2,000 pages)
    .venv/bin/python bench/bench_disk.py --seconds 60 --pages 0 500
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

PAGE = 4096
BIG_FILE = 64 << 20
SMALL_FILE = 4 << 20


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def _checkpointer(fd: int, pages: int, stop: threading.Event, took: list[float]) -> None:
    buf = os.urandom(PAGE)
    rng = random.Random(1)
    while not stop.is_set():
        for _ in range(pages):
            os.pwrite(fd, buf, rng.randrange(BIG_FILE // PAGE) * PAGE)
        began = time.perf_counter()
        os.fdatasync(fd)
        took.append(time.perf_counter() - began)
        stop.wait(0.25)


def run(directory: Path, pages: int, seconds: float) -> dict:
    small = os.open(directory / "wal", os.O_RDWR | os.O_CREAT, 0o600)
    big = os.open(directory / "db", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for off in range(0, SMALL_FILE, 1 << 20):  # written and synced first: overwrites, no allocation
            os.pwrite(small, os.urandom(1 << 20), off)
        for off in range(0, BIG_FILE, 1 << 20):
            os.pwrite(big, os.urandom(1 << 20), off)
        os.fsync(small)
        os.fsync(big)
        stop, big_syncs = threading.Event(), []
        thread = threading.Thread(target=_checkpointer, args=(big, pages, stop, big_syncs), daemon=True)
        if pages:
            thread.start()
        buf, off, took = os.urandom(PAGE), 0, []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            os.pwrite(small, buf, off)
            off = (off + PAGE) % SMALL_FILE
            began = time.perf_counter()
            os.fdatasync(small)
            took.append(time.perf_counter() - began)
            time.sleep(0.003)
        stop.set()
        if pages:
            thread.join()
    finally:
        os.close(small)
        os.close(big)
    slow = [t for t in took if t > 0.1]
    return {"pages": pages, "n": len(took), "p50": pct(took, 50), "p99": pct(took, 99), "max": max(took),
            "slow": len(slow), "seconds": seconds,
            "big_p50": statistics.median(big_syncs) if big_syncs else None,
            "big_max": max(big_syncs) if big_syncs else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                    help="where the two files go (the filesystem the hub's database would use)")
    ap.add_argument("--seconds", type=float, default=20.0, help="each level's length (default 20)")
    ap.add_argument("--pages", type=int, nargs="*", default=[0, 200, 2000],
                    help="the checkpoint-like writer's pages every 250 ms, one level each (0: alone)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="s117-bench-disk-", dir=args.dir))
    print(f"a 4 KB write and fdatasync every 3 ms in {work} ({os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}); {args.seconds:.0f} s a level")
    print("| beside it | fsyncs | p50 | p99 | max | over 100 ms | one over 100 ms every | big fsync p50 / max |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        for pages in args.pages:
            r = run(work, pages, args.seconds)
            beside = "nothing" if not pages else f"{pages:,} pages every 250 ms"
            every = f"{r['seconds'] / r['slow']:.1f} s" if r["slow"] else "-"
            big = f"{r['big_p50'] * 1e3:.0f} / {r['big_max'] * 1e3:.0f} ms" if r["big_p50"] is not None else "-"
            print(f"| {beside} | {r['n']:,} | {r['p50'] * 1e3:.2f} ms | {r['p99'] * 1e3:.1f} ms "
                  f"| {r['max'] * 1e3:.0f} ms | {r['slow']} | {every} | {big} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
