"""Load: the hub as a real `uvicorn` process in embedded mode (SQLite WAL,
synchronous=FULL), N concurrent clients posting register changes to
`/v1/register-changes`, and a local webhook receiver (a council subscribed to
everything) recording when each message arrives.

Prints accepted/s, POST p50/p99, POST -> webhook p50/p99, delivered/s and the
hub's CPU per change (its deliveries included), beside a baseline measured in
the same run on the same disk: a bare `sqlite3` row insert of a register
change, one fsync'd transaction per row, with the same pragmas. The ratio
(hub time per change / bare insert time per row) is what to compare between
runs on a busy machine.

    .venv/bin/python bench/bench_load.py                 # 3,000 changes at 1, 8 and 32 clients
    .venv/bin/python bench/bench_load.py --quick         # 600 changes at 32 clients
    .venv/bin/python bench/bench_load.py --clients 32 --changes 5000
    .venv/bin/python bench/bench_load.py --quick --profile   # py-spy the hub (pip install py-spy)
    .venv/bin/python bench/bench_load.py --rate 200 --changes 2000   # a steady 200 changes/s (open loop)

Changes are synthetic: people from the 999 test range (hub/sample_data.py),
four changes each (detained, section changed, left hospital, moved), each
person's changes sent in order by one client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import random
import signal
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path

import httpx
import orjson
import uvicorn
import yaml
from sqlalchemy import func, select
from fastapi import FastAPI, Request, Response

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub.clients import add_client  # noqa: E402
from hub.settings import Settings  # noqa: E402
from hub.sample_data import detention_to_move_scenario  # noqa: E402
from hub.store.db import create_engine, create_schema  # noqa: E402
from hub.store.schema import deliveries, disclosures  # noqa: E402
from hub.worker_process import processes, serving_layout  # noqa: E402
from tests.support import HubProcess, free_port  # noqa: E402
from bench.rawhttp import RawClient, serve_receiver  # noqa: E402

SECRET = "bench-webhook-secret-0123456789abcdef0123"
# Every body the sample people's events are routed to (the council, the host
# council after the move, the ICB) subscribes to everything its agreement allows.
ORGS = {"E06000060": "council", "E10000034": "council", "QU9": "icb"}
SHARING = {"version": 1, "agreements": [{"id": "DSA-BENCH", "valid_from": "2020-01-01", "recipients": [
    {"org_code": org, "events": ["*"],
     "field_groups": ["identity", "demographics", "legal-status", "responsibility", "explanations"]}
    for org in ORGS]}]}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def cpu_times(pid: int, children: bool = True) -> tuple[float, float]:
    """(user, kernel) CPU seconds of the process and (`children`) its live child
    processes (the worker process of `S117_SEPARATE_WORKERS`): utime, stime."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0.0
    user, kernel = int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
    if not children:
        return user, kernel
    for c in child_pids(pid):
        u, k = cpu_times(c)
        user, kernel = user + u, kernel + k
    return user, kernel


def child_pids(pid: int) -> list[int]:
    """The process's live child processes (every thread's)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def worker_role(pid: int) -> str:
    """A hub worker process's `S117_WORKER_ROLE` (all, back, deliver); "?" if unknown."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, PermissionError):
        return "?"
    return next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"S117_WORKER_ROLE=")), "?")


# Servers' CPU seconds by name (bench_production.py: PostgreSQL and Kafka), sampled over
# the same window as the hub's CPU per change (the load and its drain, not the set-up).
SERVERS_CPU: Callable[[], dict[str, float]] | None = None


def cpu_seconds(pid: int, children: bool = True) -> float:
    """CPU of the process and (`children`) its live child processes, utime + stime."""
    return sum(cpu_times(pid, children))


def spied(front_pid: int) -> int:
    """The process `--profile` records: the front, or with BENCH_SPY_ROLE=back
    (or all, deliver) that worker process."""
    role = os.environ.get("BENCH_SPY_ROLE")
    if not role:
        return front_pid
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for c in child_pids(front_pid):
            if worker_role(c) == role:
                return c
        time.sleep(0.2)
    raise SystemExit(f"BENCH_SPY_ROLE={role}: no such worker process")


def switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of every thread of the process: a voluntary one is
    each time a thread waited (an fsync, a socket, an idle event loop) and later woke."""
    vol = invol = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    invol += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return vol, invol


def process_switches(front_pid: int) -> dict[str, tuple[int, int]]:
    """`switches` of the front and of each live worker process, by role."""
    out = {"front": switches(front_pid)}
    for c in child_pids(front_pid):
        role = worker_role(c)
        v, i = switches(c)
        was = out.get(role, (0, 0))
        out[role] = (was[0] + v, was[1] + i)
    return out


def worker_cpu(front_pid: int) -> dict[str, float]:
    """CPU seconds of each live worker process of the hub, by its role
    (`S117_WORKER_ROLE`: all, back, deliver)."""
    out: dict[str, float] = {}
    for c in child_pids(front_pid):
        role = worker_role(c)
        out[role] = out.get(role, 0.0) + cpu_seconds(c)
    return out


async def settle(pid: int, most: float = 60.0) -> None:
    """Wait until the hub is at rest (under a fifth of a core over half a
    second): with `--separate-workers` the worker process is still starting
    (reference data, schema checks) for seconds after the front answers,
    and the load must neither meet that nor count its CPU."""
    deadline = time.monotonic() + most
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(0.5)
        if (cpu_seconds(pid) - before) / 0.5 < 0.2:
            return
    print(f"  the hub did not come to rest within {most:.0f} s", file=sys.stderr)


async def statement_counts(workdir: Path) -> dict[str, int]:
    """The hub processes' SQL counts (bench/probe/sitecustomize.py), summed, once each has written them anew."""
    await asyncio.sleep(1.2)
    total: dict[str, int] = {}
    for f in workdir.glob("statements.*"):
        if f.suffix == ".tmp":
            continue
        for k, v in orjson.loads(f.read_bytes()).items():
            total[k] = total.get(k, 0) + v
    return total


