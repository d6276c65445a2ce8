"""POST /v1/split-decisions and POST /v1/split-decisions/{id}/agree: a
person's own split (panel decision, needs-matrix result at review, agreed
exception), proposed by one responsible body and in force from its date once
the other agrees (Worcs 8.5, A2.3). Scope packages:write.

A split is the pair's that agreed it (the answer to the agreement names the
council and the ICB): it divides only the days charged to that pair, and ends
when responsibility leaves the pair; the next pair's days follow the next
pair's arrangement, and a return to the pair does not revive it (the pair
agrees a new one). hub/domain/money/splits.py."""

from __future__ import annotations

import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from hub.api.deps import ClientDep, HubDep, require
from hub.api.packages import money_answer
from hub.codec import DUPLICATE_KEY, duplicate_keys, json_path
from hub.ingest.validation import FieldProblem
from hub.money.service import DecisionService

router = APIRouter(prefix="/v1/split-decisions", tags=["split decisions"])


@router.post("", status_code=201, summary="Propose a person's split; in force once the other body agrees",
             responses={404: {"description": "No person for whom the caller may decide a split (one answer for all)"},
                        409: {"description": "Its source_message_id already used for another decision"}})
async def propose(request: Request, hub: HubDep, client: ClientDep) -> JSONResponse:
    require(client, "packages:write")
    assert hub.packages is not None
    raw = (await request.body())[:64 * 1024 + 1]
    started = time.monotonic()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or len(raw) > 64 * 1024:
        return await money_answer(hub, started, await hub.packages._quarantine(
            client, raw, "rest", [FieldProblem("(body)", "must be a JSON object of at most 64 KiB")], None))
    twice = duplicate_keys(raw, data)
    if twice:  # a key named twice: named (never its value) and held, never read as the value kept last
        return await money_answer(hub, started, await hub.packages._quarantine(
            client, raw, "rest", [FieldProblem(json_path(p), DUPLICATE_KEY, unknown_key=True) for p in twice], None))
    return await money_answer(hub, started, await DecisionService(hub.packages).propose(client, data, raw))


@router.post("/{decision_id}/agree", summary="The other body agrees: the split is in force from its date",
             responses={404: {"description": "No split decision with that id for this client"},
                        409: {"description": "Agreed already, superseded, responsibility moved, or needs the other "
                                             "body"}})
async def agree(decision_id: Annotated[str, Path(max_length=36)], hub: HubDep, client: ClientDep) -> JSONResponse:
    require(client, "packages:write")
    assert hub.packages is not None
    started = time.monotonic()
    return await money_answer(hub, started, await DecisionService(hub.packages).agree(client, decision_id))
