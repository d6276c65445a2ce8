"""Responsibility disputes: raise, agree the lead body and interim split,
escalate through the stages of the procedure for the dispute's kind (the
area's `escalation` between NHS commissioners, its `council_escalation`
between councils), resolve naming the responsible body from a date (recorded
as a `dispute-resolved` register change through the normal ingest, which the
rules engine folds), and the reimbursement statement.
Only the parties may see or act; others get the same 404 as an unknown id.

Raising needs a relationship with the person on the day (responsible or
coordinating, or a body of an open transfer case): anyone else gets the 404
an unknown person gets, audited as a refused decision. The other parties
must be bodies of the dispute's kind. Resolving: the parties agree (each
sends the same terms to .../resolve: 202 while some have still to agree, 200
when the last agreement resolves it), or, at the procedure's final stage,
the hub operator records the determination of the body owning that stage."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from hub.access import caller_of, record_decision
from hub.audit import record_operator_action
from hub.api.deps import ClientDep, HubDep, require
from hub.api.problems import ProblemError
from hub.sharing import FUNDING
from hub.api.workflow_access import act_on_case, is_admin, list_cases, refusal, service, visible_case
from hub.domain.model import ChangeType
from hub.ingest.contract import IsoDate
from hub.domain.workflows.model import (
    DETERMINATION_ACTOR,
    Action,
    CaseKind,
    DisputeState,
    WorkflowRefusal,
    refusal_errors,
)
from hub.workflows.service import NoRelationship, case_view
from hub.domain.dates import england_day

router = APIRouter(prefix="/v1/disputes", tags=["disputes"])


def named(problem: ProblemError) -> ProblemError:
    """A bad-terms refusal (422) naming the field it is about (`errors`), as every other 422 does."""
    rule = problem.extra.get("rule")
    if problem.status == 422 and "errors" not in problem.extra and isinstance(rule, str):
        errors = refusal_errors(rule, problem.detail)
        if errors is not None:
            problem.extra["errors"] = errors
    return problem


Org = Annotated[str, Field(pattern=r"^([EWSN][0-9]{8}|[A-Z0-9]{3,6})$", description="GSS or ODS code")]


class RaiseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    person_id: str = Field(min_length=1, max_length=36)
    kind: Literal["council", "commissioner"]
    parties: list[Org] = Field(min_length=2, max_length=4)
    reason: str = Field(min_length=1, max_length=1000)
    lead_body: Org | None = Field(default=None, description="Who meets the needs meanwhile (default: the body "
                                  "responsible on the register, Worcs 4.3.4)")


# A share is a percentage: bounded before any arithmetic (a value such as
# "1E+999990" once cost the hub half a minute of CPU turning it into an
# integer, and "1E+2000000" overflowed into a bare 500).
Percent = Annotated[Decimal, Field(ge=0, le=100)]


class InterimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lead_body: Org
    shares: dict[Org, Percent] = Field(max_length=4, description="Percent per party (0 to 100), two decimals at "
                                                                 "most, totalling 100")


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    responsible: Org
    # YYYY-MM-DD only, as the register-change contract takes dates: a lax date read a Unix time as one.
    responsible_from: IsoDate
    determination: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="Hub operator only, at the procedure's final stage: the determination of the body owning that "
                    "stage being recorded (e.g. its reference). Parties leave it out: they propose or agree.")


@router.get("", summary="Dispute cases of the caller's organisation, oldest breach first")
async def list_disputes(hub: HubDep, client: ClientDep,
                        state: Annotated[DisputeState | None, Query()] = None,
                        org: Annotated[str | None, Query(max_length=16)] = None) -> dict:
    require(client, "s117:read")
    return await list_cases(hub, client, CaseKind.DISPUTE, state.value if state else None, org)


@router.post("", status_code=201, summary="Raise a dispute (the caller must be a party with a relationship to "
             "the person on the day)",
             responses={404: {"description": "No person with that id is on the register"},
                        409: {"description": "The transition is not allowed now (the rule named)"}})
async def raise_dispute(body: RaiseIn, hub: HubDep, client: ClientDep) -> dict:
    require(client, "workflows:write")
    if client.org_code not in body.parties:
        raise ProblemError(403, "not-a-party", "Not permitted", "parties: the raising organisation must be a party",
                           rule="not-a-party", errors=[{"field": "parties", "reason": "must include the caller"}])
    svc = service(hub)
    try:
        acted = await svc.raise_dispute(caller_of(client), body.person_id, body.kind, list(body.parties),
                                        body.reason, body.lead_body)
    except NoRelationship as refused:
        await _audit(hub, client, refused.decision, body.person_id if refused.known else None)
        # The same answer as for an unknown id: do not confirm who is on the register.
        raise ProblemError(404, "not-found", "Not found", "no person with that id is on the register") from refused
    except WorkflowRefusal as exc:
        raise named(refusal(exc)) from exc
    if acted.decision is not None:
        await _audit(hub, client, acted.decision, body.person_id)
    recorded = await svc.record_register_change(body.person_id, acted.register_change or {}, client.org_code)
    return case_view(acted.case, svc.clock.today(), svc.holidays) | {
        "register_change": {"change_id": recorded.get("change_id"), "status": recorded.get("status")}}


async def _audit(hub, client, decision, person_id: str | None) -> None:  # noqa: ANN001
    """The raise decision, allowed or refused, in access_decisions (hub/access.py)."""
    async with hub.engine.begin() as conn:
        await record_decision(conn, client, channel="rest", action="write",
                              change_type=ChangeType.DISPUTE_RAISED.value, decision=decision, person_id=person_id)


@router.get("/{case_id}", summary="One dispute: stages, clock, interim terms, history, statement when resolved",
            responses={404: {"description": "No dispute with that id for this organisation"}})
async def get_dispute(case_id: str, hub: HubDep, client: ClientDep) -> dict:
    require(client, "s117:read")
    case = await visible_case(hub, client, case_id, CaseKind.DISPUTE, read=True)
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
    if is_admin(client) or hub.sharing.grants_group(client.org_code, FUNDING, england_day()):
        return statement
    return {**statement, "lines": [{**line, "amount_pence": None} for line in statement["lines"]],
            "total_pence": None, "bodies": [],
            "amounts": "withheld: the organisation's data-sharing agreement does not grant the funding field group"}


@router.get("/{case_id}/reimbursement", summary="What the body found responsible owes for the interim",
            responses={404: {"description": "No dispute with that id for this organisation"},
                       409: {"description": "Not resolved yet"}})
async def reimbursement(case_id: str, hub: HubDep, client: ClientDep) -> dict:
    require(client, "s117:read")
    case = await visible_case(hub, client, case_id, CaseKind.DISPUTE, read=True)
    if case.state != DisputeState.RESOLVED:
        raise ProblemError(409, "not-resolved", "Not resolved yet", "the statement exists once the dispute is resolved",
                           rule="not-resolved", citation="Worcs 4.4.8, 15.6")
    return await _reimbursement(hub, client, case)


async def _act(hub, client, case_id: str, action: Action, body: dict) -> dict:  # noqa: ANN001
    try:
        out, acted, svc = await act_on_case(hub, client, case_id, CaseKind.DISPUTE, action, body)
    except ProblemError as problem:
        raise named(problem) from problem
    if acted.case.state == DisputeState.RESOLVED:
        out["reimbursement"] = await _reimbursement(hub, client, acted.case)
    return out


@router.post("/{case_id}/interim", summary="Propose (or agree, with the same terms) the lead body and interim split",
             responses={404: {"description": "No dispute with that id for this organisation"},
                        409: {"description": "The transition is not allowed now (the rule named)"}})
async def interim(case_id: str, body: InterimIn, hub: HubDep, client: ClientDep) -> dict:
    shares = {}
    for org, percent in body.shares.items():
        # Exact (no context rounding: 50.000...01 is not 50): at most two decimals.
        if percent.quantize(Decimal("0.01")) != percent:
            raise ProblemError(422, "invalid-request", "Request rejected", f"shares.{org}: at most two decimals",
                               errors=[{"field": f"shares.{org}", "reason": "at most two decimal places"}])
        shares[org] = int(percent * 100)
    return await _act(hub, client, case_id, Action.AGREE_INTERIM, {"lead_body": body.lead_body, "shares": shares})


@router.post("/{case_id}/escalate", summary="Escalate to the next stage of the dispute's procedure",
             responses={404: {"description": "No dispute with that id for this organisation"},
                        409: {"description": "The transition is not allowed now (the rule named)"}})
async def escalate(case_id: str, hub: HubDep, client: ClientDep) -> dict:
    return await _act(hub, client, case_id, Action.ESCALATE, {})


@router.post("/{case_id}/resolve", summary="Resolve: each party agrees the same responsible body and date (the "
             "last agreement resolves), or the final stage's determination; a reimbursement statement",
             responses={202: {"description": "A party's proposal or agreement recorded: the case, its `resolution` "
                                             "naming the parties still `awaiting`; nothing resolved yet",
                              "content": {"application/json": {}}},
                        404: {"description": "No dispute with that id for this organisation"},
                        409: {"description": "The transition is not allowed now (the rule named)"}})
async def resolve(case_id: str, body: ResolveIn, response: Response, hub: HubDep, client: ClientDep) -> dict:
    terms = {"responsible": body.responsible, "responsible_from": body.responsible_from,
             "determination": body.determination}
    if is_admin(client):
        out = await _determine(hub, client, case_id, terms)
    else:
        out = await _act(hub, client, case_id, Action.RESOLVE, terms)
    if out["state"] != DisputeState.RESOLVED:
        response.status_code = 202  # recorded: a proposal or an agreement; the other parties have still to agree
    return out


async def _determine(hub, client, case_id: str, terms: dict) -> dict:  # noqa: ANN001
    """The hub operator records the determination of the final stage's body
    of the case's procedure (NHS England arbitration or ICET between NHS
    commissioners, the Secretary of State between councils: not organisations
    on the hub)."""
    require(client, "workflows:write")
    await visible_case(hub, client, case_id, CaseKind.DISPUTE)
    svc = service(hub)
    try:
        acted = await svc.act(case_id, DETERMINATION_ACTOR, Action.RESOLVE, terms)
    except WorkflowRefusal as exc:
        raise named(refusal(exc)) from exc
    out = case_view(acted.case, svc.clock.today(), svc.holidays)
    out["transitions"] = [{"action": t.action.value, "from_state": t.from_state, "to_state": t.to_state,
                           "citation": t.citation, "explanation": t.explanation} for t in acted.transitions]
    async with hub.engine.begin() as conn:  # the operator's act, in the audit chain (no personal data)
        await record_operator_action(conn, client.client_id, "dispute-determination-recorded", case_id, {
            "responsible": acted.case.responsible, "responsible_from": terms["responsible_from"].isoformat(),
            "stage": acted.case.stages[acted.case.stage_index].name})
    if acted.register_change is not None:
        recorded = await svc.record_register_change(acted.case.person_id, acted.register_change, client.org_code)
        out["register_change"] = {"change_id": recorded.get("change_id"), "status": recorded.get("status")}
        out["reimbursement"] = await _reimbursement(hub, client, acted.case)
    return out
