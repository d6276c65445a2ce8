"""Time loading the shipped reference data (`PublicReferenceData()`: legal
statuses, councils, NHS organisations and their successions, GP practices,
council areas, hospitals, bank holidays), beside a baseline measured in the
same run: reading every CSV file in `hub/refdata/data/` with
`csv.DictReader` and doing nothing with the rows (the loader reads only
some of them, and only the columns it needs: it can beat this baseline).

    .venv/bin/python bench/bench_refdata.py [runs]

This replaces a timed unit test (load under 1 s), which failed on a slow
stretch of a shared host though nothing had changed: a speed target belongs
here, as a ratio to the bare read."""

from __future__ import annotations

import csv
import statistics
import sys
import time
from importlib import resources
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.refdata.loader import PublicReferenceData  # noqa: E402


def _bare_read() -> int:
    rows = 0
    for entry in resources.files("hub.refdata").joinpath("data").iterdir():
        if entry.name.endswith(".csv"):
            with entry.open("r", encoding="utf-8-sig", newline="") as f:
                rows += sum(1 for _ in csv.DictReader(f))
    return rows


def _median(fn, runs: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rows = _bare_read()
    bare = _median(_bare_read, runs)
    load = _median(PublicReferenceData, runs)
    print(f"reference data: {rows:,} CSV rows; median of {runs} runs")
    print("| what | ms | / bare read |")
    print("|---|---|---|")
    print(f"| bare read (csv.DictReader, rows dropped) | {bare * 1e3:,.0f} | 1.0x |")
    print(f"| PublicReferenceData() | {load * 1e3:,.0f} | {load / bare:.1f}x |")


if __name__ == "__main__":
    main()
