"""Audit at scale, embedded mode (SQLite).

`--entries` disclosures (default 1,000,000) over 100,000 people, chained into
the tamper-evident audit; then:

- chaining throughput (entries/s) against inserting the same rows (baseline);
- "who was told what about this person" (`AuditChain.person`) and the
  engineers' trace by person: p50/p99 latency over 200 random people, against
  a bare indexed select of the person's disclosures (baseline);
- `verify` throughput (entries/s) over the whole chain;
- the retention purge of delivered payloads (`--deliveries`, default 200,000):
  rows/s, against a bare UPDATE of the same rows.

    .venv/bin/python bench/bench_audit.py [--entries 1000000] [--deliveries 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, text


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1]


async def main(entries: int, n_deliveries: int) -> None:
    from hub.audit import AuditChain
    from hub.observability.logging import configure_logging
    from hub.retention import Purger, RetentionPolicy
    from hub.store.db import create_engine, create_schema
    from hub.delivery.queue import insert_deliveries
    from hub.store.schema import delivery_messages, disclosures, subscriptions
    from hub.trace import TraceQuery, trace

    configure_logging("WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'hub.db'}")
        await create_schema(engine)
        people = [str(uuid.uuid4()) for _ in range(100_000)]
        orgs = ["E06000060", "QU9", "E10000034", "QGH", "E08000025"]
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        rng = random.Random(117)
        started = time.perf_counter()
        for start in range(0, entries, 20_000):
            rows = [{"event_id": str(uuid.UUID(int=rng.getrandbits(128))), "person_id": rng.choice(people),
                     "event_type": "s117-entitlement-started", "recipient_org": rng.choice(orgs),
                     "decision": rng.choice(["allowed", "allowed", "denied", "no-subscription"]),
                     "agreement_id": "DSA-BENCH", "field_groups": ["identity", "responsibility"],
                     "reason": "allowed by DSA-BENCH", "channel": "webhook",
                     "at": t0 + timedelta(seconds=start + i)} for i in range(min(20_000, entries - start))]
            async with engine.begin() as conn:
                await conn.execute(disclosures.insert(), rows)
        insert_s = time.perf_counter() - started
        chain = AuditChain(engine, b"bench-key")
        started = time.perf_counter()
        while await chain.extend():
            pass
        chain_s = time.perf_counter() - started

        sample = rng.sample(people, 200)
        base, who, traced = [], [], []
        for pid in sample:
            t = time.perf_counter()
            async with engine.connect() as conn:
                (await conn.execute(select(disclosures).where(disclosures.c.person_id == pid))).all()
            base.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            await chain.person(pid)
            who.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            await trace(engine, TraceQuery(person_id=pid))
            traced.append((time.perf_counter() - t) * 1000)
        started = time.perf_counter()
        result = await chain.verify()
        verify_s = time.perf_counter() - started
        assert result["ok"], result["problems"][:3]

        async with engine.begin() as conn:
            await conn.execute(subscriptions.insert().values(
                subscription_id="s", org_code="E06000060", client_id="c", channel="webhook", url="https://x",
                active=True, created_at=t0))
        payload = b"x" * 2000
        for start in range(0, n_deliveries, 20_000):
            async with engine.begin() as conn:
                await insert_deliveries(conn, [{
                    "delivery_id": str(uuid.uuid4()), "subscription_id": "s", "event_id": str(uuid.uuid4()),
                    "message_id": str(uuid.uuid4()), "event_type": "s117-entitlement-started", "payload": payload,
                    "status": "delivered", "attempts": 1, "next_attempt_at": t0, "correlation_id": "b",
                    "created_at": t0, "delivered_at": t0} for _ in range(min(20_000, n_deliveries - start))])
        started = time.perf_counter()
        async with engine.begin() as conn:  # baseline: one bare UPDATE of the same rows, then put them back
            await conn.execute(text("UPDATE delivery_messages SET payload = x''"))
        bare_s = time.perf_counter() - started
        async with engine.begin() as conn:
            await conn.execute(delivery_messages.update().values(payload=payload))
        started = time.perf_counter()
        done = await Purger(engine, chain, RetentionPolicy(30, 0, 0, 0)).run_once(datetime(2026, 12, 1, tzinfo=UTC))
        purge_s = time.perf_counter() - started
        await engine.dispose()

    print(f"{entries:,} audit entries over {len(people):,} people")
    print(f"  chaining: {entries / chain_s:,.0f} entries/s ({chain_s:.1f} s) against inserting them "
          f"{entries / insert_s:,.0f}/s ({chain_s / insert_s:.1f}x)")
    print(f"  who was told what (person):  p50 {pct(who, 50):.2f} ms  p99 {pct(who, 99):.2f} ms")
    print(f"  trace by person:             p50 {pct(traced, 50):.2f} ms  p99 {pct(traced, 99):.2f} ms")
    print(f"  baseline indexed select:     p50 {pct(base, 50):.2f} ms  p99 {pct(base, 99):.2f} ms "
          f"(person look-up {pct(who, 50) / pct(base, 50):.1f}x the baseline at p50)")
    print(f"  verify: {result['entries_checked'] / verify_s:,.0f} entries/s ({verify_s:.1f} s)")
    print(f"retention purge of {done['delivered_payloads']:,} delivered payloads: "
          f"{done['delivered_payloads'] / purge_s:,.0f} rows/s, against one bare UPDATE "
          f"{n_deliveries / bare_s:,.0f} rows/s ({purge_s / bare_s:.1f}x)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--deliveries", type=int, default=200_000)
    a = ap.parse_args()
    asyncio.run(main(a.entries, a.deliveries))
