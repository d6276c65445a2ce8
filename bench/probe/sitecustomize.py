"""Bench-only: counts the SQL statements a hub process runs (SQLite and
asyncpg), and (`--commit-times`, below) times its SQLite COMMITs and WAL checkpoints.

`bench_load.py --count-statements` puts this directory first on the hub's
PYTHONPATH and sets `S117_BENCH_STATEMENTS` to a file prefix; every sqlite3
connection the process opens then counts its statements (SQLite's trace
callback: each statement stepped, each row of an executemany, BEGIN and
COMMIT too) and the process writes its totals to `<prefix>.<pid>` twice a
second as JSON: statements, write transactions begun (a BEGIN IMMEDIATE that
took the lock, not one refused while another process held it), those refused
(`begins_refused`: counted at the connection's next statement, which is
its next try) and commits. A figure the host's speed does not move, unlike CPU and time.
Nothing of the statements' text or values is kept or written.

On PostgreSQL (asyncpg) it counts round trips: `pg_round_trips` (each
prepared statement's execution, an executemany being one, and each simple
query: BEGIN, COMMIT, ROLLBACK, SQLAlchemy's pre-ping `;`), `pg_begins`
(every transaction begun, reads too), `pg_commits`, `pings` and `prepares`
(statements prepared)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

def _dump_every(path: str, data: dict, seconds: float = 0.5) -> None:
    """Write `data` as JSON to `path` every `seconds`, replacing it whole (a reader never sees half)."""
    while True:
        time.sleep(seconds)
        with open(path + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(path + ".tmp", path)


if os.environ.get("S117_BENCH_STATEMENTS"):
    import sqlite3
    import sqlite3.dbapi2

    _counts = {"statements": 0, "write_transactions": 0, "commits": 0, "begins_refused": 0}
    _real_connect = sqlite3.connect

    def _tracer(conn: sqlite3.Connection):  # noqa: ANN202
        # A BEGIN IMMEDIATE refused (another process holds the write lock; the
        # hub waits and tries again) is traced as well: it counts as a write
        # transaction only once the connection is seen in a transaction, at its
        # next statement (its first write, or its COMMIT).
        pending = False

        def trace(sql: str) -> None:
            nonlocal pending
            _counts["statements"] += 1
            if pending:
                if conn.in_transaction:
                    _counts["write_transactions"] += 1
                else:  # refused: another connection held the write lock (the hub tries again)
                    _counts["begins_refused"] += 1
            head = sql[:16].upper()
            pending = head.startswith("BEGIN IMMEDIATE")
            if head.startswith("COMMIT"):
                _counts["commits"] += 1

        return trace

    def _connect(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        conn = _real_connect(*args, **kwargs)
        conn.set_trace_callback(_tracer(conn))
        return conn

    sqlite3.connect = sqlite3.dbapi2.connect = _connect

    try:
        import asyncpg.connection
        import asyncpg.prepared_stmt
    except ImportError:
        pass
    else:
        _counts.update(pg_round_trips=0, pg_begins=0, pg_commits=0, pings=0, prepares=0)
        _pg = asyncpg.connection.Connection
        _ps = asyncpg.prepared_stmt.PreparedStatement

        def _counting(real, classify=None):  # noqa: ANN001, ANN202
            async def wrapper(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
                if classify is not None and len(args) > 1:  # execute with arguments: counted in _execute
                    return await real(self, *args, **kwargs)
                _counts["pg_round_trips"] += 1
                if classify is not None and args and isinstance(args[0], str):
                    head = args[0][:8].upper()
                    if head.startswith("BEGIN"):
                        _counts["pg_begins"] += 1
                    elif head.startswith("COMMIT"):
                        _counts["pg_commits"] += 1
                    elif head == ";":
                        _counts["pings"] += 1
                return await real(self, *args, **kwargs)
            return wrapper

        _real_fetchrow = _pg.fetchrow

        async def _fetchrow(self, query, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            if query == ";":  # SQLAlchemy's pre-ping
                _counts["pings"] += 1
            return await _real_fetchrow(self, query, *args, **kwargs)

        _real_prepare = _pg._prepare

        async def _prepare(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            _counts["prepares"] += 1
            return await _real_prepare(self, *args, **kwargs)

        _pg.execute = _counting(_pg.execute, classify=True)  # simple queries: BEGIN, COMMIT, ROLLBACK
        _pg._execute = _counting(_pg._execute)  # fetch, fetchrow (the ping) without a prepared statement
        _pg._executemany = _counting(_pg._executemany)
        _pg.fetchrow = _fetchrow
        _pg._prepare = _prepare
        _ps._PreparedStatement__do_execute = _counting(_ps._PreparedStatement__do_execute)

    threading.Thread(target=_dump_every, args=(f"{os.environ['S117_BENCH_STATEMENTS']}.{os.getpid()}", _counts),
                     daemon=True, name="bench-statements").start()


# `bench_load.py --commit-times` (S117_BENCH_COMMITS=<file prefix>): every COMMIT of
# the hub's SQLite writer and every WAL checkpoint, as the hub times them for its
# own metrics (s117_store_commit_seconds, s117_store_checkpoint_seconds), with when
# each ended, written to `<prefix>.<pid>` as JSON twice a second: which of a level's
# slow commits overlapped a checkpoint (any process's), and its p99 and worst.
if os.environ.get("S117_BENCH_COMMITS"):
    _times: dict = {"role": os.environ.get("S117_WORKER_ROLE", "front"), "commit": [], "checkpoint": []}

    def _recording(histogram, key: str) -> None:  # noqa: ANN001
        real = histogram.observe

        def observe(amount: float, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            _times[key].append((time.time(), amount))
            return real(amount, *args, **kwargs)

        histogram.observe = observe

    def _watch() -> None:
        # The hub's modules are importable only once `python -m` has put the
        # repository on sys.path: the metrics are wrapped when first imported.
        while "hub.observability.metrics" not in sys.modules:
            time.sleep(0.01)
        metrics = sys.modules["hub.observability.metrics"]
        while not hasattr(metrics, "STORE_CHECKPOINT_SECONDS"):
            time.sleep(0.01)
        _recording(metrics.STORE_COMMIT_SECONDS, "commit")
        _recording(metrics.STORE_CHECKPOINT_SECONDS, "checkpoint")
        _dump_every(f"{os.environ['S117_BENCH_COMMITS']}.{os.getpid()}", _times)

    threading.Thread(target=_watch, daemon=True, name="bench-commits").start()


# `bench_load.py --calls` (S117_BENCH_CALLS=<file prefix>): the process's Python
# calls over the load, each hub process apart. A first SIGUSR2 starts cProfile
# (on the main thread's CPU clock: the event loop, where the hub's work runs), the
# next stops it and writes its statistics to `<prefix>.<role>.<pid>` (pstats; role
# front, back, deliver or all). Python calls a change is a figure the host's speed
# does not move, but the back and deliver processes' depends on how many changes a
# dispatch batch and a deliverer's wake-up take (their fixed costs a batch): the
# bench prints those counts beside it. The profiler slows the hub (about 2x), so a
# run's CPU figures are not comparable with one without it.
if os.environ.get("S117_BENCH_CALLS"):
    import cProfile
    import signal

    _profile = cProfile.Profile(time.thread_time)
    _profiling = [False]
    _calls_path = f"{os.environ['S117_BENCH_CALLS']}.{os.environ.get('S117_WORKER_ROLE', 'front')}.{os.getpid()}"

    def _toggle(_signum, _frame):  # noqa: ANN001, ANN202 - runs on the main thread, between two bytecodes
        if not _profiling[0]:
            _profiling[0] = True
            _profile.enable()
            return
        _profile.disable()
        _profiling[0] = False
        _profile.dump_stats(_calls_path)

    signal.signal(signal.SIGUSR2, _toggle)
