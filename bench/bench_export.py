"""A council's full register extract, embedded mode (SQLite), each phase in
its own process so its peak RSS is its own.

A register of `--people` people (default 100,000; each a qualifying s3
detention and discharge in Buckinghamshire, written straight to the store).

- baseline: read the same persons and change rows page by page and write one
  CSV line per person (the I/O any extract must do);
- hub: `ExportService.build` of a full `swift_csv` extract for Buckinghamshire
  (each person evaluated from their history, NHS number decrypted, the
  council's agreement applied, written atomically with its manifest).

    .venv/bin/python bench/bench_export.py [--people 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_snapshot import _prepare, peak_rss_mib  # noqa: E402


async def baseline(work: Path) -> dict:
    from hub.reconciliation import _hub_people
    from hub.store.db import create_engine

    engine = create_engine(f"sqlite+aiosqlite:///{work / 'hub.db'}")
    t0 = time.perf_counter()
    n = 0
    with (work / "baseline.csv").open("w") as f:
        async for key, person_id, changes in _hub_people(engine):
            f.write(f"{key},{person_id},{len(changes)}\n")
            n += 1
    await engine.dispose()
    return {"rows": n, "seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib()}


async def hub_phase(work: Path) -> dict:
    from hub.agreements_loader import load_agreements
    from hub.crypto import DataProtector
    from hub.exports import ExportRequest, ExportService
    from hub.fhir.messages import FIELD_GROUPS
    from hub.observability.logging import configure_logging
    from hub.refdata.loader import load_reference_data
    from hub.settings import REPO_ROOT
    from hub.sharing import SharingAgreements
    from hub.store.db import create_engine

    configure_logging("WARNING")
    engine = create_engine(f"sqlite+aiosqlite:///{work / 'hub.db'}")
    svc = ExportService(engine, load_reference_data(), load_agreements(REPO_ROOT / "contracts" / "area-agreements.yaml"),
                        SharingAgreements.load(REPO_ROOT / "contracts" / "data-sharing-agreements.yaml", FIELD_GROUPS),
                        DataProtector.from_settings(None, work / "data.key"), work / "exports")
    export = await svc.request(ExportRequest("E06000060", "swift_csv", "full"))
    t0 = time.perf_counter()
    await svc.build(await svc.export_row(export["export_id"]))
    seconds = time.perf_counter() - t0
    done = await svc.export(export["export_id"])
    await engine.dispose()
    return {"rows": done["record_count"], "seconds": seconds, "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--people", type=int, default=100_000)
    ap.add_argument("--phase", choices=["prepare", "baseline", "hub"])
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    if args.phase == "prepare":
        asyncio.run(_prepare(args.work, args.people, args.people))
        return
    if args.phase:
        print(json.dumps(asyncio.run({"baseline": baseline, "hub": hub_phase}[args.phase](args.work))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        run = lambda phase: subprocess.run(  # noqa: E731
            [sys.executable, __file__, "--phase", phase, "--work", tmp, "--people", str(args.people)],
            check=True, capture_output=True, text=True).stdout
        t = time.perf_counter()
        run("prepare")
        print(f"prepared a register of {args.people:,} people in {time.perf_counter() - t:.1f} s")
        base = json.loads(run("baseline"))
        hub = json.loads(run("hub"))
    print(f"{'':34}{'rows/s':>10}{'seconds':>10}{'peak RSS MiB':>14}")
    for name, r in (("baseline: read rows, write lines", base), ("hub: full extract", hub)):
        print(f"{name:34}{r['rows'] / r['seconds']:>10,.0f}{r['seconds']:>10.2f}{r['peak_rss_mib']:>14.0f}")
    print(f"ratio: the extract takes {hub['seconds'] / base['seconds']:.1f}x the baseline's time "
          f"({hub['rows']:,} rows written)")


if __name__ == "__main__":
    main()
