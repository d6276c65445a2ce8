"""GET /v1/reports/register-summary: the anonymised register summary for
oversight groups (scope reports:read). An organisation sees the rows where it
is the responsible council or ICB; the hub operator sees all."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from fastapi import APIRouter
from sqlalchemy import select

from hub.api.deps import ClientDep, HubDep, require
from hub.codec import from_jsonable
from hub.domain.model import RegisterChange
from hub.domain.rules import evaluate
from hub.reconciliation import list_agreement
from hub.reports import list_agreement_rows, register_summary
from hub.store.schema import register_changes, service_levels

router = APIRouter(prefix="/v1/reports", tags=["reports"])


@router.get("/register-summary", summary="Anonymised register summary with trends (Worcs Annex 3)")
async def summary(hub: HubDep, client: ClientDep) -> dict:
    require(client, "reports:read")
    today = datetime.now(UTC).date()
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(register_changes.c.person_id, register_changes.c.canonical)
                                   .order_by(register_changes.c.person_id))).all()
        late = (await conn.execute(select(register_changes.c.person_id)
                                   .join(service_levels, service_levels.c.change_id == register_changes.c.change_id)
                                   .where(service_levels.c.state == "breach"))).scalars().all()
        await conn.rollback()
    by_person: dict[str, list[RegisterChange]] = {}
    for r in rows:
        by_person.setdefault(r.person_id, []).append(from_jsonable(RegisterChange, r.canonical))
    statuses = {pid: evaluate(pid, changes, hub.ref, hub.agreements, today) for pid, changes in by_person.items()}
    late_by_council: Counter[str] = Counter()
    for pid in late:
        council = statuses[pid].responsible_council
        late_by_council[council.org.code if council and council.org else "unknown"] += 1
    mine = list(statuses.values())
    if "hub:admin" not in client.scopes:
        mine = [s for s in mine if client.org_code in {
            d.org.code for d in (s.responsible_council, s.responsible_commissioner) if d is not None and d.org}]
    report = register_summary(mine, today, late_by_council)
    report["scope"] = "all" if "hub:admin" in client.scopes else client.org_code
    report["list_agreement"] = list_agreement_rows(
        await list_agreement(hub.engine, None if "hub:admin" in client.scopes else {client.org_code}))
    return report
