"""POST /v1/packages: one aftercare package line event (start, change, end)
from the person's responsible council or ICB (scope packages:write).

The body is the package contract (hub/money/contract.py): bad input is a 422
naming each field, held in quarantine; the same source_message_id again gets
the first answer. Only a body responsible for the person on the line's
effective date (a change or an end: of the pair the line is charged to that
day; another body's line named by `line_recorded_by`), holding `funding`,
writes it (hub/money/service.py); anyone else gets the same 404 as for an
unknown person, and nothing is kept. A
caller with no agreement granting `funding` gets that 404 whatever its body
holds, even one that is not JSON: nothing of it is read or quarantined. The
404 comes no sooner than S117_WRITE_REFUSAL_FLOOR_MS after the body was read
(`money_answer`; split decisions alike): a refusal about someone on the
register reads their lines and evaluates their register, one about an unknown
person reads nothing, and the difference in time would tell who is there."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from hub.access import no_sooner_than
from hub.api.deps import ClientDep, HubDep, require
from hub.api.problems import PROBLEM_JSON, ProblemError
from hub.codec import DUPLICATE_KEY, duplicate_keys, json_path
from hub.ingest.validation import FieldProblem
from hub.money.contract import PackageIn
from hub.money.service import funding_agreement
from hub.domain.dates import england_day


router = APIRouter(prefix="/v1", tags=["packages"])
MAX_BODY = 64 * 1024


@router.post("/packages", status_code=201, summary="An aftercare package line: start, change (from a date) or end",
             responses={201: {"description": "Recorded (or the first answer to this source_message_id)"},
                        404: {"description": "No person on the register for whom the caller is responsible on "
                                              "the line's date with `funding` granted (one answer for all)"},
                        409: {"description": "The source_message_id was already used for a different event"},
                        422: {"description": "Named problems; the input is held in quarantine"}})
async def post_package(request: Request, hub: HubDep, client: ClientDep) -> JSONResponse:
    require(client, "packages:write")
    if client.org_kind not in ("council", "icb") and "hub:admin" not in client.scopes:
        raise ProblemError(403, "forbidden", "Not permitted", "packages are recorded by a responsible council or ICB")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ProblemError(413, "too-large", "Body too large", f"a package event must be at most {MAX_BODY} bytes")
    started = time.monotonic()
    assert hub.packages is not None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    twice = duplicate_keys(raw, data) if isinstance(data, dict) else []
    if twice and funding_agreement(hub.packages._sharing(), client, england_day()) is not None:
        # A key named twice: a 422 naming each (never a value), held in quarantine, never read as the value
        # the parser kept last. A caller with no funding agreement gets its one answer, as for any body.
        smid = data.get("source_message_id") if ("source_message_id",) not in twice else None
        out = await hub.packages._quarantine(
            client, raw, "rest", [FieldProblem(json_path(p), DUPLICATE_KEY, unknown_key=len(p) != 1 or p[0] not in
                                               PackageIn.model_fields) for p in twice],
            smid if isinstance(smid, str) else None)
    else:
        out = await hub.packages.record(client, data, raw, "rest")
    return await money_answer(hub, started, out)


async def money_answer(hub: Any, started: float, out: Any) -> JSONResponse:
    """A money write's answer (a package line's, a split decision's); its 404, the unknown person's
    (or decision's) answer to every body refused, no sooner than the write refusal floor after
    `started`, whatever the refusal had to read."""
    if out.status_code == 404:
        await no_sooner_than(started, hub.settings.write_refusal_floor_ms / 1000)
    return JSONResponse(out.body, status_code=out.status_code,
                        media_type=PROBLEM_JSON if out.is_problem else "application/json")
