"""The register summary at 100,000 people.

`GET /v1/reports/register-summary` reads `register_status`, one row per
person kept up to date in each change's transaction (hub/register_counts.py),
so its cost grows with the number of people, not with their history. This
bench records a few hundred people through the real ingest path (their rows
written by it), then grows the table to `--people` rows by copying those rows
under new person ids with their dates moved by up to two years and their
council and ICB drawn from the recorded ones, and times the endpoint (the
app in-process over ASGI, an operator key: every organisation's rows) and
`register_counts.summary` alone. Baseline in the same run: `SELECT count(*)`
of the same table.

    .venv/bin/python bench/bench_summary.py                    # 100,000 people, SQLite
    .venv/bin/python bench/bench_summary.py --people 10000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import orjson  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from hub import register_counts  # noqa: E402
from hub.api.app import create_app  # noqa: E402
from hub.clients import add_client  # noqa: E402
from hub.ingest.service import Client  # noqa: E402
from hub.observability.logging import configure_logging  # noqa: E402
from hub.sample_data import detention_to_move_scenario  # noqa: E402
from hub.store.schema import persons, register_status  # noqa: E402
from tests.conftest import test_settings  # noqa: E402


def p50(values: list[float]) -> float:
    return statistics.median(values)


async def main(args: argparse.Namespace) -> None:
    configure_logging("WARNING")
    tmp = Path(tempfile.mkdtemp(prefix="s117-bench-summary-"))
    app = create_app(test_settings(tmp))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        client = Client("bench-trust", "bench", "RNU", "trust", ("register:write",))
        rng = random.Random(117)
        for i in range(args.seed_people):
            for c in detention_to_move_scenario(rng, f"sum-{i}", date(2024, 1, 1)):
                assert (await hub.ingest.accept(client, orjson.dumps(c))).status_code == 202
        async with hub.engine.connect() as conn:
            seeds = [dict(r._mapping) for r in (await conn.execute(select(register_status))).all()]
        pairs = [(s["council_code"], s["council_name"], s["icb_code"], s["icb_name"]) for s in seeds]

        def moved(d: date | None, days: int) -> date | None:
            return d + timedelta(days=days) if d is not None else None

        t0 = time.perf_counter()
        need = args.people - len(seeds)
        for start in range(0, need, 5000):
            rows, people = [], []
            for _ in range(min(5000, need - start)):
                s = dict(rng.choice(seeds))
                shift = rng.randrange(-730, 1)
                s["person_id"] = str(uuid.uuid4())
                s["council_code"], s["council_name"], s["icb_code"], s["icb_name"] = rng.choice(pairs)
                for k in ("entitlement_start", "entitlement_end", "next_review_due"):
                    s[k] = moved(s[k], shift)
                s["updated_at"] = datetime.now(UTC)
                rows.append(s)
                people.append({"person_id": s["person_id"], "nhs_number_index": uuid.uuid4().hex, "details": b"-",
                               "created_at": s["updated_at"], "updated_at": s["updated_at"]})
            async with hub.engine.begin() as conn:
                await conn.execute(persons.insert(), people)
                await conn.execute(register_status.insert(), rows)
        grown = time.perf_counter() - t0
        _, admin_key = await add_client(hub.engine, "ops", "HUB", "hub", ["hub:admin"])
        today = datetime.now(UTC).date()
        base, direct, endpoint = [], [], []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            for _ in range(args.repeat):
                t = time.perf_counter()
                async with hub.engine.connect() as conn:
                    n = (await conn.execute(select(func.count()).select_from(register_status))).scalar_one()
                base.append(time.perf_counter() - t)
                t = time.perf_counter()
                await register_counts.summary(hub.engine, today, None)
                direct.append(time.perf_counter() - t)
                t = time.perf_counter()
                r = await http.get("/v1/reports/register-summary", headers={"X-API-Key": admin_key})
                endpoint.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
        async with hub.engine.connect() as conn:
            pages = (await conn.execute(text("PRAGMA page_count"))).scalar_one()
            page_size = (await conn.execute(text("PRAGMA page_size"))).scalar_one()
    print(f"register_status: {n:,} people ({args.seed_people} recorded through ingest, the rest copied in "
          f"{grown:.1f} s); SQLite file {pages * page_size / 1e6:,.0f} MB; {args.repeat} runs each")
    print()
    print("| people | summary endpoint p50 / max | register_counts.summary p50 | baseline count(*) p50 | endpoint / baseline |")
    print("|---|---|---|---|---|")
    print(f"| {n:,} | {p50(endpoint) * 1000:,.0f} ms / {max(endpoint) * 1000:,.0f} ms | {p50(direct) * 1000:,.0f} ms "
          f"| {p50(base) * 1000:,.1f} ms | {p50(endpoint) / p50(base):.0f}x |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=100_000)
    ap.add_argument("--seed-people", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=15)
    asyncio.run(main(ap.parse_args()))
