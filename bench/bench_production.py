"""Production mode: PostgreSQL + Kafka, the servers the test suite starts.

Two measurements, each beside its baseline in the same run:

1. **Relay against a raw producer.** An outbox of real events (register
   changes recorded in-process by `IngestService` on PostgreSQL) is relayed
   to Kafka by `KafkaRelay` (hub/bus/kafka.py: in order per person, each
   row marked relayed); the baseline sends the same bytes (value, key,
   headers) with a bare `aiokafka` producer, `acks=all`, idempotent, every
   send in flight at once. Messages/s, MB/s and relay / raw.
2. **The hub as a process** (`S117_DATABASE_URL` on PostgreSQL,
   `S117_BUS_URL=kafka://...`): the same load as bench_load.py (N clients
   POSTing register changes, a webhook subscriber for every recipient):
   accepted/s, POST p50 / p99, POST -> webhook p50 / p99, hub CPU per change.

    .venv/bin/python bench/bench_production.py            # 2,000 changes, 32 clients
    .venv/bin/python bench/bench_production.py --changes 600
PostgreSQL comes from Debian's packages and Kafka from the jars in
S117_KAFKA_LIBS (or Maven Central), exactly as `make test` starts them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

import bench.bench_load as load  # noqa: E402
from hub.agreements_loader import load_agreements  # noqa: E402
from hub.bus.kafka import KafkaRelay, _headers, ensure_topic  # noqa: E402
from hub.bus.port import EVENTS_TOPIC  # noqa: E402
from hub.crypto import DataProtector  # noqa: E402
from hub.ingest.service import Client, IngestService  # noqa: E402
from hub.observability.logging import configure_logging  # noqa: E402
from hub.refdata.loader import load_reference_data  # noqa: E402
from hub.sample_data import detention_to_move_scenario  # noqa: E402
from hub.settings import REPO_ROOT  # noqa: E402
from hub.store.db import create_engine, create_schema  # noqa: E402
from hub.store.schema import bus_messages  # noqa: E402
from tests.servers.kafka import KafkaBroker, fetch_jars  # noqa: E402
from tests.servers.postgres import PostgresServer, create_database, ensure_binaries  # noqa: E402
from tests.support import HubProcess  # noqa: E402


async def relay_against_raw(admin_url: str, bootstrap: str, changes: int, tmp: Path) -> dict:
    db_url = await create_database(admin_url, "s117_bench_relay")
    engine = create_engine(db_url)
    await create_schema(engine)
    service = IngestService(engine, load_reference_data(),
                            load_agreements(REPO_ROOT / "contracts" / "area-agreements.yaml"),
                            DataProtector.from_settings(None, tmp / "relay.key"))
    client = Client("bench-trust", "bench", "RNU", "trust", ("register:write",))
    rng = random.Random(117)
    people = [detention_to_move_scenario(rng, f"relay-{i}", date(2024, 1, 1)) for i in range((changes + 3) // 4)]
    flat = [c for p in people for c in p][:changes]

    async def send(person: list[dict]) -> None:
        for c in person:
            assert (await service.accept(client, orjson.dumps(c))).status_code == 202

    per = [flat[i:i + 4] for i in range(0, len(flat), 4)]
    for i in range(0, len(per), 32):
        await asyncio.gather(*(send(p) for p in per[i:i + 32]))
    async with engine.connect() as conn:
        rows = (await conn.execute(select(bus_messages).order_by(bus_messages.c.offset))).all()
    await ensure_topic(bootstrap, EVENTS_TOPIC, partitions=6)
    await ensure_topic(bootstrap, "bench.raw", partitions=6)
    values = [(orjson.dumps(r.payload), r.key.encode(), _headers(r)) for r in rows]
    size = sum(len(v) + len(k) + sum(len(a) + len(b) for a, b in h) for v, k, h in values)

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        await (await producer.send("bench.raw", value=b"warm-up"))  # connection and metadata, as the relay's start()
        t0 = time.perf_counter()
        futures = [await producer.send("bench.raw", value=v, key=k, headers=h) for v, k, h in values]
        await asyncio.gather(*futures)
        raw = time.perf_counter() - t0
    finally:
        await producer.stop()

    relay = KafkaRelay(engine, bootstrap)
    await relay.start()
    try:
        t0 = time.perf_counter()
        while await relay.run_once():
            pass
        relayed = time.perf_counter() - t0
    finally:
        await relay.close()
    async with engine.connect() as conn:
        left = (await conn.execute(select(func.count()).select_from(bus_messages)
                                   .where(bus_messages.c.relayed_at.is_(None)))).scalar_one()
    await engine.dispose()
    assert left == 0, f"{left} outbox rows not relayed"
    return {"messages": len(rows), "mb": size / 1e6, "raw_s": len(rows) / raw, "relay_s": len(rows) / relayed}


def pg_sessions(pg: PostgresServer, database: str) -> int:
    """Sessions PostgreSQL has opened on `database` so far (`pg_stat_database.sessions`,
    PostgreSQL 14+): each a backend forked and a password exchange (SCRAM), a
    count the host's speed does not move. -1 if psql cannot say."""
    psql = pg.bindir / "psql" if (pg.bindir / "psql").exists() else shutil.which("psql")
    if psql is None:
        return -1
    out = subprocess.run([str(psql), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-d", "postgres",
                          "-At", "-c", f"SELECT sessions FROM pg_stat_database WHERE datname = '{database}'"],
                         env={**os.environ, "PGPASSWORD": pg.password}, capture_output=True, text=True, check=False)
    try:
        return int(out.stdout.strip())
    except ValueError:
        return -1


