"""Quarantine triage: the source (or the hub operator) corrects a held input
and resubmits it, or discards it with a reason. A resubmission is a new
submission through the same ingest (canonical JSON, the contract of
POST /v1/register-changes), linked to the held one, which is then marked
resolved; if the correction is still wrong it is held in its turn, linked too.
A package event (the contract of POST /v1/packages: an object with `action`
and `package_id`, keys no register change has) goes through the package
service instead, with the scope that route needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from hub.ids import uuid4
from hub.api.deps import ClientDep, HubDep, own_row, require
from hub.api.problems import PROBLEM_JSON, ProblemError
from hub.audit import record_operator_action
from hub.observability.logging import get_logger
from hub.store.schema import quarantine

router = APIRouter(prefix="/v1/quarantine", tags=["register changes"])
MAX_BODY = 256 * 1024
log = get_logger("hub.quarantine")


# A held input being resubmitted is claimed first ("resubmitting", the claim's id in resolved_by, its time
# in resolved_at), so that of two resubmissions (or a resubmission and a discard) at the same moment only
# one goes through ingest: the other is 409, naming the state it found. A claim its request left behind
# (the process gone mid-ingest) is taken over after CLAIM_EXPIRES.
CLAIMED = "resubmitting"
CLAIM_EXPIRES = timedelta(minutes=10)


def _already(status: str) -> ProblemError:
    state = "being resubmitted" if status == CLAIMED else f"{status} already"
    return ProblemError(409, "already-resolved", "Already resolved", f"this input is {state}", state=status)


async def _held(hub, client, quarantine_id: str):  # noqa: ANN001, ANN202
    row = await own_row(hub, client, quarantine, quarantine.c.quarantine_id, quarantine_id, "quarantined input")
    if row.status != "held" and not _expired(row):
        raise _already(row.status)
    return row


def _expired(row) -> bool:  # noqa: ANN001
    at = row.resolved_at
    if row.status != CLAIMED or at is None:
        return False
    return (at if at.tzinfo else at.replace(tzinfo=UTC)) < datetime.now(UTC) - CLAIM_EXPIRES


def _still_held(quarantine_id: str, now: datetime):  # noqa: ANN202
    """The WHERE of an update that takes a held input: held still, or claimed by a request long gone."""
    return (quarantine.c.quarantine_id == quarantine_id) & (
        (quarantine.c.status == "held")
        | ((quarantine.c.status == CLAIMED) & (quarantine.c.resolved_at < now - CLAIM_EXPIRES)))


async def _refused(conn, quarantine_id: str) -> ProblemError:  # noqa: ANN001
    """No row changed: someone else took the input first; its state now."""
    status = (await conn.execute(select(quarantine.c.status)
                                 .where(quarantine.c.quarantine_id == quarantine_id))).scalar_one()
    return _already(status)


@router.post("/{quarantine_id}/resubmit", summary="Resubmit a corrected input (canonical JSON), linked to the held one",
             status_code=202,  # the ingest's answer, as POST /v1/register-changes gives it (a package's: 201)
             responses={201: {"description": "The corrected package event recorded, as POST /v1/packages answers",
                              "content": {"application/json": {}}},
                        404: {"description": "No held input with that id for this client (or, for a package event, "
                                             "no person it may name)"},
                        409: {"description": "Resolved already or being resubmitted; or its source_message_id used "
                                             "for another change"}})
async def resubmit(quarantine_id: str, request: Request, hub: HubDep, client: ClientDep,
                   identity_confirmed: Annotated[bool, Query(description=(
                       "The sender has checked (against PDS) that the NHS number is the person's and the "
                       "details it sends are right where they differ from those the register holds (a change "
                       "held as about another person: person.birth_date / person.family_name). The wrong-person "
                       "check is not made, the details sent replace those held, and the write is audited as "
                       "confirm-identity. A register change only."))] = False) -> JSONResponse:
    require(client, "register:write")
    row = await _held(hub, client, quarantine_id)
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ProblemError(413, "too-large", "Body too large", f"a register change must be under {MAX_BODY} bytes")
    package = _package_event(raw)
    if package is not None and identity_confirmed:
        reason = "is for a register change, not a package event"
        raise ProblemError(422, "invalid-request", "Request rejected", f"identity_confirmed {reason}",
                           errors=[{"field": "identity_confirmed", "reason": reason}])
    if package is not None:  # as POST /v1/packages asks of its caller
        require(client, "packages:write")
        if client.org_kind not in ("council", "icb") and "hub:admin" not in client.scopes:
            raise ProblemError(403, "forbidden", "Not permitted", "packages are recorded by a responsible council "
                                                                  "or ICB")
    claim, now = uuid4(), datetime.now(UTC)
    async with hub.engine.begin() as conn:
        taken = await conn.execute(quarantine.update().where(_still_held(quarantine_id, now))
                                   .values(status=CLAIMED, resolved_at=now, resolved_by=claim))
        if taken.rowcount != 1:
            raise await _refused(conn, quarantine_id)
    mine = (quarantine.c.quarantine_id == quarantine_id) & (quarantine.c.status == CLAIMED) & (
        quarantine.c.resolved_by == claim)
    # A resubmission held again is resubmitted under its first channel (never resubmit-resubmit-...: no channel).
    channel = f"resubmit-{row.channel.removeprefix('resubmit-')}"[:32]
    try:
        if package is not None and hub.packages is not None:
            outcome = await hub.packages.record(client, package, raw, channel)
        else:
            outcome = await hub.ingest.accept(client, raw, channel=channel, identity_confirmed=identity_confirmed)
    except BaseException:
        async with hub.engine.begin() as conn:  # held again, for another try
            await conn.execute(quarantine.update().where(mine).values(status="held", resolved_at=None,
                                                                      resolved_by=row.resolved_by))
        raise
    link = outcome.body.get("change_id") or outcome.body.get("quarantine_id") or outcome.body.get("package_id")
    async with hub.engine.begin() as conn:
        done = await conn.execute(quarantine.update().where(mine).values(
            status="resubmitted" if not outcome.is_problem else "held",
            resolved_at=datetime.now(UTC) if not outcome.is_problem else None, resolved_by=link))
        if done.rowcount != 1:  # the claim expired and was taken over meanwhile: say so, change nothing more
            log.warning("quarantine claim taken over", quarantine_id=quarantine_id)
        elif "hub:admin" in client.scopes and row.source != client.client_id:
            await record_operator_action(conn, client.client_id, "quarantine-resubmit", quarantine_id,
                                         {"resolved_by": link})
    body = {**outcome.body, "resubmission_of": quarantine_id}
    return JSONResponse(body, status_code=outcome.status_code,
                        media_type=PROBLEM_JSON if outcome.is_problem else "application/json")


def _package_event(raw: bytes) -> dict | None:
    """The resubmitted body as a package event (a JSON object naming `action` and `package_id`), else None."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and "action" in data and "package_id" in data else None


class DiscardIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=500)


@router.post("/{quarantine_id}/discard", summary="Discard a held input, with the reason",
             responses={404: {"description": "No held input with that id for this client"},
                        409: {"description": "Resolved already or being resubmitted"}})
async def discard(quarantine_id: str, body: DiscardIn, hub: HubDep, client: ClientDep) -> dict:
    require(client, "register:write")
    row = await _held(hub, client, quarantine_id)
    now = datetime.now(UTC)
    async with hub.engine.begin() as conn:
        done = await conn.execute(quarantine.update().where(_still_held(quarantine_id, now)).values(
            status="discarded", resolved_at=now, resolution_reason=body.reason, resolved_by=None))
        if done.rowcount != 1:
            raise await _refused(conn, quarantine_id)
        if "hub:admin" in client.scopes and row.source != client.client_id:
            await record_operator_action(conn, client.client_id, "quarantine-discard", quarantine_id)
    return {"quarantine_id": quarantine_id, "status": "discarded", "resolution_reason": body.reason}
