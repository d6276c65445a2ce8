"""GET /v1/reports/register-summary: the anonymised register summary for
oversight groups (scope reports:read). An organisation sees the rows where it
is the responsible council or ICB; the hub operator sees all."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter

from hub import register_counts
from hub.api.deps import ClientDep, HubDep, require
from hub.bootstrap import Hub
from hub.domain.dates import add_months, england_day
from hub.domain.money.expenditure import expenditure, financial_year
from hub.ingest.service import Client
from hub.reconciliation import list_agreement
from hub.reports import expenditure_summary, list_agreement_rows

router = APIRouter(prefix="/v1/reports", tags=["reports"])


@router.get("/register-summary", summary="Anonymised register summary with trends (Worcs Annex 3)")
async def summary(hub: HubDep, client: ClientDep) -> dict:
    require(client, "reports:read")
    today = england_day()
    # Maintained counts (hub/register_counts.py): one aggregate query, not a
    # re-evaluation of every person per request.
    report = await register_counts.summary(hub.engine, today, None if "hub:admin" in client.scopes else client.org_code)
    report["scope"] = "all" if "hub:admin" in client.scopes else client.org_code
    report["list_agreement"] = list_agreement_rows(
        await list_agreement(hub.engine, None if "hub:admin" in client.scopes else {client.org_code}))
    report["expenditure"] = await _expenditure(hub, client, today, report)
    return report


async def _expenditure(hub: Hub, client: Client, today: date, report: dict) -> dict:
    """Committed and projected spend (hub/domain/money/expenditure.py) for the
    pairs the caller is part of (all for the hub operator)."""
    assert hub.packages is not None
    year_start, year_end = financial_year(today)
    lines = await hub.packages.all_lines(min(year_start, add_months(date(today.year, today.month, 1), -11)),
                                         year_end)
    first = min(year_start, add_months(date(today.year, today.month, 1), -11))
    pairs, interims = await hub.packages.moves(first, year_end)
    org = None if "hub:admin" in client.scopes else client.org_code
    if org is not None:  # the caller's recorded lines, and anyone moved to or from it
        lines = [ln for ln in lines if org in (ln.council, ln.icb) or ln.person_id in pairs
                 or ln.person_id in interims]
    decisions = await hub.packages.decisions()
    exp = expenditure(lines, hub.agreements.funding_history, lambda pid: decisions.get(pid, ()), today,
                      lambda pid: pairs.get(pid, ()), lambda pid: interims.get(pid, ()), org)
    names = {r["council"]["code"]: r["council"]["name"] for r in report["rows"]}
    names |= {r["commissioner"]["code"]: r["commissioner"]["name"] for r in report["rows"]}
    return expenditure_summary(exp, names)