def mean_batch(metrics_text: str) -> float:
    values = {}
    for line in metrics_text.splitlines():
        for name in ("s117_ingest_batch_changes_sum", "s117_ingest_batch_changes_count"):
            if line.startswith(name + " "):
                values[name] = float(line.split()[1])
    return values.get("s117_ingest_batch_changes_sum", 0) / max(values.get("s117_ingest_batch_changes_count", 0), 1)


def make_changes(n: int, seed: int) -> list[list[dict]]:
    rng = random.Random(seed)
    people = []
    run = uuid.uuid4().hex[:6]
    for i in range((n + 3) // 4):
        people.append(detention_to_move_scenario(rng, f"bench-{run}-{i}", date(2024, 1, 1)))
    return people


def _bare_db(path: Path) -> sqlite3.Connection:
    """A register_changes table alone, the hub's pragmas: the baselines' store."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE register_changes (change_id TEXT PRIMARY KEY, person_id TEXT, source TEXT,"
               " source_message_id TEXT, change_type TEXT, effective_date TEXT, canonical TEXT,"
               " UNIQUE (source, source_message_id))")
    return db


def bare_insert(path: Path, changes: list[dict], per_txn: int = 1) -> float:
    """Rows/s: register-change-sized rows, `per_txn` per fsync'd transaction
    (one `executemany` each; 1: a transaction per row), the hub's pragmas."""
    db = _bare_db(path)
    t0 = time.perf_counter()
    for i in range(0, len(changes), per_txn):
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO register_changes VALUES (?,?,?,?,?,?,?)",
                       [(str(uuid.uuid4()), "p", "bench", f"{c['source_message_id']}-{i + j}", c["change_type"],
                         c["effective_date"], orjson.dumps(c).decode())
                        for j, c in enumerate(changes[i:i + per_txn])])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    db.close()
    return len(changes) / elapsed


def bare_paced(path: Path, changes: list[dict], rate: float) -> dict:
    """The p99 target's floor on this disk: the same rows at the same steady
    rate (open loop, row i due at start + i/rate), one writer committing in
    one fsync'd transaction whatever rows are due (a group commit with no
    other work), the hub's pragmas. Each row's latency is from when it was
    due to when its COMMIT returned; the hub's POST -> webhook path has at
    least two such commits in a row (the change's, then the dispatcher's)."""
    db = _bare_db(path)
    rows = [(str(uuid.uuid4()), "p", "bench", f"{c['source_message_id']}-{i}", c["change_type"],
             c["effective_date"], orjson.dumps(c).decode()) for i, c in enumerate(changes)]
    latencies: list[float] = []
    commits: list[float] = []
    start = time.perf_counter()
    i = 0
    while i < len(rows):
        now = time.perf_counter()
        due = min(len(rows), int((now - start) * rate) + 1)
        if due <= i:
            time.sleep(start + i / rate - now)
            continue
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO register_changes VALUES (?,?,?,?,?,?,?)", rows[i:due])
        began = time.perf_counter()
        db.execute("COMMIT")
        done = time.perf_counter()
        commits.append(done - began)
        latencies.extend(done - (start + k / rate) for k in range(i, due))
        i = due
    db.close()
    return {"p50": pct(latencies, 50), "p99": pct(latencies, 99), "max": max(latencies),
            "slow_commits": sum(1 for c in commits if c > 0.1), "worst_commit": max(commits)}


def _receive(port: int, out: int, fastapi: bool = False) -> None:
    """The webhook receiver, in a child process: each POST's event id and
    arrival time (`time.perf_counter`: CLOCK_MONOTONIC, the same clock in
    every process) written to the pipe `out` as a line."""
    sink = os.fdopen(out, "wb", buffering=0)
    if not fastapi:
        async def serve() -> None:
            await serve_receiver(port, lambda event_id: sink.write(b"%s %r\n" % (event_id, time.perf_counter())))
            await asyncio.Event().wait()

        asyncio.run(serve())
        return
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        await request.body()
        sink.write(f"{request.headers.get('s117-event-id', '')} {time.perf_counter()}\n".encode())
        return Response(status_code=204)

    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, lifespan="off", access_log=False)


class _Recorded:
    """What a receiver heard: each event id's first arrival, messages in all, the last one's time."""

    def __init__(self, fastapi: bool = False) -> None:
        self.at: dict[str, float] = {}  # event id -> first arrival
        self.messages = 0
        self.port = free_port()
        self._fastapi = fastapi

    def record(self, event_id: str, at: float) -> None:
        self.at.setdefault(event_id, at)
        self.messages += 1
        self.last = at


