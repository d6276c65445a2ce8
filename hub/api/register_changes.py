"""Trust push: POST /v1/register-changes, and the quarantine of what was rejected."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select

from hub.api.deps import ClientDep, HubDep, Limit, get_client, own_row, require
from hub.api.problems import PROBLEM_JSON, ProblemError
from hub.store.schema import quarantine

router = APIRouter(prefix="/v1", tags=["register"])
MAX_BODY = 256 * 1024


# The key is read here rather than through FastAPI's dependencies (`ClientDep`):
# on the busiest route, solving them cost about as much as the rest of FastAPI
# (a back-load posts thousands a second). Same checks, same problems; the
# header is documented as on every other route.
_API_KEY_HEADER = {"name": "x-api-key", "in": "header", "required": False,
                   "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "X-Api-Key"}}


@router.post(
    "/register-changes",
    status_code=202,
    summary="Record a change to a person's s117 register entry",
    responses={403: {"description": "Refused by the access policy (hub/access.py); problem details name the rule"},
               413: {"description": "Body over 256 KB (refused before authentication)"},
               415: {"description": "A Content-Type other than application/json"},
               422: {"description": "Rejected and quarantined; problem details name each field"}},
    openapi_extra={"parameters": [_API_KEY_HEADER]},
)
async def post_register_change(request: Request) -> Response:
    hub = request.app.state.hub
    client = await get_client(hub, request.headers.get("x-api-key"))
    require(client, "register:write")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type and media_type != "application/json" and not media_type.endswith("+json"):
        # Nothing read, nothing recorded: a text/plain or form body is not a register change.
        raise ProblemError(415, "unsupported-media-type", "Unsupported media type",
                           "send the register change as application/json")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ProblemError(413, "too-large", "Body too large", f"a register change must be under {MAX_BODY} bytes")
    outcome = await hub.ingest.accept(client, raw, channel="rest")
    # orjson: the answer to every change of a back-load (the standard library's encoder cost more than the rest of the response).
    return Response(orjson.dumps(outcome.body), status_code=outcome.status_code,
                    media_type=PROBLEM_JSON if outcome.is_problem else "application/json")


@router.get("/quarantine", summary="Inputs held in quarantine, with the reasons")
async def list_quarantine(hub: HubDep, client: ClientDep, limit: Limit = 100) -> dict:
    require(client, "register:write")
    q = select(quarantine.c.quarantine_id, quarantine.c.source, quarantine.c.channel,
               quarantine.c.source_message_id, quarantine.c.errors, quarantine.c.received_at,
               quarantine.c.status).order_by(quarantine.c.received_at.desc()).limit(limit)
    if "hub:admin" not in client.scopes:
        q = q.where(quarantine.c.source == client.client_id)  # a source sees only its own
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(q)).all()
        await conn.rollback()
    return {"items": [
        {"quarantine_id": r.quarantine_id, "source": r.source, "channel": r.channel,
         "source_message_id": r.source_message_id, "errors": r.errors,
         "received_at": r.received_at.isoformat(), "status": r.status}
        for r in rows
    ]}


@router.get("/quarantine/{quarantine_id}", summary="One quarantined input, with the raw input for its own source")
async def get_quarantined(quarantine_id: str, hub: HubDep, client: ClientDep) -> dict:
    require(client, "register:write")
    row = await own_row(hub, client, quarantine, quarantine.c.quarantine_id, quarantine_id, "quarantined input")
    return {"quarantine_id": row.quarantine_id, "source": row.source, "channel": row.channel,
            "errors": row.errors, "received_at": row.received_at.isoformat(), "status": row.status,
            "resolved_by": row.resolved_by, "resolution_reason": row.resolution_reason,
            # Emptied by the retention job after S117_RETAIN_QUARANTINE_RAW_DAYS.
            "raw": hub.protector.decrypt(row.raw).decode("utf-8", "replace") if row.raw else None}
