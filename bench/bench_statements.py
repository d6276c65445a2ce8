"""Monthly recharge statements for 10,000 people with 3 package lines each.

Baseline, measured in the same run on the same SQLite file: reading the same
rows (the pair's package lines in force in the month) with SQLAlchemy Core.
Measured: the statement as the API builds it (read the rows into package
lines, cut each at the split change and the month's edges, cost by the day,
split, total: PackageService.statement, which also looks for people the
register moved to or from the pair and for dispute cases) and then rendered
as JSON (orjson), CSV and PDF. A split change for the pair on the 15th and a
price change on a third of the lines make every line at least two periods;
1% of the people have a commissioner dispute with interim shares agreed from
the 10th (their lines are cut there and the NHS share divided).

    .venv/bin/python bench/bench_statements.py [people]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
from sqlalchemy import or_, select

from hub.agreements_loader import load_agreements
from hub.domain.agreements import AgreementBook, FundingChange
from hub.money.render import statement_csv, statement_json, statement_pdf
from hub.money.service import PackageService
from hub.observability.logging import configure_logging
from hub.settings import REPO_ROOT
from hub.store.db import create_engine, create_schema
from hub.codec import to_jsonable
from hub.domain.workflows.model import Case, CaseKind, DisputeState, Interim
from hub.store.schema import care_packages, persons, workflow_cases

COUNCIL, ICB, MONTH = "E06000060", "QU9", "2026-10"
FIRST, LAST = date(2026, 10, 1), date(2026, 10, 31)


async def setup(engine, people: int) -> None:  # noqa: ANN001
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(persons.insert(), [
            {"person_id": f"p{i:06d}", "nhs_number_index": f"x{i}", "details": b"x", "created_at": now,
             "updated_at": now} for i in range(people)])
        rows = []
        for i in range(people):
            for n, (service, need, weekly, excl) in enumerate((("supported accommodation", "social-care", 70_000, None),
                                                              ("support worker", "joint", None, None),
                                                              ("nursing care", "health", 23_500,
                                                               "nhs-funded-nursing-care" if i % 4 == 0 else None))):
                base = {"source": "bench", "package_id": f"L{i}-{n}", "version": 1, "person_id": f"p{i:06d}",
                        "council": COUNCIL, "icb": ICB, "paid_by": "council" if i % 5 else "icb",
                        "service_type": service, "provider_kind": "council", "provider_code": f"PRV-{n}",
                        "need": need, "weekly_cost_pence": weekly, "unit_cost_pence": None if weekly else 2_550,
                        "units_per_week": None if weekly else "12.5", "s117_eligible": True, "exclusion": excl,
                        "s17_leave": False, "cohort": "learning-disability" if i % 10 == 0 else "adult",
                        "start_date": date(2026, 4, 1), "end_date": None, "source_message_id": f"m{i}-{n}",
                        "recorded_at": now}
                if n == 0 and i % 3 == 0:  # a price change on the 20th: two versions
                    rows.append({**base, "end_date": date(2026, 10, 19)})
                    rows.append({**base, "version": 2, "start_date": date(2026, 10, 20), "weekly_cost_pence": 77_000})
                else:
                    rows.append(base)
        for k in range(0, len(rows), 5_000):
            await conn.execute(care_packages.insert(), rows[k:k + 5_000])
        cases = []
        for i in range(0, people, 100):
            case = Case(case_id=f"c{i}", kind=CaseKind.DISPUTE, person_id=f"p{i:06d}", state=DisputeState.OPEN,
                        parties=(ICB, "QGH"), opened_on=date(2026, 10, 1), area="bench", clock=None,
                        dispute_id=f"D{i}", dispute_kind="commissioner",
                        interims=(Interim(ICB, ((ICB, 5_000), ("QGH", 5_000)), False, "", date(2026, 10, 1), "x"),
                                  Interim(ICB, ((ICB, 6_000), ("QGH", 4_000)), True, "QGH", date(2026, 10, 10), "x")))
            cases.append({"case_id": case.case_id, "kind": "dispute", "person_id": case.person_id, "state": "open",
                          "parties": list(case.parties), "dispute_id": case.dispute_id, "data": to_jsonable(case),
                          "version": 1, "opened_on": case.opened_on, "updated_at": now})
        await conn.execute(workflow_cases.insert(), cases)


async def main(people: int) -> None:
    configure_logging("WARNING")
    tmp = Path(tempfile.mkdtemp())
    engine = create_engine(f"sqlite+aiosqlite:///{tmp / 'bench.db'}")
    await create_schema(engine)
    await setup(engine, people)
    book = load_agreements(REPO_ROOT / "contracts" / "area-agreements.yaml")
    bucks = book.funding_for(COUNCIL, ICB)
    book = AgreementBook(funding=dict(book.funding), funding_changes={(COUNCIL, ICB): (FundingChange(
        date(2026, 10, 15), replace(bucks, council_share_bp=5_500, name="Bucks H2"), date(2026, 9, 1),
        date(2026, 9, 2), "bench"),)})
    service = PackageService(engine, None, book, None, None)  # type: ignore[arg-type]

    async def baseline() -> int:
        q = select(care_packages).where(
            care_packages.c.council == COUNCIL, care_packages.c.icb == ICB, care_packages.c.start_date <= LAST,
            or_(care_packages.c.end_date.is_(None), care_packages.c.end_date >= FIRST))
        async with engine.connect() as conn:
            rows = (await conn.execute(q)).all()
            await conn.rollback()
        return len(rows)

    async def statement():  # noqa: ANN202
        return await service.statement(MONTH, COUNCIL, ICB)

    await baseline()  # warm the page cache for both
    runs = 3
    t = time.perf_counter()
    for _ in range(runs):
        n_rows = await baseline()
    base_s = (time.perf_counter() - t) / runs
    t = time.perf_counter()
    for _ in range(runs):
        s = await statement()
    stmt_s = (time.perf_counter() - t) / runs
    items = sum(len(p.lines) for p in s.persons)
    t = time.perf_counter()
    body = orjson.dumps(statement_json(s, {}))
    json_s = time.perf_counter() - t
    t = time.perf_counter()
    text = statement_csv(s)
    csv_s = time.perf_counter() - t
    t = time.perf_counter()
    pdf = statement_pdf(s, {})
    pdf_s = time.perf_counter() - t
    await engine.dispose()
    assert s.totals.council_pence + s.totals.icb_pence + s.totals.awaiting_panel_pence == s.totals.eligible_pence
    print(f"people {people}, package rows {n_rows}, statement line items {items}")
    print(f"baseline: read the rows           {base_s * 1000:8.0f} ms")
    print(f"statement: read + split + total   {stmt_s * 1000:8.0f} ms   ratio {stmt_s / base_s:5.1f}x the read")
    print(f"  render JSON {json_s * 1000:6.0f} ms ({len(body) / 1e6:.1f} MB), CSV {csv_s * 1000:6.0f} ms "
          f"({len(text) / 1e6:.1f} MB), PDF {pdf_s * 1000:6.0f} ms ({len(pdf) / 1e6:.1f} MB)")
    print(f"end to end as JSON: {(stmt_s + json_s) * 1000:.0f} ms = {(stmt_s + json_s) / base_s:.1f}x the read")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000))