class Arrivals(_Recorded):
    """The subscribers' receiver on the bench's own loop (the default: the
    figures of earlier runs were taken so). A burst of deliveries then also
    delays the bench's own POSTs, and on 2 cores the receiver takes CPU
    from the bench process rather than from the hub; `--receiver-process`
    runs it in a process of its own (`ArrivalsProcess`). It answers with
    `bench/rawhttp.py`'s receiver (tens of microseconds a POST); with
    `fastapi=True` (`--fastapi-receiver`, as in runs before 2026-12-01's
    fifth session) with uvicorn and FastAPI, a few hundred microseconds a
    POST of the 2 cores the hub also needs."""

    def __init__(self, fastapi: bool = False) -> None:
        super().__init__(fastapi)
        self._server: uvicorn.Server | None = None
        self._raw: asyncio.Server | None = None
        self._task: asyncio.Task | None = None

    def _arrived(self, event_id: bytes) -> None:
        self.record(event_id.decode(), time.perf_counter())

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            await request.body()
            self.record(request.headers.get("s117-event-id", ""), time.perf_counter())
            return Response(status_code=204)

        return app

    async def start(self) -> None:
        if not self._fastapi:
            self._raw = await serve_receiver(self.port, self._arrived)
            return
        self._server = uvicorn.Server(uvicorn.Config(self.app(), host="127.0.0.1", port=self.port,
                                                     log_config=None, lifespan="off", access_log=False))
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._raw is not None:
            self._raw.close()
            return
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task


class ArrivalsProcess(_Recorded):
    """The subscribers' receiver in a process of its own (`--receiver-process`):
    the bench's POSTs are timed on a loop that does nothing else; the
    receiver then competes with the hub for the 2 cores."""

    def __init__(self, fastapi: bool = False) -> None:
        super().__init__(fastapi)
        self._child: subprocess.Popen | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        read, write = os.pipe()
        self._child = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import bench.bench_load as b; "
             "b._receive(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == '1')",
             str(Path(__file__).resolve().parent.parent), str(self.port), str(write), "1" if self._fastapi else "0"],
            pass_fds=(write,))
        os.close(write)
        reader = asyncio.StreamReader(limit=1 << 20)
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read, "rb", buffering=0))
        self._task = asyncio.create_task(self._read(reader))
        deadline = time.monotonic() + 15
        while True:  # listening
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            event_id, at = line.split()
            self.record(event_id.decode(), float(at))

    async def stop(self) -> None:
        assert self._child is not None and self._task is not None
        await asyncio.sleep(0.2)  # the last lines through the pipe
        self._child.terminate()
        self._child.wait(10)
        await asyncio.wait_for(self._task, 10)  # the pipe's end, once the child is gone


