"""Quarantine triage: the source (or the hub operator) corrects a held input
and resubmits it, or discards it with a reason. A resubmission is a new
submission through the same ingest (canonical JSON, the contract of
POST /v1/register-changes), linked to the held one, which is then marked
resolved; if the correction is still wrong it is held in its turn, linked too."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from hub.api.deps import ClientDep, HubDep, own_row, require
from hub.api.problems import PROBLEM_JSON, ProblemError
from hub.audit import record_operator_action
from hub.store.schema import quarantine

router = APIRouter(prefix="/v1/quarantine", tags=["register changes"])
MAX_BODY = 256 * 1024


async def _held(hub, client, quarantine_id: str):  # noqa: ANN001, ANN202
    row = await own_row(hub, client, quarantine, quarantine.c.quarantine_id, quarantine_id, "quarantined input")
    if row.status != "held":
        raise ProblemError(409, "already-resolved", "Already resolved", f"this input is {row.status} already")
    return row


@router.post("/{quarantine_id}/resubmit", summary="Resubmit a corrected input (canonical JSON), linked to the held one")
async def resubmit(quarantine_id: str, request: Request, hub: HubDep, client: ClientDep) -> JSONResponse:
    require(client, "register:write")
    row = await _held(hub, client, quarantine_id)
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ProblemError(413, "too-large", "Body too large", f"a register change must be under {MAX_BODY} bytes")
    outcome = await hub.ingest.accept(client, raw, channel=f"resubmit-{row.channel}"[:32])
    link = outcome.body.get("change_id") or outcome.body.get("quarantine_id")
    async with hub.engine.begin() as conn:
        await conn.execute(quarantine.update().where(quarantine.c.quarantine_id == quarantine_id).values(
            status="resubmitted" if not outcome.is_problem else "held",
            resolved_at=datetime.now(UTC) if not outcome.is_problem else None, resolved_by=link))
        if "hub:admin" in client.scopes and row.source != client.client_id:
            await record_operator_action(conn, client.client_id, "quarantine-resubmit", quarantine_id,
                                         {"resolved_by": link})
    body = {**outcome.body, "resubmission_of": quarantine_id}
    return JSONResponse(body, status_code=outcome.status_code,
                        media_type=PROBLEM_JSON if outcome.is_problem else "application/json")


class DiscardIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=500)


@router.post("/{quarantine_id}/discard", summary="Discard a held input, with the reason")
async def discard(quarantine_id: str, body: DiscardIn, hub: HubDep, client: ClientDep) -> dict:
    require(client, "register:write")
    row = await _held(hub, client, quarantine_id)
    async with hub.engine.begin() as conn:
        await conn.execute(quarantine.update().where(quarantine.c.quarantine_id == quarantine_id).values(
            status="discarded", resolved_at=datetime.now(UTC), resolution_reason=body.reason))
        if "hub:admin" in client.scopes and row.source != client.client_id:
            await record_operator_action(conn, client.client_id, "quarantine-discard", quarantine_id)
    return {"quarantine_id": quarantine_id, "status": "discarded", "resolution_reason": body.reason}
