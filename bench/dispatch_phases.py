"""The dispatcher's CPU a batch by phase (`process_time` around the fetch, the snapshot's work,
the prefetch, `handle`, `_still_holds`, the replay, SQLAlchemy's `Connection.commit` with the
committing thread's user and system time, the batch's log line), for each batch size given, on a
copy of a kept `bench_load.py --ingest-only --keep` level: a phase's part that does not grow with
the batch is `a16 - 16 * (a64 - a16) / 48` (bench/JOURNAL.md, "Seventeenth session").

    PYTHONPATH=<checkout> .venv/bin/python bench/dispatch_phases.py <level dir> 16 64
    KEEP=1 ...   # the dispatched copy kept (its path on stderr), e.g. for bench/wal_frames.py
"""
import asyncio, os, shutil, sys, tempfile, time, collections, functools
from pathlib import Path
src = Path(sys.argv[1]); sizes = [int(x) for x in sys.argv[2:]]

def timed(acc, key, fn):
    @functools.wraps(fn)
    async def w(*a, **k):
        t = time.process_time()
        try:
            return await fn(*a, **k)
        finally:
            acc[key] += time.process_time() - t
    return w

async def one(batch):
    work = Path(tempfile.mkdtemp(prefix="s117-ph-"))
    for n in ("hub.db", "data.key", "sharing.yaml"):
        shutil.copy(src / n, work / n)
    os.environ.update({"S117_DATABASE_URL": f"sqlite+aiosqlite:///{work / 'hub.db'}",
        "S117_DATA_KEY_FILE": str(work / "data.key"), "S117_SHARING_AGREEMENTS_PATH": str(work / "sharing.yaml"),
        "S117_BUS_URL": "sql", "S117_LOG_LEVEL": "INFO", "S117_CANONICAL_BASE": "https://s117hub.example.org",
        "S117_REVIEW_SCAN_INTERVAL_SECONDS": "0"})
    from hub.settings import Settings
    from hub.bootstrap import build_hub
    from hub.observability.logging import configure_logging
    import hub.delivery.dispatcher as D
    import hub.store.db as DB
    sys.stdout = open(work / "hub.log", "w")
    configure_logging("INFO", True)
    hub = await build_hub(Settings())
    from hub.server import tune_gc; tune_gc()
    d = hub.dispatcher
    acc = collections.Counter()
    log = d._log
    log.fetch = timed(acc, "fetch", log.fetch)
    log.fetch_on = timed(acc, "fetch_on", log.fetch_on) if hasattr(log, "fetch_on") else None
    if hasattr(d, "_two_phase"):  # 2362d5e's snapshot phase (main's is `_fetch_and_work_out`)
        d._two_phase = timed(acc, "two_phase(all)", d._two_phase)
    if hasattr(d, "_fetch_and_work_out"):
        d._fetch_and_work_out = timed(acc, "fetch_and_work_out(all)", d._fetch_and_work_out)
    d._still_holds = timed(acc, "still_holds", d._still_holds)
    orig_work = d._work
    d._work = timed(acc, "work(snapshot)", d._work)
    d._prefetch = timed(acc, "prefetch", d._prefetch)
    d.handle = timed(acc, "handle", d.handle)
    d._dispatched = timed(acc, "dispatched", d._dispatched)
    D.RecordingConn.replay = timed(acc, "replay", D.RecordingConn.replay)
    D._BatchCache.flush = timed(acc, "flush(recorded)", D._BatchCache.flush)
    cd = D._BatchCache.count_dispatched
    def cdw(self):
        t = time.process_time(); cd(self); acc["count_dispatched"] += time.process_time() - t
    D._BatchCache.count_dispatched = cdw
    import sqlalchemy.engine.base as B
    oc = B.Connection.commit
    import resource
    def ocw(self):
        r0 = resource.getrusage(resource.RUSAGE_THREAD); t = time.process_time(); oc(self); acc["commit"] += time.process_time() - t
        r1 = resource.getrusage(resource.RUSAGE_THREAD)
        acc["commit thread user"] += r1.ru_utime - r0.ru_utime; acc["commit thread sys"] += r1.ru_stime - r0.ru_stime
    B.Connection.commit = ocw
    await d.run_once(1)
    acc.clear()
    n, batches, c0 = 0, 0, time.process_time()
    while (k := await d.run_once(batch)):
        n += k; batches += 1
    total = time.process_time() - c0
    await hub.close()
    if not os.environ.get("KEEP"): shutil.rmtree(work, ignore_errors=True)
    else: print("kept", work, file=sys.__stderr__)
    sys.stdout = sys.__stdout__
    from prometheus_client import REGISTRY
    print("redone", [(s.labels, s.value) for m in REGISTRY.collect() if m.name == "s117_dispatch_batches_redone" for s in m.samples])
    print(f"batch {batch}: {n} events, {batches} batches, {1e3*total/n:.3f} ms/event, {1e3*total/batches:.3f} ms/batch")
    for k, v in sorted(acc.items(), key=lambda x: -x[1]):
        print(f"   {k:20s} {1e3*v/batches:7.3f} ms/batch  {1e6*v/n:7.1f} us/event")
for b in sizes:
    asyncio.run(one(b))
