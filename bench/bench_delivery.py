"""Webhook delivery with slow subscribers: does one endpoint hold up the others?

50 webhook subscriptions, each with its own local HTTP receiver (a child
process serving 50 loopback ports; each answers 204 at once, except where a
run makes one answer after 5 s and one never answer within the hub's 2 s
attempt deadline). Messages are queued for every subscription at a steady
rate through hub.delivery.queue (the same path the dispatcher takes), and the
hub's WebhookDeliverer runs as in a served hub (`serve`: one task per
subscription). Delivery latency = receiver's arrival time - time queued.

    fast         all 50 answer at once                     (the baseline)
    slow+hung    one answers in 5 s, one times out         (the others' p99 must stay within 2x)
    lockstep     slow+hung with the old loop of awaited rounds (run_once), fewer rounds

    .venv/bin/python bench/bench_delivery.py [rounds]     (default 6 rounds of 50 messages)

Throughput (`--throughput [N]`): N messages (default 4,000) queued up front
for 4 of the fast receivers, then drained by `serve`: deliveries/s and the
hub side's CPU per delivery, with batches of 100 leased and recorded per
transaction, beside one per transaction (`claim_max=1`, as before batching)
in the same run, and with batches of 100 pipelined (the subscriptions'
`pipeline` 8: eight POSTs written at once on a connection).

    .venv/bin/python bench/bench_delivery.py --throughput 4000

Bursts (`--bursts [N]`): the deliverer as the separate delivery process
runs it, woken by another process that queues a change (a message for 3 of
8 subscriptions) every 5 ms: its CPU per delivery, the two processes taking
turns at SQLite's write lock (the hub's log lines go to stdout, as JSON).

    .venv/bin/python bench/bench_delivery.py --bursts 2000 > /dev/null

The delivery process at one client of bench_load.py (a dispatch batch of
about ten changes, each a message for the four subscriptions, pipelined 8),
and its Python calls a delivery under cProfile (`--calls`, to stderr):

    .venv/bin/python bench/bench_delivery.py --bursts 2000 --subscribers 4 --fan 4 --per-burst 10 \
        --gap 0.06 --pipeline 8 [--calls] > /dev/null

The deliverer runs on uvloop where it is installed (as the delivery process
does), its delivered are counted in-process (`_outcome`), and it prints the
ledger transactions it made.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.fernet import Fernet

SUBSCRIBERS = 50
SLOW, HUNG = 0, 1  # subscriber indexes in the slow+hung runs
SLOW_SECONDS, HUNG_SECONDS, DEADLINE = 5.0, 60.0, 2.0


# --- the receivers' process --------------------------------------------------

async def _serve_receivers(delays: list[float]) -> None:
    """One tiny HTTP/1.1 server per port (keep-alive, Content-Length bodies):
    prints its ports, then on stdin EOF prints `delivery_id arrival` lines."""
    from tests.support import read_http_request

    arrivals: list[tuple[int, str, float]] = []

    def handler(index: int, delay: float):  # noqa: ANN202
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    headers, _ = await read_http_request(reader)
                    arrived = time.time()
                    if delay:
                        await asyncio.sleep(delay)
                    arrivals.append((index, headers.get("s117-event-number", "?"), arrived))
                    writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
                pass
            finally:
                writer.close()
        return handle

    servers = [await asyncio.start_server(handler(i, d), "127.0.0.1", 0) for i, d in enumerate(delays)]
    print(" ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for index, number, at in arrivals:
        print(index, number, at)
    sys.stdout.flush()


# --- the hub side -------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] if len(values) > 1 else values[0]


async def run(name: str, delays: list[float], rounds: int, lockstep: bool = False) -> dict:
    from hub.crypto import DataProtector
    from hub.delivery.queue import create_counter, queue_delivery
    from hub.delivery.webhook import HostClients, WebhookDeliverer
    from hub.store.db import create_engine, create_schema
    from hub.store.schema import subscriptions

    child = subprocess.Popen([sys.executable, __file__, "--receivers", *map(str, delays)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ports = [int(p) for p in child.stdout.readline().split()]
    tmp = Path(tempfile.mkdtemp())
    engine = create_engine(f"sqlite+aiosqlite:///{tmp / 'hub.db'}")
    await create_schema(engine)
    protector = DataProtector(Fernet.generate_key())
    secret = protector.encrypt(b"s" * 32)
    subs = [str(uuid.uuid4()) for _ in ports]
    async with engine.begin() as conn:
        for sid, port in zip(subs, ports, strict=True):
            await conn.execute(subscriptions.insert().values(
                subscription_id=sid, org_code="E06000060", client_id="bench", channel="webhook",
                url=f"http://127.0.0.1:{port}/hook", secret=secret, active=True, created_at=datetime.now(UTC)))
            await create_counter(conn, sid)
    body = orjson.dumps({"resourceType": "Bundle", "type": "message", "entry": [{"pad": "x" * 3000}]})
    clients = HostClients(DEADLINE, allowed_hosts=["127.0.0.1"])  # the receivers are on loopback
    deliverer = WebhookDeliverer(engine, protector, clients, 1.0, 300.0, 0, DEADLINE + 5.0,
                                 timeout_seconds=DEADLINE)
    queued: dict[tuple[int, int], float] = {}  # (subscriber, event number) -> time queued
    stop = asyncio.Event()
    if lockstep:
        async def loop() -> None:  # the delivery loop before per-subscription tasks
            while not stop.is_set():
                if not await deliverer.run_once():
                    await asyncio.sleep(0.2)
        worker = asyncio.create_task(loop())
    else:
        worker = asyncio.create_task(deliverer.serve(0.2, stop))
    normal = [i for i, d in enumerate(delays) if not d]
    started = time.monotonic()
    # A steady flow: every 0.5 s, one message for each of 5 subscribers in turn
    # (10 messages/s, each subscriber one every 5 s): well below what SQLite
    # with synchronous=FULL commits on a shared core (two commits a delivery),
    # so the figures measure waiting on other subscribers, not on the disk.
    for r in range(rounds):
        for k in range(0, len(subs), 5):
            async with engine.begin() as conn:
                numbers = []
                for i in range(k, min(k + 5, len(subs))):
                    eid = str(uuid.uuid4())
                    numbers.append((i, await queue_delivery(
                        conn, subscription_id=subs[i], event_id=eid, message_id=eid,
                        event_type="s117-entitlement-started", payload=protector.encrypt(body),
                        correlation_id="bench")))
            now = time.time()
            for i, n in numbers:
                queued[(i, n)] = now
            await asyncio.sleep(0.5)
    # Wait until the normal subscribers have everything (or give up after 60 s).
    from sqlalchemy import func, select

    from hub.store.schema import deliveries
    expected = rounds * len(normal)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            done = (await conn.execute(select(func.count()).select_from(deliveries).where(
                deliveries.c.status == "delivered",
                deliveries.c.subscription_id.in_([subs[i] for i in normal])))).scalar_one()
        if done >= expected:
            break
        await asyncio.sleep(0.1)
    elapsed = time.monotonic() - started
    stop.set()
    deliverer.stop_grace_seconds = 0.1
    await worker
    await clients.aclose()
    await engine.dispose()
    out, _ = child.communicate("")
    latencies = []
    for line in out.splitlines():
        index, number, at = line.split()
        key = (int(index), int(number))
        if key in queued and key[0] in normal:
            latencies.append(float(at) - queued[key])
    return {"name": name, "delivered": len(latencies), "expected": expected, "elapsed": elapsed,
            "p50": pct(latencies, 50) if latencies else float("nan"),
            "p99": pct(latencies, 99) if latencies else float("nan")}


@dataclass
class _Bench:
    """Fast local receivers (a child process) and a SQLite register with a webhook subscription for each."""
    child: subprocess.Popen
    db: Path
    engine: Any
    key: bytes
    protector: Any
    subs: list[str]

    @property
    def url(self) -> str:
        return f"sqlite+aiosqlite:///{self.db}"


async def _fast_subscribers(subscribers: int, pipeline: int = 1) -> _Bench:
    from hub.crypto import DataProtector
    from hub.delivery.queue import create_counter
    from hub.store.db import create_engine, create_schema
    from hub.store.schema import subscriptions

    child = subprocess.Popen([sys.executable, __file__, "--receivers", *(["0"] * subscribers)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ports = [int(p) for p in child.stdout.readline().split()]
    db = Path(tempfile.mkdtemp()) / "hub.db"
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    await create_schema(engine)
    key = Fernet.generate_key()
    protector = DataProtector(key)
    secret = protector.encrypt(b"s" * 32)
    subs = [str(uuid.uuid4()) for _ in ports]
    async with engine.begin() as conn:
        for sid, port in zip(subs, ports, strict=True):
            await conn.execute(subscriptions.insert().values(
                subscription_id=sid, org_code="E06000060", client_id="bench", channel="webhook",
                url=f"http://127.0.0.1:{port}/hook", secret=secret, active=True, created_at=datetime.now(UTC),
                pipeline=pipeline))
            await create_counter(conn, sid)
    return _Bench(child, db, engine, key, protector, subs)


async def _until_delivered(engine: Any, subs: list[str], total: int, t0: float, most: float = 300.0) -> int:
    """Polls until `total` deliveries are recorded delivered (or `most` seconds from `t0`); how many were.
    Counted in `ix_deliveries_pending` (subscription, status) alone: a count
    that read the table's rows would cost the bench's own CPU according to
    the rows' layout (with the message in `deliveries` each row's status
    sat behind it on an overflow page), not the deliverer's."""
    from sqlalchemy import func, select

    from hub.store.schema import deliveries

    while True:
        async with engine.connect() as conn:
            done = (await conn.execute(select(func.count()).select_from(deliveries).where(
                deliveries.c.subscription_id.in_(subs), deliveries.c.status == "delivered"))).scalar_one()
            await conn.rollback()
        if done >= total or time.monotonic() - t0 > most:
            return done
        await asyncio.sleep(0.05)


