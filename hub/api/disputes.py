"""Responsibility disputes: raise, agree the lead body and interim split,
escalate through the area's stages, resolve naming the responsible body from
a date (recorded as a `dispute-resolved` register change through the normal
ingest, which the rules engine folds), and the reimbursement statement.
Only the parties may see or act; others get the same 404 as an unknown id."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from hub.api.deps import ClientDep, HubDep, require
from hub.api.problems import ProblemError
from hub.sharing import FUNDING
from hub.api.workflow_access import act_on_case, is_admin, list_cases, refusal, service, visible_case
from hub.domain.workflows.model import Action, CaseKind, DisputeState, WorkflowRefusal
from sqlalchemy import select

from hub.codec import from_jsonable
from hub.domain.model import RegisterChange
from hub.domain.rules import evaluate
from hub.store.schema import register_changes, workflow_cases
from hub.workflows.service import case_view

router = APIRouter(prefix="/v1/disputes", tags=["disputes"])
Org = Annotated[str, Field(pattern=r"^([EWSN][0-9]{8}|[A-Z0-9]{3,6})$", description="GSS or ODS code")]


class RaiseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    person_id: str = Field(min_length=1, max_length=36)
    kind: Literal["council", "commissioner"]
    parties: list[Org] = Field(min_length=2, max_length=4)
    reason: str = Field(min_length=1, max_length=1000)
    lead_body: Org | None = Field(default=None, description="Who meets the needs meanwhile (default: the body "
                                  "responsible on the register, Worcs 4.3.4)")


class InterimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lead_body: Org
    shares: dict[Org, Decimal] = Field(description="Percent per party, two decimals at most, totalling 100")


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    responsible: Org
    responsible_from: date


@router.get("", summary="Dispute cases of the caller's organisation, oldest breach first")
async def list_disputes(hub: HubDep, client: ClientDep,
                        state: Annotated[DisputeState | None, Query()] = None,
                        org: Annotated[str | None, Query(max_length=16)] = None) -> dict:
    require(client, "s117:read")
    return await list_cases(hub, client, CaseKind.DISPUTE, state.value if state else None, org)


@router.post("", status_code=201, summary="Raise a dispute (the caller must be a party)")
async def raise_dispute(body: RaiseIn, hub: HubDep, client: ClientDep) -> dict:
    require(client, "workflows:write")
    if client.org_code not in body.parties:
        raise ProblemError(403, "not-a-party", "Not permitted", "parties: the raising organisation must be a party",
                           rule="not-a-party", errors=[{"field": "parties", "reason": "must include the caller"}])
    svc = service(hub)
    await svc.clock.load()  # the tests' settable clock, as another process may have set it; else nothing
    if not await _involved(hub, client.org_code, body.person_id, svc.clock.today()) and not is_admin(client):
        # The same answer as for an unknown id: do not confirm who is on the register.
        raise ProblemError(404, "not-found", "Not found", "no person with that id is on the register")
    try:
        acted = await svc.raise_dispute(client.org_code, body.person_id, body.kind, list(body.parties), body.reason,
                                        body.lead_body)
    except WorkflowRefusal as exc:
        raise refusal(exc) from exc
    recorded = await svc.record_register_change(body.person_id, acted.register_change or {}, client.org_code)
    return case_view(acted.case, svc.clock.today(), svc.holidays) | {
        "register_change": {"change_id": recorded.get("change_id"), "status": recorded.get("status")}}


async def _involved(hub, org: str, person_id: str, today: date) -> bool:  # noqa: ANN001
    """Whether `org` is party to the person's aftercare: a responsible or
    coordinating body, a party to one of their disputes or transfers."""
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(register_changes.c.canonical)
                                   .where(register_changes.c.person_id == person_id))).all()
        cases = (await conn.execute(select(workflow_cases.c.parties)
                                    .where(workflow_cases.c.person_id == person_id))).all()
        await conn.rollback()
    if not rows:
        return False
    status = evaluate(person_id, [from_jsonable(RegisterChange, r.canonical) for r in rows], hub.ref, hub.agreements,
                      today)
    bodies = {d.org.code for d in (status.responsible_council, status.responsible_commissioner,
                                   status.coordinating_council) if d is not None and d.org is not None}
    bodies |= {p for d in status.open_disputes for p in d.parties}
    bodies |= {p for c in cases for p in c.parties}
    return org in bodies


@router.get("/{case_id}", summary="One dispute: stages, clock, interim terms, history, statement when resolved")
async def get_dispute(case_id: str, hub: HubDep, client: ClientDep) -> dict:
    require(client, "s117:read")
    case = await visible_case(hub, client, case_id, CaseKind.DISPUTE)
    svc = service(hub)
    async with hub.engine.connect() as conn:
        history = await svc.history(conn, case_id)
        stages = await svc.stages(conn, case_id)
        await conn.rollback()
    out = case_view(case, svc.clock.today(), svc.holidays) | {"history": history, "stage_history": stages}
    if case.state == DisputeState.RESOLVED:
        out["reimbursement"] = await _reimbursement(hub, client, case)
    return out


async def _reimbursement(hub, client, case) -> dict:  # noqa: ANN001
    """The statement; its amounts are package costs, shown only to a party
    whose agreement grants the `funding` field group (periods and shares are
    the dispute's own terms, which every party sees)."""
    statement = await service(hub).statement(case)
    if is_admin(client) or hub.sharing.grants_group(client.org_code, FUNDING, datetime.now(UTC).date()):
        return statement
    return {**statement, "lines": [{**line, "amount_pence": None} for line in statement["lines"]],
            "total_pence": None, "bodies": [],
            "amounts": "withheld: the organisation's data-sharing agreement does not grant the funding field group"}


@router.get("/{case_id}/reimbursement", summary="What the body found responsible owes for the interim")
async def reimbursement(case_id: str, hub: HubDep, client: ClientDep) -> dict:
    require(client, "s117:read")
    case = await visible_case(hub, client, case_id, CaseKind.DISPUTE)
    if case.state != DisputeState.RESOLVED:
        raise ProblemError(409, "not-resolved", "Not resolved yet", "the statement exists once the dispute is resolved",
                           rule="not-resolved", citation="Worcs 4.4.8, 15.6")
    return await _reimbursement(hub, client, case)


async def _act(hub, client, case_id: str, action: Action, body: dict) -> dict:  # noqa: ANN001
    out, acted, svc = await act_on_case(hub, client, case_id, CaseKind.DISPUTE, action, body)
    if acted.case.state == DisputeState.RESOLVED:
        out["reimbursement"] = await _reimbursement(hub, client, acted.case)
    return out


@router.post("/{case_id}/interim", summary="Propose (or agree, with the same terms) the lead body and interim split")
async def interim(case_id: str, body: InterimIn, hub: HubDep, client: ClientDep) -> dict:
    shares = {}
    for org, percent in body.shares.items():
        points = percent * 100
        if points != points.to_integral_value():
            raise ProblemError(422, "invalid-request", "Request rejected", f"shares.{org}: at most two decimals",
                               errors=[{"field": f"shares.{org}", "reason": "at most two decimal places"}])
        shares[org] = int(points)
    return await _act(hub, client, case_id, Action.AGREE_INTERIM, {"lead_body": body.lead_body, "shares": shares})


@router.post("/{case_id}/escalate", summary="Escalate to the area agreement's next stage")
async def escalate(case_id: str, hub: HubDep, client: ClientDep) -> dict:
    return await _act(hub, client, case_id, Action.ESCALATE, {})


@router.post("/{case_id}/resolve", summary="Resolve: the responsible body from a date; a reimbursement statement")
async def resolve(case_id: str, body: ResolveIn, hub: HubDep, client: ClientDep) -> dict:
    return await _act(hub, client, case_id, Action.RESOLVE,
                      {"responsible": body.responsible, "responsible_from": body.responsible_from})