async def run_level(clients: int, n: int, tmp: Path, args: argparse.Namespace, batch_max: int) -> dict:
    workdir = tmp / f"c{clients}-b{batch_max}"
    workdir.mkdir()
    sharing = workdir / "sharing.yaml"
    sharing.write_text(yaml.safe_dump(SHARING))
    people = make_changes(n, seed=clients)
    flat = [c for p in people for c in p][:n]

    base_rate = bare_insert(workdir / "bare.db", flat)
    # The disk's fsync tail moves from one minute to the next: the floor is taken before the hub's
    # run and again after it, and the worse of the two compared.
    paced_floors = [bare_paced(workdir / "bare-paced-before.db", flat, args.rate)] if args.rate else []

    arrivals = (ArrivalsProcess if args.receiver_process else Arrivals)(fastapi=args.fastapi_receiver)
    await arrivals.start()
    env = {"S117_LOG_LEVEL": args.log_level, "S117_INGEST_BATCH_MAX": str(batch_max)}
    if args.ingest_only:
        env["S117_RUN_WORKERS"] = "false"
    env.update(hub_process_env(args, workdir))
    hub = HubProcess(workdir, sharing_path=sharing, **env)
    engine = create_engine(hub.db_url)
    await create_schema(engine)
    _, trust_key = await add_client(engine, "Bench trust", "RNU", "trust", ["register:write"])
    sub_keys = {org: (await add_client(engine, org, org, kind, ["subscriptions:write"]))[1]
                for org, kind in ORGS.items()}
    await engine.dispose()
    await hub.start()
    profiler = None
    try:
        limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=120, limits=limits) as http:
            for key in sub_keys.values():
                r = await http.post("/v1/subscriptions", headers={"X-API-Key": key},
                                    json={"channel": "webhook", "url": f"http://127.0.0.1:{arrivals.port}/hook",
                                          "secret": SECRET,
                                          **({"pipeline": args.pipeline} if getattr(args, "pipeline", 1) > 1 else {})})
                assert r.status_code == 201, r.text
            if args.profile:
                out = tmp / f"profile-c{clients}-b{batch_max}.txt"
                spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
                assert spy, "--profile needs py-spy (pip install py-spy)"
                profiler = subprocess.Popen([spy, "record", "--pid", str(spied(hub.proc.pid)), "--format", "raw",
                                             "-o", str(out), "--rate", os.environ.get("BENCH_SPY_RATE", "500"),
                                             # BENCH_SPY_NATIVE=1: every running thread, C frames too (SQLite's own work)
                                             *(["--native", "--threads"] if os.environ.get("BENCH_SPY_NATIVE") else ["--nonblocking", "--gil"])],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            queue: asyncio.Queue[list[dict]] = asyncio.Queue()
            budget = n
            for p in people:
                take = p[:budget]
                budget -= len(take)
                if take:
                    queue.put_nowait(take)
            post_lat: list[float] = []
            sent_at: dict[str, float] = {}
            failures: list[str] = []
            types: dict[str, str] = {}
            headers = {"X-API-Key": trust_key, "Content-Type": "application/json"}

            async def post(change: dict, raw: RawClient | None = None) -> None:
                body = orjson.dumps(change)
                s = time.perf_counter()
                if raw is not None:
                    status, answer = await raw.post_json("/v1/register-changes", body)
                else:
                    resp = await http.post("/v1/register-changes", content=body, headers=headers)
                    status, answer = resp.status_code, (resp.json() if resp.status_code == 202 else resp.text)
                post_lat.append(time.perf_counter() - s)
                if status != 202:
                    failures.append(f"{status} {str(answer)[:200]}")
                    return
                for ev in answer["events"]:
                    sent_at[ev["event_id"]] = s
                    types[ev["event_id"]] = ev["event_type"]

            host, port = hub.base_url.split("//", 1)[1].rsplit(":", 1)

            async def client() -> None:
                # One kept-alive connection each; bench/rawhttp.py rather than httpx unless
                # --httpx-clients: httpx's CPU per request would take the core the hub needs.
                raw = None if args.httpx_clients else RawClient(host, int(port), headers)
                try:
                    while not queue.empty():
                        for change in queue.get_nowait():
                            await post(change, raw)
                finally:
                    if raw is not None:
                        await raw.close()

            async def paced(rate: float) -> None:
                """Open loop: change i is posted at t0 + i/rate whatever the answers so far
                (each person's changes still in order: a change waits for the one before it)."""
                work = []
                while not queue.empty():
                    work.append(queue.get_nowait())
                slots = [(p, k) for k in range(max(map(len, work), default=0)) for p in range(len(work))
                         if k < len(work[p])]
                if args.mix == "mixed":  # each person's next change a second after its last: the kinds interleaved
                    slots.sort(key=lambda pk: pk[0] + pk[1] * max(int(rate), 1))
                done = {pk: asyncio.Event() for pk in slots}
                # `clients` kept-alive connections (bench/rawhttp.py unless --httpx-clients), each
                # carrying one POST at a time: a change due when all are busy waits for one.
                pool: asyncio.Queue[RawClient | None] = asyncio.Queue()
                for _ in range(clients):
                    pool.put_nowait(None if args.httpx_clients else RawClient(host, int(port), headers))
                start = time.perf_counter()

                async def one(i: int, p: int, k: int) -> None:
                    await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                    if k:
                        await done[(p, k - 1)].wait()
                    raw = await pool.get()
                    try:
                        await post(work[p][k], raw)
                    finally:
                        pool.put_nowait(raw)
                    done[(p, k)].set()

                try:
                    await asyncio.gather(*(one(i, p, k) for i, (p, k) in enumerate(slots)))
                finally:
                    while not pool.empty():
                        raw = pool.get_nowait()
                        if raw is not None:
                            await raw.close()

            await settle(hub.proc.pid)
            idle0 = cpu_seconds(hub.proc.pid)
            await asyncio.sleep(3)  # the hub at rest: its pollers' cost, paid whatever the load
            print(f"  hub CPU at rest: {(cpu_seconds(hub.proc.pid) - idle0) / 3 * 100:.1f}% of a core",
                  file=sys.stderr)
            statements0 = await statement_counts(workdir) if args.count_statements else {}
            if args.calls:
                toggle_profiles(hub.proc.pid)  # started: from the first POST to the last arrival
            cpu0, own0 = cpu_seconds(hub.proc.pid), cpu_seconds(hub.proc.pid, children=False)
            own_kernel0 = cpu_times(hub.proc.pid, children=False)[1]
            roles0 = worker_cpu(hub.proc.pid)
            switches0 = process_switches(hub.proc.pid)
            kernel0 = cpu_times(hub.proc.pid)[1]
            servers0 = SERVERS_CPU() if SERVERS_CPU is not None else {}
            bench_cpu0 = time.process_time()  # the bench's own clients and (unless --receiver-process) receiver
            t0 = time.perf_counter()
            if args.rate:
                await paced(args.rate)
            else:
                await asyncio.gather(*(client() for _ in range(clients)))
            ingest_elapsed = time.perf_counter() - t0
            deadline = time.monotonic() + args.drain_timeout
            while not args.ingest_only and len(set(sent_at) & set(arrivals.at)) < len(sent_at) \
                    and time.monotonic() < deadline:
                # Quiet for 10 s with everything accepted: what is left is routed to no subscriber.
                if time.perf_counter() - getattr(arrivals, "last", t0) > 10:
                    break
                await asyncio.sleep(0.05)
            if not args.ingest_only:
                await asyncio.sleep(0.5)  # the other recipients' copies of the last events
            drained = time.perf_counter() - t0
            servers = {k: (v - servers0[k]) / n * 1e3 for k, v in SERVERS_CPU().items()} if SERVERS_CPU else {}
            cpu = cpu_seconds(hub.proc.pid) - cpu0
            bench_cpu = time.process_time() - bench_cpu0
            busy = max(getattr(arrivals, "last", 0.0) - t0, ingest_elapsed, 1e-9)
            print(f"  the bench's own CPU (its clients{'' if args.receiver_process else ' and receiver'}): "
                  f"{bench_cpu / n * 1e3:.1f} ms a change; hub and bench together {(cpu + bench_cpu) / busy:.2f} "
                  f"of the {os.cpu_count()} cores on average from the first POST to the last arrival "
                  f"({busy:.1f} s)", file=sys.stderr)
            kernel = cpu_times(hub.proc.pid)[1] - kernel0  # system calls: the WAL's writes and fsyncs, sockets
            print(f"  hub CPU per change: {(cpu - kernel) / n * 1e3:.2f} ms user, {kernel / n * 1e3:.2f} ms kernel "
                  f"(total {cpu / n * 1e3:.2f} ms)", file=sys.stderr)
            if roles0 or worker_cpu(hub.proc.pid):  # the front (HTTP, ingest) and the worker processes apart
                front = cpu_seconds(hub.proc.pid, children=False) - own0
                front_kernel = cpu_times(hub.proc.pid, children=False)[1] - own_kernel0
                roles = {role: (spent - roles0.get(role, 0.0)) / n * 1e3 for role, spent in worker_cpu(hub.proc.pid).items()}
                print(f"  hub CPU per change: front {front / n * 1e3:.2f} ms ({front_kernel / n * 1e3:.2f} kernel), "
                      f"worker processes "
                      f"{(cpu - front) / n * 1e3:.2f} ms ({', '.join(f'{r} {v:.2f} ms' for r, v in sorted(roles.items()))})",
                      file=sys.stderr)
            waits = {role: ((v - switches0.get(role, (0, 0))[0]) / n, (i - switches0.get(role, (0, 0))[1]) / n)
                     for role, (v, i) in process_switches(hub.proc.pid).items()}
            print("  context switches per change (voluntary: a thread waited and woke / involuntary): "
                  + ", ".join(f"{role} {v:.1f} / {i:.1f}" for role, (v, i) in waits.items()), file=sys.stderr)
            if args.calls:
                pids = toggle_profiles(hub.proc.pid)  # stopped; each writes its statistics
                print_calls(workdir, pids, len(post_lat) - len(failures))
            if args.count_statements:
                counted = await statement_counts(workdir)
                per = {k: (v - statements0.get(k, 0)) / n for k, v in counted.items()}
                if per.get("pg_round_trips"):  # asyncpg (bench/probe): round trips, every transaction begun
                    print(f"  PostgreSQL round trips per change (every hub process): {per['pg_round_trips']:.2f}, "
                          f"of them {per['pg_begins']:.2f} BEGIN, {per['pg_commits']:.2f} COMMIT, "
                          f"{per['pings']:.2f} pre-pings; {per['prepares']:.2f} statements prepared",
                          file=sys.stderr)
                else:
                    print(f"  SQL per change (every hub process): {per['statements']:.1f} statements, "
                          f"{per['write_transactions']:.2f} write transactions, {per['commits']:.2f} commits; "
                          f"{per.get('begins_refused', 0.0):.2f} BEGIN IMMEDIATE refused (another process held "
                          f"the write lock; tried again)", file=sys.stderr)
            metrics_text = (await http.get("/metrics")).text
            batch_mean = mean_batch(metrics_text)
            redone = {line.split('"')[1]: float(line.split()[-1]) for line in metrics_text.splitlines()
                      if line.startswith("s117_dispatch_batches_redone_total{")}
            if any(redone.values()):  # the dispatcher's snapshot phase given up (hub/delivery/dispatcher.py)
                print(f"  dispatcher batches done again under the lock: {redone}", file=sys.stderr)
    finally:
        if profiler is not None:
            profiler.send_signal(2)
            profiler.wait(30)
        hub.stop()
        await arrivals.stop()
    if args.rate:
        paced_floors.append(bare_paced(workdir / "bare-paced-after.db", flat, args.rate))
        for when, f in zip(("before", "after"), paced_floors):
            print(f"  bare insert at {args.rate:,.0f}/s {when} the hub's run, open loop, committing what is due: "
                  f"due -> durable p50 {fmt_ms(f['p50'])} / p99 {fmt_ms(f['p99'])} / max {fmt_ms(f['max'])}; "
                  f"{f['slow_commits']} COMMITs over 100 ms (worst {fmt_ms(f['worst_commit'])})", file=sys.stderr)
    delivered = [eid for eid in sent_at if eid in arrivals.at]
    e2e = [arrivals.at[eid] - sent_at[eid] for eid in delivered]
    if os.environ.get("BENCH_DUMP"):  # each delivered event: sent (s from the start), POST -> webhook, type
        Path(os.environ["BENCH_DUMP"]).write_bytes(orjson.dumps(
            [(sent_at[e] - t0, arrivals.at[e] - sent_at[e], types[e]) for e in delivered]))
    last_arrival = getattr(arrivals, "last", t0)
    accepted = len(post_lat) - len(failures)
    if failures:
        print(f"  {len(failures)} POSTs failed, first: {failures[0]}", file=sys.stderr)
    if len(delivered) < len(sent_at) and not args.ingest_only:
        await explain_undelivered(hub.db_url, [e for e in sent_at if e not in arrivals.at], types, args.drain_timeout)
    if args.stages and not args.ingest_only:
        print_stages(workdir / "hub.db")
    if args.commit_times:
        await asyncio.sleep(0.6)  # each process's last figures written
        print_commit_times(workdir, since=time.time() - (time.perf_counter() - t0))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "clients": clients, "batch": batch_max, "servers_ms": servers, "batch_mean": batch_mean, "changes": accepted, "accepted_s": accepted / ingest_elapsed,
        "post_p50": pct(post_lat, 50), "post_p99": pct(post_lat, 99),
        "e2e_p50": pct(e2e, 50), "e2e_p99": pct(e2e, 99),
        "messages": arrivals.messages, "delivered_s": arrivals.messages / max(last_arrival - t0, 1e-9),
        "cpu_ms": cpu / max(accepted, 1) * 1000, "drain_s": drained, "bare_s": base_rate,
        "ratio": base_rate / (accepted / ingest_elapsed), "paced_floor": max(paced_floors, key=lambda f: f["p99"]) if paced_floors else None,
    }