async def throughput(total: int, claim_max: int, subscribers: int = 4, pipeline: int = 1) -> dict:
    """Drain `total` queued messages over `subscribers` fast receivers; deliveries/s and CPU per delivery
    (`pipeline`: the subscriptions' POSTs in flight on a connection)."""
    from hub.delivery.queue import queue_delivery
    from hub.delivery.webhook import HostClients, WebhookDeliverer

    b = await _fast_subscribers(subscribers, pipeline)
    body = b.protector.encrypt(orjson.dumps({"resourceType": "Bundle", "type": "message",
                                             "entry": [{"pad": "x" * 3000}]}))
    async with b.engine.begin() as conn:
        for i in range(total):
            eid = str(uuid.uuid4())
            await queue_delivery(conn, subscription_id=b.subs[i % len(b.subs)], event_id=eid, message_id=eid,
                                 event_type="s117-entitlement-started", payload=body, correlation_id="bench")
    clients = HostClients(DEADLINE, allowed_hosts=["127.0.0.1"])
    deliverer = WebhookDeliverer(b.engine, b.protector, clients, 1.0, 300.0, 0, DEADLINE + 5.0,
                                 timeout_seconds=DEADLINE, claim_max=claim_max)
    stop = asyncio.Event()
    cpu0, t0 = time.process_time(), time.monotonic()
    worker = asyncio.create_task(deliverer.serve(0.05, stop))
    done = await _until_delivered(b.engine, b.subs, total, t0)
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    stop.set()
    await worker
    await clients.aclose()
    await b.engine.dispose()
    out, _ = b.child.communicate("")
    got: dict[int, list[int]] = {}
    for line in out.splitlines():
        index, number, _at = line.split()
        got.setdefault(int(index), []).append(int(number))
    in_order = all(v == sorted(v) and len(set(v)) == len(v) for v in got.values())
    return {"claim_max": claim_max, "pipeline": pipeline, "delivered": done, "arrived": sum(map(len, got.values())),
            "per_s": done / elapsed, "cpu_ms": cpu / max(done, 1) * 1000, "in_order": in_order}


