"""Transfers of responsibility: GET /v1/transfers, POST .../accept | contest.

A transfer case opens when the rules move a responsibility (re-detention in
another area, a resolved dispute): the incoming body accepts or contests
within the area agreement's acknowledgement period (working days); a contest
opens a dispute. When history arriving later shows the hand-over never
happened, the hub withdraws the case (state `withdrawn`, final: both bodies
are told, and accepting or contesting it is a 409 `transfer-withdrawn`).
Only the two bodies may see or act on the case.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from hub.api.deps import ClientDep, HubDep, require
from hub.api.disputes import named
from hub.api.problems import ProblemError
from hub.api.workflow_access import act_on_case, list_cases, service, visible_case
from hub.domain.workflows.model import Action, CaseKind, TransferState
from hub.workflows.service import case_view

router = APIRouter(prefix="/v1/transfers", tags=["transfers"])


class ContestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=1000, description="Why the incoming body contests (no personal data)")


@router.get("", summary="Transfer cases of the caller's organisation, oldest breach first")
async def list_transfers(hub: HubDep, client: ClientDep,
                         state: Annotated[TransferState | None, Query()] = None,
                         org: Annotated[str | None, Query(max_length=16)] = None) -> dict:
    require(client, "s117:read")
    return await list_cases(hub, client, CaseKind.TRANSFER, state.value if state else None, org)


@router.get("/{case_id}", summary="One transfer case with its history",
            responses={404: {"description": "No transfer with that id for this organisation"}})
async def get_transfer(case_id: str, hub: HubDep, client: ClientDep) -> dict:
    require(client, "s117:read")
    case = await visible_case(hub, client, case_id, CaseKind.TRANSFER, read=True)
    svc = service(hub)
    async with hub.engine.connect() as conn:
        history = await svc.history(conn, case_id)
        await conn.rollback()
    return case_view(case, svc.clock.today(), svc.holidays) | {"history": history}


async def _act(hub, client, case_id: str, action: Action, body: dict) -> dict:  # noqa: ANN001
    try:
        out, _acted, _svc = await act_on_case(hub, client, case_id, CaseKind.TRANSFER, action, body)
    except ProblemError as problem:
        raise named(problem) from problem
    return out


@router.post("/{case_id}/accept", summary="The incoming body accepts the transfer",
             responses={404: {"description": "No transfer with that id for this organisation"},
                        409: {"description": "The transition is not allowed now (the rule named)"}})
async def accept(case_id: str, hub: HubDep, client: ClientDep) -> dict:
    return await _act(hub, client, case_id, Action.ACCEPT, {})


@router.post("/{case_id}/contest", summary="The incoming body contests the transfer: a dispute opens",
             responses={404: {"description": "No transfer with that id for this organisation"},
                        409: {"description": "The transition is not allowed now (the rule named)"}})
async def contest(case_id: str, body: ContestIn, hub: HubDep, client: ClientDep) -> dict:
    return await _act(hub, client, case_id, Action.CONTEST, {"reason": body.reason})