def toggle_profiles(front_pid: int) -> list[int]:
    """`--calls`: SIGUSR2 to the hub's processes (the front and its worker processes), which
    starts their profilers, or stops them and has each write its statistics (bench/probe/)."""
    pids = [front_pid, *child_pids(front_pid)]
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)
    return pids


def print_calls(workdir: Path, pids: list[int], changes: int) -> None:
    """`--calls`: each hub process's Python calls a change over the load (cProfile), with what
    its fixed costs are paid per: the dispatcher's batches and the deliverers' wake-ups a change.
    Run a level at two `S117_DISPATCH_LINGER_MS` to split a process's calls into a fixed part a
    batch (or wake-up) and a part a change: (calls_a - calls_b) / (batches_a - batches_b)."""
    deadline = time.monotonic() + 10
    files: dict[int, Path] = {}
    while time.monotonic() < deadline and len(files) < len(pids):
        for pid in pids:
            found = list(workdir.glob(f"calls.*.{pid}"))
            if found and pid not in files and found[0].stat().st_size:
                files[pid] = found[0]
        time.sleep(0.2)
    time.sleep(0.3)  # the last one written whole
    n = max(changes, 1)
    for pid in pids:
        path = files.get(pid)
        if path is None:
            print(f"  Python calls: no statistics from process {pid}", file=sys.stderr)
            continue
        stats = pstats.Stats(str(path))
        calls = sum(v[1] for v in stats.stats.values())  # every call, a coroutine's each resumption included
        per_fn = {(k[0].rsplit("/", 1)[-1], k[2]): v[1] for k, v in stats.stats.items()}
        role = path.name.split(".")[1]
        batches = per_fn.get(("dispatcher.py", "count_dispatched"), 0)
        wakes = per_fn.get(("leases.py", "_due_heads"), 0)
        extra = "".join([f", {n / batches:.1f} changes a dispatch batch" if batches else "",
                         f", {n / wakes:.1f} changes a deliverer's wake-up (due heads read)" if wakes else ""])
        print(f"  Python calls a change ({role}): {calls / n:,.1f}; its main thread's CPU under the profiler "
              f"{stats.total_tt / n * 1e3:.2f} ms a change{extra}", file=sys.stderr)