async def _produce(db: str, key: str, subs: list[str], changes: int, fan: int, gap: float,
                   per_burst: int = 1) -> None:
    """The bursts' producer (a process of its own, as the dispatcher's is with
    separate delivery): every `gap` seconds `per_burst` changes, each queued for
    `fan` of the subscriptions, in one transaction on the store's inline writer
    through `insert_deliveries` (as the dispatcher queues them), then the
    wake-up datagram. (Before the nineteenth session each delivery was queued
    by `queue_delivery` on aiosqlite: a slower producer, holding the write lock
    longer.)"""
    from hub.crypto import DataProtector
    from hub.delivery.queue import delivery_row, insert_deliveries
    from hub.delivery.wake import WakeSender, wake_address
    from hub.store.db import create_engine, write_transaction

    url = f"sqlite+aiosqlite:///{db}"
    engine = create_engine(url)
    protector = DataProtector(key.encode())
    body = protector.encrypt(orjson.dumps({"resourceType": "Bundle", "type": "message",
                                           "entry": [{"pad": "x" * 3000}]}))
    sender = WakeSender(wake_address(url))
    numbers = dict.fromkeys(subs, 0)  # each subscription's event numbers (this process queues all of them)
    due = time.monotonic()
    for first in range(0, changes, per_burst):
        rows = []
        now = datetime.now(UTC)
        for c in range(first, min(first + per_burst, changes)):
            for j in range(fan):
                sid, eid = subs[(c + j) % len(subs)], str(uuid.uuid4())
                numbers[sid] += 1
                rows.append(delivery_row(subscription_id=sid, event_id=eid, message_id=eid,
                                         event_type="s117-entitlement-started", payload=body,
                                         correlation_id="bench", event_number=numbers[sid], now=now))
        async with write_transaction(engine) as conn:
            await insert_deliveries(conn, rows)
        sender.send("webhook")
        due += gap
        await asyncio.sleep(max(0.0, due - time.monotonic()))
    sender.close()
    await engine.dispose()


