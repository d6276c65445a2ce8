"""Operator endpoints for the workflow clocks (scope hub:admin).

POST /v1/ops/workflows/scan runs the clock scanner now. POST
/v1/ops/workflows/clock moves the workflows' "today" forward; it exists only
when S117_WORKFLOW_CLOCK_SETTABLE is set (end-to-end tests inject time this
way instead of sleeping) and answers 404 otherwise.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from hub.api.deps import ClientDep, HubDep, require
from hub.api.problems import ProblemError
from hub.api.workflow_access import service

router = APIRouter(prefix="/v1/ops/workflows", tags=["operations"])


class ClockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    advance_days: int = Field(ge=0, le=3660)


@router.post("/scan", summary="Run the workflow clock scanner now: reminders, breaches, escalation")
async def scan(hub: HubDep, client: ClientDep) -> dict:
    require(client, "hub:admin")
    svc = service(hub)
    return {"as_of": svc.clock.today().isoformat(), **await svc.scan()}


@router.post("/clock", include_in_schema=False)
async def set_clock(body: ClockIn, hub: HubDep, client: ClientDep) -> dict:
    if not hub.settings.workflow_clock_settable:
        raise ProblemError(404, "not-found", "Not found", "no such endpoint")
    require(client, "hub:admin")
    svc = service(hub)
    svc.clock.offset_days = body.advance_days
    return {"as_of": svc.clock.today().isoformat(), "offset_days": body.advance_days}