def print_commit_times(workdir: Path, since: float) -> None:
    """`--commit-times`: each hub process's COMMITs and WAL checkpoints since
    the level began (bench/probe/sitecustomize.py), and how many of the slow
    commits (over 100 ms) overlapped a checkpoint of any process."""
    runs = [orjson.loads(p.read_bytes()) for p in sorted(workdir.glob("commits.*")) if not p.name.endswith(".tmp")]
    checkpoints = [(end - secs, end) for r in runs for end, secs in r["checkpoint"] if end >= since]
    print("  | process | commits | COMMIT p50 / p99 / max | over 100 ms (of them during a checkpoint) |"
          " checkpoints | checkpoint p99 / max |")
    for r in runs:
        commits = [(end, secs) for end, secs in r["commit"] if end >= since]
        if not commits:
            continue
        ms = [secs * 1e3 for _, secs in commits]
        slow = [(end - secs, end) for end, secs in commits if secs > 0.1]
        during = sum(1 for a, b in slow if any(c0 < b and c1 > a for c0, c1 in checkpoints))
        own = [secs * 1e3 for end, secs in r["checkpoint"] if end >= since]
        print(f"  | {r['role']} | {len(ms):,} | {pct(ms, 50):.1f} / {pct(ms, 99):.1f} / {max(ms):,.0f} ms | "
              f"{len(slow)} ({during}) | {len(own)} | "
              + (f"{pct(own, 99):.1f} / {max(own):,.0f} ms |" if own else "- |"))


def print_stages(db_path: Path) -> None:
    """`--stages`: where a change's messages waited, per second of receipt,
    from what the hub recorded (its clock): received -> queued (the change's
    `received_at` to its deliveries' `created_at`, set when the dispatcher
    began the event's handling: the dispatcher's backlog) and queued ->
    recorded (to `delivered_at`, set when the deliverer recorded the answer,
    in the transaction after the POST: the wait for the commit, the wake, the
    claim, the POST and the record)."""
    from datetime import datetime

    def at(text: str) -> float:
        return datetime.fromisoformat(text).timestamp()

    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        received = {c: at(r) for c, r in db.execute("select correlation_id, received_at from register_changes")}
        per: dict[int, tuple[list[float], list[float]]] = {}
        t0 = min(received.values(), default=0.0)
        for corr, queued, done in db.execute(
                "select correlation_id, created_at, delivered_at from deliveries where delivered_at is not null"):
            got = received.get(corr)
            if got is None:
                continue
            waits = per.setdefault(int(got - t0), ([], []))
            waits[0].append(1000 * (at(queued) - got))
            waits[1].append(1000 * (at(done) - at(queued)))
    finally:
        db.close()
    print("  | s | messages | received -> queued p50 / p99 | queued -> recorded p50 / p99 |", file=sys.stderr)
    for sec in sorted(per):
        a, b = per[sec]
        print(f"  | {sec} | {len(a)} | {pct(a, 50):,.0f} / {pct(a, 99):,.0f} ms | {pct(b, 50):,.0f} / "
              f"{pct(b, 99):,.0f} ms |", file=sys.stderr)