async def bursts(changes: int, subscribers: int = 8, fan: int = 3, gap: float = 0.005, *, per_burst: int = 1,
                 pipeline: int = 1, calls: bool = False) -> dict:
    """The deliverer at small bursts, in the delivery process's place: another
    process queues `per_burst` changes, each for `fan` of `subscribers`, every
    `gap` seconds and wakes it (hub.delivery.wake); CPU per delivery of this
    process alone. Its writes and the producer's take turns at SQLite's write
    lock, as the deliver and back processes' do. `pipeline`: the
    subscriptions' POSTs in flight on a connection; `calls`: this process's
    Python calls under cProfile (a figure the host's speed does not move)."""
    from hub.delivery.wake import listen, wake_address
    from hub.delivery.webhook import HostClients, WebhookDeliverer

    b = await _fast_subscribers(subscribers, pipeline)
    clients = HostClients(DEADLINE, allowed_hosts=["127.0.0.1"])
    total = changes * fan
    all_in = asyncio.Event()

    class Counted(WebhookDeliverer):
        """Counts the outcomes recorded delivered, so that the bench's own CPU
        is not a poll of the store (it had been: about a tenth of the figure)."""
        delivered = 0

        def _outcome(self, row: Any, error: str | None, wait: float | None) -> None:
            super()._outcome(row, error, wait)
            if error is None:
                self.delivered += 1
                if self.delivered >= total:
                    all_in.set()

    deliverer = Counted(b.engine, b.protector, clients, 1.0, 300.0, 0, DEADLINE + 5.0, timeout_seconds=DEADLINE)
    stop = asyncio.Event()
    transport = await listen(wake_address(b.url), {"webhook": deliverer.wake})
    worker = asyncio.create_task(deliverer.serve(0.2, stop))
    await asyncio.sleep(0.3)
    producer = subprocess.Popen([sys.executable, __file__, "--produce", str(b.db), b.key.decode(), str(changes),
                                 str(fan), str(gap), str(per_burst), *b.subs])
    profile = None
    if calls:
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    cpu0, t0 = time.process_time(), time.monotonic()
    try:
        await asyncio.wait_for(all_in.wait(), 300.0)
    except TimeoutError:
        pass
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    done = deliverer.delivered
    if profile is not None:
        profile.disable()
    producer.wait()
    stop.set()
    await worker
    if transport is not None:
        transport.close()
    await clients.aclose()
    await b.engine.dispose()
    b.child.communicate("")
    from hub.delivery.ledger import ledger_for

    transactions = ledger_for(b.engine).transactions
    return {"delivered": done, "elapsed": elapsed, "cpu_ms": cpu / max(done, 1) * 1000, "profile": profile,
            "transactions": transactions}


def show_throughput(r: dict) -> None:
    print(f"claim_max {r['claim_max']:>3}, pipeline {r['pipeline']}: {r['delivered']:>5} delivered ({r['arrived']} arrivals, "
          f"{'in order' if r['in_order'] else 'OUT OF ORDER'}) at {r['per_s']:7,.0f}/s, "
          f"hub CPU {r['cpu_ms']:.3f} ms per delivery")


def show(r: dict) -> None:
    print(f"{r['name']:<11} others delivered {r['delivered']:>4}/{r['expected']:<4} in {r['elapsed']:5.1f}s   "
          f"p50 {r['p50'] * 1000:7.0f} ms   p99 {r['p99'] * 1000:7.0f} ms")


async def main(rounds: int) -> None:
    from hub.observability.logging import configure_logging

    configure_logging("ERROR")
    fast = [0.0] * SUBSCRIBERS
    slow = list(fast)
    slow[SLOW], slow[HUNG] = SLOW_SECONDS, HUNG_SECONDS
    print(f"{SUBSCRIBERS} webhook subscribers on local HTTP receivers, {rounds} messages each, "
          f"attempt deadline {DEADLINE:.0f}s; slow+hung: #{SLOW} answers in {SLOW_SECONDS:.0f}s, "
          f"#{HUNG} never in time")
    base = await run("fast", fast, rounds)
    show(base)
    hit = await run("slow+hung", slow, rounds)
    show(hit)
    lock = await run("lockstep", slow, 1, lockstep=True)
    show(lock)
    ratio = hit["p99"] / base["p99"]
    print(f"others' p99 with a slow and a hung subscriber / all fast: {ratio:.2f}x "
          f"({'within' if ratio <= 2 else 'NOT within'} 2x); "
          f"lockstep rounds (before): p50 {lock['p50'] / base['p50']:.0f}x, p99 {lock['p99'] / base['p99']:.0f}x")


