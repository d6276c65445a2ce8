"""Bench-only: counts the SQL statements a hub process runs on SQLite.

`bench_load.py --count-statements` puts this directory first on the hub's
PYTHONPATH and sets `S117_BENCH_STATEMENTS` to a file prefix; every sqlite3
connection the process opens then counts its statements (SQLite's trace
callback: each statement stepped, each row of an executemany, BEGIN and
COMMIT too) and the process writes its totals to `<prefix>.<pid>` twice a
second as JSON: statements, write transactions begun (BEGIN IMMEDIATE) and
commits. A figure the host's speed does not move, unlike CPU and time.
Nothing of the statements' text or values is kept or written."""

from __future__ import annotations

import os

if os.environ.get("S117_BENCH_STATEMENTS"):
    import json
    import sqlite3
    import sqlite3.dbapi2
    import threading
    import time

    _counts = {"statements": 0, "write_transactions": 0, "commits": 0}
    _real_connect = sqlite3.connect

    def _trace(sql: str) -> None:
        _counts["statements"] += 1
        head = sql[:16].upper()
        if head.startswith("BEGIN IMMEDIATE"):
            _counts["write_transactions"] += 1
        elif head.startswith("COMMIT"):
            _counts["commits"] += 1

    def _connect(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        conn = _real_connect(*args, **kwargs)
        conn.set_trace_callback(_trace)
        return conn

    sqlite3.connect = sqlite3.dbapi2.connect = _connect

    def _write() -> None:
        path = f"{os.environ['S117_BENCH_STATEMENTS']}.{os.getpid()}"
        while True:
            time.sleep(0.5)
            with open(path + ".tmp", "w") as f:
                json.dump(_counts, f)
            os.replace(path + ".tmp", path)

    threading.Thread(target=_write, daemon=True, name="bench-statements").start()