async def explain_undelivered(db_url: str, missing: list[str], types: dict[str, str], waited: float) -> None:
    """Events the receiver never got, told apart by what the hub recorded: an
    event shared with no subscribed body (no `allowed` disclosure: the
    dispatcher routes on the person's status when it handles the event, so a
    first change for someone not entitled yet, handled before the change
    that makes them entitled arrived, goes to nobody) is not a loss; an
    event shared and queued that never arrived is one, and is reported loudly."""
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            shared = {r[0] for r in await conn.execute(
                select(disclosures.c.event_id).where(disclosures.c.decision == "allowed",
                                                     disclosures.c.event_id.in_(missing)))}
            waiting = dict((await conn.execute(
                select(deliveries.c.status, func.count()).where(deliveries.c.status != "delivered")
                .group_by(deliveries.c.status))).all())
    finally:
        await engine.dispose()
    nobody = [e for e in missing if e not in shared]
    if nobody:
        print(f"  {len(nobody)} events routed to no subscribed body (no allowed disclosure): "
              f"{sorted({types[e] for e in nobody})}", file=sys.stderr)
    lost = [e for e in missing if e in shared]
    if lost or waiting:
        print(f"  NOT DELIVERED: {len(lost)} events shared with a subscriber never arrived within {waited:.0f} s "
              f"({sorted({types[e] for e in lost})}); deliveries left by status: {waiting}", file=sys.stderr)


def gc_label(r: dict) -> str:
    return "off" if r["batch"] == 1 else f"on ({r['batch_mean']:.1f} changes/txn)"


def fmt_ms(s: float) -> str:
    return f"{s * 1000:,.0f} ms" if s >= 0.1 else f"{s * 1000:.1f} ms"


def hub_process_options(ap: argparse.ArgumentParser, per: str) -> None:
    """The options on how the hub runs, shared with bench_mllp.py: `per` names the unit its counts are per."""
    ap.add_argument("--count-statements", action="store_true",
                    help=f"SQL statements, write transactions and commits per {per} in every hub process "
                         "(bench/probe/): figures the host's speed does not move")
    ap.add_argument("--separate-workers", action="store_true",
                    help="the hub's background workers in a second process (S117_SEPARATE_WORKERS=true); "
                         "the CPU figures include it")
    ap.add_argument("--separate-delivery", action="store_true",
                    help="--separate-workers with the deliverers in a third process (S117_SEPARATE_DELIVERY=true)")
    ap.add_argument("--one-process", action="store_true",
                    help="the workers in the hub's one process (S117_SEPARATE_WORKERS=false, "
                         "S117_SEPARATE_DELIVERY=false); without a layout option the hub chooses as "
                         "`s117hub serve` does (three processes on two cores or more)")


def worker_poll_seconds() -> str:
    """The hub's worker poll for the bench: S117_WORKER_POLL_SECONDS if set, else the hub's default."""
    return os.environ.get("S117_WORKER_POLL_SECONDS", str(Settings.model_fields["worker_poll_seconds"].default))


def hub_process_env(args: argparse.Namespace, workdir: Path) -> dict[str, str]:
    """The hub's environment for `hub_process_options`' choices."""
    # The workers' poll as deployed, as a fresh clone runs them (tests poll every 50 ms, which costs
    # the hub CPU: each poll a read transaction, its pages read again after every other process's
    # commit); S117_WORKER_POLL_SECONDS in the bench's environment sets another.
    env: dict[str, str] = {"S117_WORKER_POLL_SECONDS": worker_poll_seconds()}
    commit_times = getattr(args, "commit_times", False)  # bench_mllp.py's options share this
    if commit_times:  # bench/probe/sitecustomize.py: each COMMIT and WAL checkpoint, timed
        env["S117_BENCH_COMMITS"] = str(workdir / "commits")
    calls = getattr(args, "calls", False)  # bench_load.py only
    if calls:  # bench/probe/sitecustomize.py: cProfile in each hub process, toggled by SIGUSR2
        env["S117_BENCH_CALLS"] = str(workdir / "calls")
    if args.count_statements or commit_times or calls:  # bench/probe/sitecustomize.py in the hub's processes
        if args.count_statements:
            env["S117_BENCH_STATEMENTS"] = str(workdir / "statements")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent / "probe"),
                                                           os.environ.get("PYTHONPATH")]))
    if args.separate_workers or args.separate_delivery:
        env["S117_SEPARATE_WORKERS"] = "true"
    if args.separate_delivery:
        env["S117_SEPARATE_DELIVERY"] = "true"
    if getattr(args, "one_process", False):
        env["S117_SEPARATE_WORKERS"] = env["S117_SEPARATE_DELIVERY"] = "false"
    return env


def hub_layout(args: argparse.Namespace) -> str:
    """The hub's processes as `hub_process_env` asks for them (else `s117hub serve`'s own choice), for a header."""
    if getattr(args, "one_process", False):
        return "one process"
    if args.separate_delivery:
        return "three processes"
    if args.separate_workers:
        return "two processes"
    settings = serving_layout(Settings(database_url="sqlite+aiosqlite:///hub.db"))  # and S117_* of this environment
    return f"{['one process', 'two processes', 'three processes'][processes(settings) - 1]} (the hub's choice)"


