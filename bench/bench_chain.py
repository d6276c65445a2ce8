"""The audit chain alone, in-process: CPU per record of `AuditChain.extend`
on the records a real dispatch leaves (disclosures, access decisions).

A kept `bench_load.py --ingest-only --keep` level (`--db DIR`: hub.db,
data.key, sharing.yaml) is dispatched once here by the hub's own dispatcher
(nothing chained yet); then, R times, a copy of that database is chained
from scratch by `AuditChain.extend` in this process (the garbage collector
tuned as a worker process tunes it), `verify` must pass, and the CPU per
record is printed. `--dump FILE` writes the chain's rows and cursors: with
`--dispatched DIR` the dispatched copy is kept there and, if already there,
chained as it is, so two checkouts chain the very same records (their
times included) and their dumps can be diffed. Alternate two checkouts on
one dispatched copy to compare them.

    .venv/bin/python bench/bench_chain.py --db /tmp/kept-level --dispatched /tmp/chain-level [--rounds 4] [--dump chain.txt]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def dispatch(level: Path, into: Path) -> int:
    """A copy of `level` with every event dispatched (the records the chain takes)."""
    for name in ("hub.db", "data.key", "sharing.yaml"):
        shutil.copy(level / name, into / name)
    os.environ.update({"S117_DATABASE_URL": f"sqlite+aiosqlite:///{into / 'hub.db'}",
                       "S117_DATA_KEY_FILE": str(into / "data.key"),
                       "S117_SHARING_AGREEMENTS_PATH": str(into / "sharing.yaml"), "S117_BUS_URL": "sql",
                       "S117_LOG_LEVEL": "WARNING", "S117_CANONICAL_BASE": "https://s117hub.example.org",
                       "S117_REVIEW_SCAN_INTERVAL_SECONDS": "0"})
    from hub.bootstrap import build_hub
    from hub.settings import Settings

    hub = await build_hub(Settings())
    n = 0
    while k := await hub.dispatcher.run_once(64):
        n += k
    await hub.close()
    return n


async def chain_once(dispatched: Path, dump: str | None) -> tuple[int, float]:
    from sqlalchemy import text

    from hub.audit import AuditChain
    from hub.store.db import create_engine

    work = Path(tempfile.mkdtemp(prefix="s117-bench-chain-"))
    try:
        shutil.copy(dispatched / "hub.db", work / "hub.db")
        engine = create_engine(f"sqlite+aiosqlite:///{work / 'hub.db'}")
        chain = AuditChain(engine, b"bench-key")
        n, c0 = 0, time.process_time()
        while k := await chain.extend():
            n += k
        cpu = time.process_time() - c0
        result = await chain.verify()
        assert result["ok"], result["problems"][:3]
        if dump:
            async with engine.connect() as conn:
                rows = (await conn.execute(text("SELECT * FROM audit_chain ORDER BY seq"))).all()
                rows += (await conn.execute(text("SELECT * FROM audit_cursors ORDER BY source"))).all()
            Path(dump).write_text("".join(f"{tuple(r)!r}\n" for r in rows))
        await engine.dispose()
        return n, cpu
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, required=True, help="a kept bench_load level (hub.db, data.key, sharing.yaml)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--dump", help="write the chain's rows and cursors here (the first round's)")
    ap.add_argument("--dispatched", type=Path, help="keep the dispatched copy here; if there, chain it as it is")
    args = ap.parse_args()
    from hub.observability.logging import configure_logging
    from hub.server import tune_gc

    configure_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="s117-bench-chain-") as tmp:
        dispatched = args.dispatched or Path(tmp)
        if (dispatched / "hub.db").exists():
            print(f"chaining the dispatched copy in {dispatched}")
        else:
            dispatched.mkdir(parents=True, exist_ok=True)
            print(f"{await dispatch(args.db, dispatched):,} events dispatched from {args.db} into {dispatched}")
        tune_gc()  # as a worker process: start-up objects frozen, fewer young collections
        print(f"chaining a copy {args.rounds} times (2 cores, load average {os.getloadavg()[0]:.1f})")
        for r in range(1, args.rounds + 1):
            n, cpu = await chain_once(dispatched, args.dump if r == 1 else None)
            print(f"| {r} | {n:,} records | {1e6 * cpu / max(n, 1):.1f} us a record |")


if __name__ == "__main__":
    asyncio.run(main())