async def throughput_main(total: int) -> None:
    from hub.observability.logging import configure_logging

    configure_logging("ERROR")
    print(f"{total} webhook messages queued for 4 fast local receivers (SQLite WAL, synchronous=FULL), "
          f"drained by WebhookDeliverer.serve; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    one = await throughput(total, 1)
    show_throughput(one)
    batched = await throughput(total, 100)
    show_throughput(batched)
    print(f"batches of 100 / one per transaction: {batched['per_s'] / one['per_s']:.1f}x deliveries/s, "
          f"CPU per delivery {batched['cpu_ms'] / one['cpu_ms']:.2f}x")
    piped = await throughput(total, 100, pipeline=8)
    show_throughput(piped)
    print(f"pipelined (8 POSTs in flight) / one at a time, batches of 100: {piped['per_s'] / batched['per_s']:.1f}x "
          f"deliveries/s, CPU per delivery {piped['cpu_ms'] / batched['cpu_ms']:.2f}x")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--receivers":  # the child process serving the receivers
        sys.path.insert(0, os.fspath(Path(__file__).resolve().parent.parent))
        asyncio.run(_serve_receivers([float(d) for d in sys.argv[2:]]))
        sys.exit()
    if len(sys.argv) > 1 and sys.argv[1] == "--produce":  # the bursts' producer process
        sys.path.insert(0, os.fspath(Path(__file__).resolve().parent.parent))
        db_, key_, n_, fan_, gap_, per_, *subs_ = sys.argv[2:]
        asyncio.run(_produce(db_, key_, subs_, int(n_), int(fan_), float(gap_), int(per_)))
        sys.exit()
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("rounds", nargs="?", type=int, default=6, help="messages per subscriber (default 6)")
    ap.add_argument("--throughput", nargs="?", type=int, const=4000, metavar="N",
                    help="N messages for 4 fast receivers: deliveries/s and CPU per delivery (default 4,000)")
    ap.add_argument("--bursts", nargs="?", type=int, const=2000, metavar="N",
                    help="N changes, each a message for 3 of 8 subscriptions, queued every 5 ms by another "
                         "process that wakes the deliverer: its CPU per delivery (default 2,000)")
    ap.add_argument("--subscribers", type=int, default=8, help="--bursts: subscriptions (default 8)")
    ap.add_argument("--fan", type=int, default=3, help="--bursts: subscriptions a change is queued for (default 3)")
    ap.add_argument("--per-burst", type=int, default=1, help="--bursts: changes a burst (default 1)")
    ap.add_argument("--gap", type=float, default=0.005, help="--bursts: seconds between bursts (default 0.005)")
    ap.add_argument("--pipeline", type=int, default=1, help="--bursts: the subscriptions' pipeline (default 1)")
    ap.add_argument("--calls", action="store_true",
                    help="--bursts: the deliverer's Python calls a delivery under cProfile and the top functions "
                         "(to stderr)")
    args = ap.parse_args()
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parent.parent))
    if args.bursts is not None:
        from hub.observability.logging import configure_logging

        configure_logging("INFO")  # as the delivery process logs (JSON lines to stdout)
        from hub.cli import run_loop

        # On uvloop where installed, as the delivery process runs (hub.cli.run_loop).
        r = run_loop(bursts(args.bursts, args.subscribers, args.fan, args.gap, per_burst=args.per_burst,
                               pipeline=args.pipeline, calls=args.calls))
        print(f"bursts: {r['delivered']} delivered in {r['elapsed']:.1f} s, deliverer CPU "
              f"{r['cpu_ms']:.3f} ms per delivery, {r['transactions']} ledger transactions; "
              f"load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
        if r["profile"] is not None:
            import pstats

            stats = pstats.Stats(r["profile"], stream=sys.stderr)
            print(f"Python calls a delivery: {stats.total_calls / max(r['delivered'], 1):.1f}", file=sys.stderr)
            stats.sort_stats(os.environ.get("BENCH_CALLS_SORT", "tottime")).print_stats(int(os.environ.get("BENCH_CALLS_TOP", "25")))
    elif args.throughput is not None:
        asyncio.run(throughput_main(args.throughput))
    else:
        asyncio.run(main(args.rounds))
