"""HL7 v2 ADT A01 over MLLP: messages/s with ACKs over N connections.

The hub runs as a real process (embedded: SQLite WAL, synchronous=FULL) with
its MLLP listener on; a trust's interface engines open `--connections` TCP
connections and each sends ADT^A01 (a detention under s3, each for a new
person) and waits for the ACK before the next message, as MLLP requires. The
figures: A01/s with ACK, ACK p50 / p99, hub CPU per message (from /proc), and
beside them, in the same run on the same disk, a bare SQLite insert of a
register-change-sized row per fsync'd transaction.

    .venv/bin/python bench/bench_mllp.py                 # 4,000 A01 over 8 connections
    .venv/bin/python bench/bench_mllp.py --messages 800 # quicker

The MLLP listener is one of the hub's workers, so the dispatcher runs too
(no subscriptions: each event is decided and audited, nothing is sent); its
CPU is in the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.bench_load import (CLK_TCK, bare_insert, cpu_seconds, cpu_times, hub_process_env,  # noqa: E402
                              hub_layout, hub_process_options, pct, settle, statement_counts, worker_cpu)
from hub.clients import add_client  # noqa: E402
from hub.ingest.nhs_number import nhs_number_problem  # noqa: E402
from hub.mllp import Frame, MllpFramer, frame  # noqa: E402
from hub.store.db import create_engine, create_schema  # noqa: E402
from tests.support import HubProcess, free_port  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hl7v2" / "ADT_A01_s3_detained.hl7"
FIXTURE_NHS = "9990001006"


def nhs_numbers(n: int) -> list[str]:
    out: list[str] = []
    i = 0
    while len(out) < n:
        candidate = f"99{4_000_000 + i:08d}"
        i += 1
        if nhs_number_problem(candidate) is None:
            out.append(candidate)
    return out


def a01(template: str, nhs: str, control_id: str) -> bytes:
    text = template.replace(FIXTURE_NHS, nhs)
    text = re.sub(r"^(MSH(?:\|[^|\r]*){8}\|)[^|\r]*", lambda m: m.group(1) + control_id, text, count=1)
    return frame(text)


async def engine_connection(port: int, messages: list[bytes], latencies: list[float], acks: dict[str, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framer = MllpFramer()
    pending: list[str] = []
    try:
        for m in messages:
            t0 = time.perf_counter()
            writer.write(m)
            await writer.drain()
            while not pending:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("the hub closed the connection")
                pending += [f.payload.decode() for f in framer.feed(data) if isinstance(f, Frame)]
            ack = pending.pop(0)
            latencies.append(time.perf_counter() - t0)
            code = next(s for s in ack.split("\r") if s.startswith("MSA")).split("|")[1]
            acks[code] = acks.get(code, 0) + 1
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="s117-bench-mllp-"))
    template = FIXTURE.read_bytes().decode()
    run = uuid.uuid4().hex[:6]
    numbers = nhs_numbers(args.messages)
    messages = [a01(template, nhs, f"B{run}-{i}") for i, nhs in enumerate(numbers)]
    base = bare_insert(tmp / "bare.db", [{"source_message_id": f"B{run}-{i}", "change_type": "detained",
                                          "effective_date": "2025-01-06"} for i in range(min(args.messages, 2000))])
    port = free_port()
    env = {"S117_MLLP_PORT": str(port), "S117_LOG_LEVEL": "WARNING",
           "S117_MLLP_MAX_CONNECTIONS_PER_PEER": str(max(10, args.connections + 2))}
    env.update(hub_process_env(args, tmp))  # worker processes, the statement probe
    hub = HubProcess(tmp, **env)
    engine = create_engine(hub.db_url)
    await create_schema(engine)
    await add_client(engine, "Oxford Health", "RNU", "trust", ["register:write"])
    await engine.dispose()
    await hub.start()
    try:
        for _ in range(100):  # the MLLP listener starts with the workers, just after HTTP
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        # Warm the hub (imports, caches) with a few messages of another run.
        warm = [a01(template, nhs, f"W{run}-{i}") for i, nhs in enumerate(nhs_numbers(args.messages + 20)[-20:])]
        await engine_connection(port, warm, [], {})
        await settle(hub.proc.pid)  # separate workers: the worker processes finish starting first
        profiler = None
        if args.profile:
            spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
            assert spy, "--profile needs py-spy (pip install py-spy)"
            profiler = subprocess.Popen([spy, "record", "--pid", str(hub.proc.pid), "--format", "raw", "-o",
                                         str(tmp / "profile.txt"), "--rate", os.environ.get("BENCH_SPY_RATE", "500"), "--nonblocking",
                                         "--gil" if args.profile == "gil" else "--idle"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        statements0 = await statement_counts(tmp) if args.count_statements else {}
        latencies: list[float] = []
        acks: dict[str, int] = {}
        per = [messages[i::args.connections] for i in range(args.connections)]
        load_start = os.getloadavg()[0]
        async with httpx.AsyncClient(base_url=hub.base_url) as http:
            before = (await http.get("/metrics")).text
        c0, k0 = cpu_seconds(hub.proc.pid), cpu_times(hub.proc.pid)[1]
        own0, roles0 = cpu_seconds(hub.proc.pid, children=False), worker_cpu(hub.proc.pid)
        front_k0 = cpu_times(hub.proc.pid, children=False)[1]
        threads0 = thread_cpu(hub.proc.pid)
        t0 = time.perf_counter()
        await asyncio.gather(*(engine_connection(port, m, latencies, acks) for m in per))
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(hub.proc.pid) - c0
        kernel = cpu_times(hub.proc.pid)[1] - k0
        front = cpu_seconds(hub.proc.pid, children=False) - own0
        front_kernel = cpu_times(hub.proc.pid, children=False)[1] - front_k0
        threads = {name: spent - threads0.get(name, 0.0) for name, spent in thread_cpu(hub.proc.pid).items()}
        roles = {role: spent - roles0.get(role, 0.0) for role, spent in worker_cpu(hub.proc.pid).items()}
        async with httpx.AsyncClient(base_url=hub.base_url) as http:
            after = (await http.get("/metrics")).text
        batch = _batch_delta(before, after)
        counted = await statement_counts(tmp) if args.count_statements else {}
        if profiler is not None:
            profiler.send_signal(2)
            profiler.wait(30)
            print(f"profile (py-spy raw, collapsed stacks): {tmp / 'profile.txt'}")
    finally:
        hub.stop()
    n = len(latencies)
    rate = n / elapsed
    print(f"{n} ADT^A01 over {args.connections} MLLP connections to a real hub process (SQLite WAL, "
          f"synchronous=FULL; dispatcher on, no subscribers); {os.cpu_count()} cores; "
          f"load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
          f"S117_INGEST_BATCH_WAIT_MS={os.environ.get('S117_INGEST_BATCH_WAIT_MS', 'default')}, "
          f"S117_WORKER_POLL_SECONDS={env['S117_WORKER_POLL_SECONDS']}"
          + f"; {hub_layout(args)}")
    print()
    print("| connections | A01/s with ACK | ACK p50 / p99 | ACK codes | hub CPU/message | changes/txn "
          "| bare insert rows/s | hub / bare |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.connections} | {rate:,.0f} | {pct(latencies, 50) * 1000:,.1f} ms / {pct(latencies, 99) * 1000:,.1f} ms"
          f" | {', '.join(f'{k} {v}' for k, v in sorted(acks.items()))} | {cpu / n * 1000:.2f} ms | {batch:.1f} | {base:,.0f} | "
          f"{base / rate:.1f}x |")
    print(f"hub CPU per message: {(cpu - kernel) / n * 1e3:.2f} ms user, {kernel / n * 1e3:.2f} ms kernel; "
          f"front {front / n * 1e3:.2f} ms ({front_kernel / n * 1e3:.2f} kernel)"
          + "".join(f", {r} {v / n * 1e3:.2f} ms" for r, v in sorted(roles.items())))
    print("front by thread (ms a message): " + ", ".join(
        f"{name} {v / n * 1e3:.3f}" for name, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v / n >= 5e-6))
    if counted:
        per = {k: (v - statements0.get(k, 0)) / n for k, v in counted.items()}
        print(f"SQL per message (every hub process): {per['statements']:.1f} statements, "
              f"{per['write_transactions']:.2f} write transactions, {per['commits']:.2f} commits")
    assert acks.get("AA", 0) == n, f"not every message was accepted: {acks}"


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + kernel) of the process's main thread (the event loop) and of its other
    threads together (the WAL checkpointer, aiosqlite's, the default executor's)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        key = "loop" if task.name == str(pid) else "other threads"
        out[key] = out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def _batch_delta(before: str, after: str) -> float:
    """Mean changes per group-commit transaction between two /metrics texts."""
    def totals(text: str) -> tuple[float, float]:
        values = {}
        for line in text.splitlines():
            for name in ("s117_ingest_batch_changes_sum", "s117_ingest_batch_changes_count"):
                if line.startswith(name + " "):
                    values[name] = float(line.split()[1])
        return values.get("s117_ingest_batch_changes_sum", 0.0), values.get("s117_ingest_batch_changes_count", 0.0)
    (s0, c0), (s1, c1) = totals(before), totals(after)
    return (s1 - s0) / max(c1 - c0, 1)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--connections", type=int, default=8)
    hub_process_options(ap, "message")
    ap.add_argument("--profile", nargs="?", const="gil", choices=("gil", "wall"),
                    help="py-spy record the hub (pip install py-spy): samples holding the GIL (the CPU each "
                         "function costs), or 'wall': every thread, idle ones too (where messages wait)")
    asyncio.run(main(ap.parse_args()))
