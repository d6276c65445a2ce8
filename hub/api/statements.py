"""GET /v1/statements: a month's recharge statement between a council and an
ICB, as JSON, CSV or PDF. Only the two bodies themselves (and the hub
operator) get it, and only while a data-sharing agreement grants them the
`funding` field group; anyone else gets the same 404 as for a pair with
nothing to show. Every read, allowed or refused, is an `access_decisions` row
(channel `statement`, `as_of` the month's first day): a refusal names no one, an
allowed read is one row for each person the statement lists (their package lines
are disclosed), or one naming no one when it lists nobody."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from hub.access import record_decision
from hub.api.deps import ClientDep, HubDep, require
from hub.api.problems import ProblemError
from hub.domain.access import Decision, Role, Rule
from hub.domain.money import month_bounds
from hub.money.issues import issue_for
from hub.money.render import statement_csv, statement_json, statement_pdf
from hub.money.service import funding_agreement
from hub.observability.logging import bound_correlation_id
from hub.domain.dates import england_day

router = APIRouter(prefix="/v1", tags=["statements"])
MONTH = re.compile(r"^(20[0-9]{2}|2100)-(0[1-9]|1[0-2])$")


def org_names(hub, council: str, icb: str) -> dict[str, str]:  # noqa: ANN001
    today = england_day()
    c = hub.ref.council(council, today)
    i = hub.ref.commissioner_successor(icb, today)
    return {council: c.name if c else council, icb: i.name if i and i.code == icb else icb}


@router.get("/statements", summary="A month's recharge statement between a council and an ICB",
            responses={200: {"content": {"application/json": {}, "text/csv": {}, "application/pdf": {}}},
                       404: {"description": "Not one of the two bodies, or no funding agreement"}})
async def get_statement(
    hub: HubDep, client: ClientDep,
    month: Annotated[str, Query(pattern=MONTH.pattern, description="YYYY-MM, 2000-01 to 2100-12")],
    council: Annotated[str, Query(pattern=r"^[EWSN][0-9]{8}$", description="the council's GSS code")],
    icb: Annotated[str, Query(pattern=r"^[A-Z0-9]{3,6}$", description="the ICB's ODS code")],
    format: Literal["json", "csv", "pdf"] = "json",
) -> Response:
    require(client, "s117:read")
    today = england_day()
    if "hub:admin" in client.scopes:
        decision, agreement = Decision(True, Rule.ALLOWED, Role.HUB_OPERATOR), "hub:admin"
    else:
        role = Role.RESPONSIBLE_COUNCIL if client.org_code == council else \
            Role.RESPONSIBLE_COMMISSIONER if client.org_code == icb else None
        agreement = funding_agreement(hub.sharing, client, today) if role is not None else None
        decision = Decision(True, Rule.ALLOWED, role) if agreement is not None else \
            Decision(False, Rule.NO_AGREEMENT if role is not None else Rule.NO_RELATIONSHIP, role)
    if not decision.allowed:
        async with hub.engine.begin() as conn:
            await record_decision(conn, client, channel="statement", action="read", decision=decision,
                                  agreement_id=agreement, field_groups=(), as_of=month_bounds(month)[0],
                                  correlation_id=bound_correlation_id())
        raise ProblemError(404, "not-found", "Not found", "no statement for that pair for this client")
    assert hub.packages is not None
    statement = await hub.packages.statement(month, council, icb)
    # A statement discloses each listed person's package lines (costs, providers, shares): one
    # allowed row per person, so `audit person` finds it; a statement listing no one, one row
    # naming no one. Recorded before the answer is sent.
    listed = [p.person_id for p in statement.persons]
    async with hub.engine.begin() as conn:
        await record_decision(conn, client, channel="statement", action="read", decision=decision,
                              agreement_id=agreement, field_groups=("funding",), as_of=month_bounds(month)[0],
                              correlation_id=bound_correlation_id(), person_ids=listed or None)
    issue = await issue_for(hub.engine, statement, today)
    names = org_names(hub, council, icb)
    stem = f"s117-statement-{council}-{icb}-{month}"
    if format == "csv":
        return Response(statement_csv(statement, issue), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{stem}.csv"'})
    if format == "pdf":
        return Response(statement_pdf(statement, names, issue), media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="{stem}.pdf"'})
    return JSONResponse(statement_json(statement, names, issue))