def server_cpu(pid: int) -> float:
    """CPU seconds of a server process and every process under it, live or
    reaped (PostgreSQL's backends come and go with the hub's connections):
    utime, stime, cutime and cstime, the live children's added."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):  # gone meanwhile (a backend exiting)
        return 0.0
    total = sum(int(f) for f in fields[11:15]) / load.CLK_TCK
    return total + sum(server_cpu(c) for c in load.child_pids(pid))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--changes", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument("--drain-timeout", type=float, default=300.0)
    ap.add_argument("--ingest-only", action="store_true", help="the hub without its workers: ingest alone")
    ap.add_argument("--skip-relay", action="store_true", help="only the hub process")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy the hub as bench_load.py --profile does (BENCH_SPY_ROLE picks a worker process)")
    ap.add_argument("--count-statements", action="store_true",
                    help="round trips to PostgreSQL per change in every hub process (bench/probe)")
    ap.add_argument("--separate-workers", action="store_true", help="the workers in a process of their own")
    ap.add_argument("--separate-delivery", action="store_true",
                    help="--separate-workers with the deliverers in a third process")
    ap.add_argument("--one-process", action="store_true",
                    help="the workers in the hub's one process (without a layout option the hub chooses as "
                         "`s117hub serve` does: three processes on two cores or more)")
    ap.add_argument("--keep", action="store_true", help="keep the tmp dir (profiles, the hub's log)")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="post at a steady rate (changes/s, open loop) as bench_load.py --rate does")
    ap.add_argument("--warm-up", type=int, default=0, metavar="N",
                    help="first run a level of N changes (not reported, its own database) so that the measured "
                         "one meets a broker whose JVM has compiled its hot paths, as a running one has")
    args = ap.parse_args()
    configure_logging("WARNING")
    tmp = Path(tempfile.mkdtemp(prefix="s117-bench-prod-"))
    pg = PostgresServer(ensure_binaries())
    broker = KafkaBroker(fetch_jars())
    pg.start()
    try:
        broker.start()
        try:
            admin = pg.url().render_as_string(hide_password=False)
            ns = load.parser().parse_args([])  # bench_load's defaults, whatever options it gains
            ns.ingest_only, ns.log_level, ns.drain_timeout = args.ingest_only, args.log_level, args.drain_timeout
            ns.rate = args.rate
            if args.warm_up:
                warm_url = await create_database(admin, "s117_bench_warm")
                load.HubProcess = lambda workdir, **kw: HubProcess(  # type: ignore[assignment]
                    workdir, db_url=warm_url, bus_url=f"kafka://{broker.bootstrap}", S117_KAFKA_PARTITIONS="6", **kw)
                (tmp / "warm-up").mkdir()
                warm = await load.run_level(args.clients, args.warm_up, tmp / "warm-up", ns, 64)
                print(f"  warm-up: {args.warm_up} changes at {warm['accepted_s']:,.0f}/s (not reported)", file=sys.stderr)
            db_url = await create_database(admin, "s117_bench_hub")
            # bench_load's level, with the hub on PostgreSQL and Kafka.
            load.HubProcess = lambda workdir, **kw: HubProcess(  # type: ignore[assignment]
                workdir, db_url=db_url, bus_url=f"kafka://{broker.bootstrap}", S117_KAFKA_PARTITIONS="6", **kw)
            ns.profile, ns.separate_workers, ns.count_statements = \
                args.profile, args.separate_workers, args.count_statements
            ns.separate_delivery, ns.one_process = args.separate_delivery, args.one_process
            sessions: list[int] = []  # at each end of the hub's window

            def servers_cpu() -> dict[str, float]:
                sessions.append(pg_sessions(pg, make_url(db_url).database))
                return {"PostgreSQL": server_cpu(pg._proc.pid), "Kafka": server_cpu(broker._proc.pid)}
            load.SERVERS_CPU = servers_cpu
            servers0 = server_cpu(pg._proc.pid), server_cpu(broker._proc.pid)
            level = await load.run_level(args.clients, args.changes, tmp, ns, 64)
            servers = [(server_cpu(pg._proc.pid) - servers0[0]) / args.changes * 1e3,
                       (server_cpu(broker._proc.pid) - servers0[1]) / args.changes * 1e3]
            # After the hub has stopped: the relay's events go to the same topic.
            relay = None if args.skip_relay else await relay_against_raw(admin, broker.bootstrap, args.changes, tmp)
        finally:
            broker.stop()
    finally:
        pg.stop()
    print(f"Production mode (PostgreSQL 15+ from Debian, Kafka 3.9 KRaft, one broker, 6 partitions); "
          f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at end")
    if relay is not None:
        print()
        print("| outbox messages | MB | raw aiokafka producer msg/s | hub relay msg/s | relay / raw |")
        print("|---|---|---|---|---|")
        print(f"| {relay['messages']:,} | {relay['mb']:.1f} | {relay['raw_s']:,.0f} | {relay['relay_s']:,.0f} | "
              f"{relay['relay_s'] / relay['raw_s']:.0%} |")
    print()
    print(f"hub workers {'off (ingest alone)' if args.ingest_only else 'on'}")
    print("| clients | accepted/s | POST p50 / p99 | POST -> webhook p50 / p99 | delivered/s | hub CPU/change |")
    print("|---|---|---|---|---|---|")
    r = level
    print(f"| {r['clients']} | {r['accepted_s']:,.0f} | {load.fmt_ms(r['post_p50'])} / {load.fmt_ms(r['post_p99'])} "
          f"| {load.fmt_ms(r['e2e_p50'])} / {load.fmt_ms(r['e2e_p99'])} | {r['delivered_s']:,.0f} | {r['cpu_ms']:.1f} ms |")
    print(f"servers' CPU per change over the whole level (its set-up, load and drain): PostgreSQL "
          f"{servers[0]:.1f} ms, Kafka {servers[1]:.1f} ms; over the load and its drain only (the hub's window): "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in r["servers_ms"].items()))
    if len(sessions) == 2 and min(sessions) >= 0:
        print(f"PostgreSQL sessions opened on the hub's database in its window: {sessions[1] - sessions[0]} "
              f"({(sessions[1] - sessions[0]) / args.changes * 1000:.1f} per 1,000 changes)")
    if args.profile or args.keep:
        print(f"kept: {tmp} (profiles: profile-c*.txt)")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
