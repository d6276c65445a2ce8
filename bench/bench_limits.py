"""Unauthenticated floods against a real hub process (issue #6, item 4).

Starts `s117hub serve` (embedded mode, MLLP on) with a soft file-descriptor
limit of 1024, as on the machine where the probes ran, and measures against
baselines taken in the same run:

1. RSS of the hub process idle, then its peak while 20 clients each POST a
   100 MB body with no API key, at once, to /v1/persons/lookup and
   /v1/subscriptions: half declare Content-Length, half send it chunked
   with no length. Before the limits this took the RSS from 115 to 429 MiB.
2. /health/ready latency idle, then while 2,000 idle MLLP connections are
   attempted (before the caps, 1,100 used up the descriptors and readiness
   and every POST failed). Also: how many MLLP connections the hub held.

    .venv/bin/python bench/bench_limits.py [uploads] [mllp_connections]

Prints figures and ratios; exits 1 if the RSS grew by more than 50 MiB or a
readiness probe failed during the flood.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
BODY_BYTES = 100 * MB
CHUNK = 256 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _low_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))


async def upload(port: int, path: str, chunked: bool) -> str:
    """POST 100 MB with no API key; returns the status line (or how it ended)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {path} HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {BODY_BYTES}\r\n\r\n"
    writer.write(head.encode())
    block = b"x" * CHUNK
    if chunked:
        block = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    sent = 0
    answer = asyncio.create_task(reader.readline())
    try:
        while sent < BODY_BYTES and not answer.done():
            writer.write(block)
            await writer.drain()
            sent += CHUNK
        if chunked and sent >= BODY_BYTES:
            writer.write(b"0\r\n\r\n")
        await asyncio.wait_for(asyncio.shield(answer), 60)
    except (ConnectionError, TimeoutError):
        pass  # the hub closed while we were still sending: expected once it has answered
    finally:
        writer.close()
    try:
        status = (await asyncio.wait_for(answer, 5)).decode().strip() or "closed without an answer"
    except (ConnectionError, TimeoutError) as exc:
        # The hub closed with our unsent megabytes still arriving: the kernel
        # resets the connection and may discard the 413 it had sent.
        status = f"connection closed by the hub ({type(exc).__name__})"
    return f"{status}, after {sent // MB} MB sent"


async def sample_rss(pid: int, stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        out.append(rss_mib(pid))
        await asyncio.sleep(0.05)


async def ready_latencies(base: str, seconds: float) -> tuple[list[float], int]:
    out, failures = [], 0
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                r = await http.get(base + "/health/ready")
                if r.status_code == 200:
                    out.append((time.perf_counter() - started) * 1000)
                else:
                    failures += 1
            except httpx.HTTPError:
                failures += 1
            await asyncio.sleep(0.05)
    return out, failures


async def idle_mllp(port: int, count: int, hold: float) -> tuple[int, int]:
    """Open `count` connections and keep them idle; (opened, closed by the hub within `hold` s)."""
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(count):
        try:
            conns.append(await asyncio.open_connection("127.0.0.1", port))
        except OSError:
            break

    async def closed(reader: asyncio.StreamReader) -> bool:
        try:
            return await asyncio.wait_for(reader.read(1), hold) == b""
        except (TimeoutError, ConnectionError):
            return False

    results = await asyncio.gather(*(closed(r) for r, _ in conns))
    for _, w in conns:
        w.close()
    return len(conns), sum(results)


async def main(uploads: int = 20, mllp_count: int = 2000) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, mllp_count + 512)), hard))
    tmp = Path(tempfile.mkdtemp(prefix="bench-limits-"))
    port, mllp_port = free_port(), free_port()
    env = {**os.environ, "S117_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'hub.db'}",
           "S117_DATA_KEY_FILE": str(tmp / "data.key"), "S117_PORT": str(port), "S117_MLLP_PORT": str(mllp_port),
           "S117_REVIEW_SCAN_INTERVAL_SECONDS": "0", "S117_LOG_LEVEL": "WARNING"}
    log = open(tmp / "hub.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "serve"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=_low_fd_limit)
    base = f"http://127.0.0.1:{port}"
    ok = True
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                try:
                    if (await http.get(base + "/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        print(f"hub pid {proc.pid}, file descriptor limit 1024, MLLP on {mllp_port}")

        # 1. RSS under unauthenticated 100 MB uploads
        idle = [rss_mib(proc.pid) for _ in range(5) if not time.sleep(0.05)]
        baseline = statistics.median(idle)
        samples: list[float] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(proc.pid, stop, samples))
        started = time.perf_counter()
        paths = ["/v1/persons/lookup", "/v1/subscriptions"]
        answers = await asyncio.gather(*(upload(port, paths[i % 2], chunked=i % 4 >= 2) for i in range(uploads)))
        took = time.perf_counter() - started
        stop.set()
        await sampler
        peak = max(samples + [baseline])
        print(f"\n{uploads} concurrent unauthenticated 100 MB uploads ({uploads * 100} MB offered) in {took:.2f} s")
        for answer in sorted(set(answers)):
            print(f"  {answers.count(answer):>3} x {answer}")
        print(f"  RSS idle {baseline:.1f} MiB, peak {peak:.1f} MiB: +{peak - baseline:.1f} MiB, "
              f"ratio {peak / baseline:.2f}x (before the limits: 115 -> 429 MiB, 3.7x)")
        if peak - baseline > 50:
            ok = False

        # 2. readiness while 2,000 idle MLLP connections are attempted
        idle_ready, idle_fail = await ready_latencies(base, 2.0)
        fd_samples: list[float] = []
        fd_stop = asyncio.Event()

        async def sample_fds() -> None:
            while not fd_stop.is_set():
                fd_samples.append(open_fds(proc.pid))
                await asyncio.sleep(0.02)

        fd_sampler = asyncio.create_task(sample_fds())
        flood = asyncio.create_task(idle_mllp(mllp_port, mllp_count, hold=3.0))
        busy_ready, busy_fail = await ready_latencies(base, 2.5)
        opened, closed = await flood
        fd_stop.set()
        await fd_sampler
        fds_during = int(max(fd_samples))
        async with httpx.AsyncClient() as http:
            after = (await http.get(base + "/health/ready")).status_code
        print(f"\n{mllp_count} idle MLLP connections attempted: {opened} opened by the client, {closed} closed by "
              f"the hub within 3 s (over the cap: 10 per peer address, 200 in all), most file descriptors the hub held: "
              f"{fds_during}")
        med_idle = statistics.median(idle_ready) if idle_ready else float("nan")
        med_busy = statistics.median(busy_ready) if busy_ready else float("nan")
        print(f"  /health/ready idle: {len(idle_ready)} ok, {idle_fail} failed, median {med_idle:.1f} ms")
        print(f"  /health/ready during the flood: {len(busy_ready)} ok, {busy_fail} failed, median {med_busy:.1f} ms "
              f"(ratio {med_busy / med_idle:.2f}x); after: {after}")
        if busy_fail or idle_fail or after != 200 or not busy_ready:
            ok = False
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    print("\nOK" if ok else "\nFAILED (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    sys.exit(asyncio.run(main(*args)))