def parser() -> argparse.ArgumentParser:
    """The options; bench_production.py takes their defaults for its run of `run_level`."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="600 changes at 32 clients")
    ap.add_argument("--clients", type=int, nargs="*", help="concurrency levels (default 1 8 32)")
    ap.add_argument("--changes", type=int, help="changes per level (default 3000)")
    ap.add_argument("--log-level", default="INFO", help="the hub's log level (default INFO, as deployed)")
    ap.add_argument("--commit-times", action="store_true",
                    help="each hub process's SQLite COMMITs and WAL checkpoints timed (bench/probe/): p50/p99/max, "
                         "and how many slow commits overlapped a checkpoint")
    ap.add_argument("--drain-timeout", type=float, default=300.0)
    ap.add_argument("--profile", action="store_true", help="py-spy record the hub (raw stacks under the tmp dir)")
    ap.add_argument("--calls", action="store_true",
                    help="each hub process's Python calls a change over the load (cProfile, bench/probe/), with "
                         "the changes a dispatch batch and a deliverer's wake-up: figures the host's speed does "
                         "not move (the profiler slows the hub: that run's CPU figures are not comparable)")
    ap.add_argument("--ingest-only", action="store_true",
                    help="no dispatcher or delivery workers in the hub (S117_RUN_WORKERS=false): ingest alone")
    hub_process_options(ap, "change")
    ap.add_argument("--compare", action="store_true",
                    help="also run each level without group commit (S117_INGEST_BATCH_MAX=1)")
    ap.add_argument("--keep", action="store_true", help="keep the databases and logs")
    ap.add_argument("--pipeline", type=int, default=1,
                    help="the webhook subscriptions' pipeline (POSTs in flight on a connection; default 1)")
    ap.add_argument("--stages", action="store_true",
                    help="per second of receipt: received -> queued (the dispatcher) and queued -> recorded "
                         "(the deliverer) p50 / p99, from the hub's database (SQLite)")
    ap.add_argument("--fastapi-receiver", action="store_true",
                    help="the webhook receiver on uvicorn and FastAPI (runs before 2026-12-01's fifth session) "
                         "rather than bench/rawhttp.py's: a few hundred microseconds of the 2 cores a POST")
    ap.add_argument("--receiver-process", action="store_true",
                    help="the webhook receiver in a process of its own, not on the bench's loop")
    ap.add_argument("--httpx-clients", action="store_true",
                    help="post with httpx rather than bench/rawhttp.py (the clients then take far more CPU)")
    ap.add_argument("--mix", choices=("phased", "mixed"), default="phased",
                    help="with --rate, the order of the changes: 'phased' (default) every person's first change, "
                         "then every person's second... so the moves (about 8 webhook messages a change, against 2 "
                         "for a detention) all come in the last quarter; 'mixed': each person's next change a "
                         "second after its last, so detentions, discharges and moves arrive together at a steady "
                         "message rate")
    ap.add_argument("--rate", type=float,
                    help="post at a steady rate (changes/s, open loop) instead of as fast as the clients can; "
                         "--clients is then the connection pool size")
    return ap


async def main() -> None:
    args = parser().parse_args()
    levels = args.clients or ([32] if args.quick else [1, 8, 32])
    n = args.changes or (600 if args.quick else 3000)
    tmp = Path(tempfile.mkdtemp(prefix="s117-bench-load-"))
    pace = f"at a steady {args.rate:,.0f}/s ({args.mix}) " if args.rate else ""
    print(f"{n} register changes per level {pace}to a real hub process (SQLite WAL, synchronous=FULL), "
          f"a webhook subscriber for every event; {os.cpu_count()} cores; load average "
          f"{os.getloadavg()[0]:.1f} at start; S117_WORKER_POLL_SECONDS={worker_poll_seconds()}; {hub_layout(args)}; data in {tmp}")
    batches = [1, 64] if args.compare else [64]
    results = [await run_level(c, n, tmp, args, b) for c in levels for b in batches]
    print()
    print("| clients | group commit | accepted/s | POST p50 / p99 | POST -> webhook p50 / p99 | delivered/s | hub CPU/change "
          "| bare insert rows/s | hub / bare |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['clients']} | {gc_label(r)} | {r['accepted_s']:,.0f} | {fmt_ms(r['post_p50'])} / {fmt_ms(r['post_p99'])} "
              f"| {fmt_ms(r['e2e_p50'])} / {fmt_ms(r['e2e_p99'])} | {r['delivered_s']:,.0f} "
              f"| {r['cpu_ms']:.1f} ms | {r['bare_s']:,.0f} | {r['ratio']:.1f}x |")
    for r in results:
        if r["paced_floor"]:
            f = r["paced_floor"]
            print(f"(clients {r['clients']}: the bare insert at the same steady rate, due -> durable, the worse "
                  f"of before and after the hub's run: "
                  f"p50 {fmt_ms(f['p50'])} / p99 {fmt_ms(f['p99'])}; the hub's POST -> webhook p99 is "
                  f"{r['e2e_p99'] / max(f['p99'], 1e-9):.1f}x it)")
    print(f"(messages delivered: {', '.join(str(r['messages']) for r in results)}; "
          f"load average at end {os.getloadavg()[0]:.1f})")
    if args.profile:
        print(f"profiles (py-spy raw, collapsed stacks): {tmp}/profile-c*.txt")
    if not args.keep and not args.profile:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
