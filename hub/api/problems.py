"""RFC 9457 problem details: the one way the API reports errors."""

from __future__ import annotations

import sqlite3
from copy import deepcopy
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from hub.api.outcomes import FHIR_JSON, outcome_body
from hub.ingest.service import PROBLEM_BASE
from hub.observability.logging import get_logger
from sqlalchemy.exc import TimeoutError as PoolTimeout
from hub.store.db import STORE_FAULTS, StoreUnreachable, store_fault

log = get_logger("hub.api")
PROBLEM_JSON = "application/problem+json"


class FieldProblem(BaseModel):
    """One refused field and why (never the value sent)."""

    field: str = Field(description="where: a dotted path in the body, or a parameter's name; `(body)` for the "
                                   "body as a whole")
    reason: str


class ProblemDetails(BaseModel):
    """The OpenAPI document's schema of every problem the API answers (`problem_response`, and the
    limits' and key check's own in hub/api/limits.py); never built at run time. Extension members
    (`rule`, `state`, `quarantine_id`, ...) may follow."""

    model_config = ConfigDict(extra="allow", title="ProblemDetails")

    type: str = Field(description="the problem's kind, a URI under the hub's /problems/")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    errors: list[FieldProblem] = Field(default_factory=list, description="each field refused (422)")


# A FHIR endpoint's own refusal (hub/api/fhir_*.py, and the limits' under /v1/fhir/): an R4
# OperationOutcome, as the document states it.
OPERATION_OUTCOME_SCHEMA: dict[str, Any] = {
    "title": "OperationOutcome", "type": "object", "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["severity", "code"],
            "properties": {"severity": {"enum": ["fatal", "error", "warning", "information"]},
                           "code": {"type": "string"}, "diagnostics": {"type": "string"},
                           "expression": {"type": "array", "items": {"type": "string"}}}}}}}
PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
OUTCOME_CONTENT = {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}


def answer(description: str, problem: bool = True, fhir: bool = False) -> dict[str, Any]:
    """An error answer for a route's `responses=`: problem details, an OperationOutcome, or either."""
    return {"description": description, "content": deepcopy({**(PROBLEM_CONTENT if problem else {}),
                                                             **(OUTCOME_CONTENT if fhir else {})})}


class ProblemError(Exception):
    def __init__(self, status: int, kind: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(title)
        self.status, self.kind, self.title, self.detail, self.extra = status, kind, title, detail, extra


def problem_response(status: int, kind: str, title: str, detail: str, headers: dict[str, str] | None = None,
                     **extra: Any) -> JSONResponse:
    body = {"type": PROBLEM_BASE + kind, "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# FastAPI's answer to a JSON body it could not decode other than as a JSON syntax error (bytes that are
# not UTF-8): a bare 400 naming nothing. Answered as every other bad body is: a 422 naming `(body)`.
_BODY_NOT_PARSED = "There was an error parsing the body"


def _field_problem(e: dict[str, Any]) -> dict[str, str]:
    """One validation error as a named field and reason; a body that is not JSON at all is `(body)`
    (FastAPI's `loc` gives the character offset, not a field), its reason the parser's, never the text."""
    if e.get("type") == "json_invalid":
        where = e["loc"][1] if len(e["loc"]) > 1 else None
        why = str((e.get("ctx") or {}).get("error") or "not JSON")
        return {"field": "(body)", "reason": f"is not valid JSON: {why}" + (
            f" (at character {where})" if isinstance(where, int) else "")}
    # loc starts with where the value came from (body, query, path, header).
    return {"field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), "reason": e["msg"]}


def outcome_response(status: int, detail: str, errors: list[dict[str, str]] | None = None,
                     headers: dict[str, str] | None = None) -> JSONResponse:
    """A refusal as a FHIR OperationOutcome (application/fhir+json, hub/api/outcomes.py)."""
    return JSONResponse(outcome_body(status, detail, errors), status_code=status, media_type=FHIR_JSON,
                        headers=headers)


def _refusal(req: Request, status: int, kind: str, title: str, detail: str, headers: dict[str, str] | None = None,
             **extra: Any) -> JSONResponse:
    """Problem details, or under /v1/fhir/ an OperationOutcome: a FHIR client reads nothing else, so the
    shared refusals there (a key without the scope, a parameter refused, an unknown method) are in its
    form too, as the limits' are (hub/api/limits.py `problem_messages`)."""
    if req.url.path.startswith("/v1/fhir/"):
        errors = extra.get("errors")
        return outcome_response(status, detail, errors if isinstance(errors, list) else None, headers)
    return problem_response(status, kind, title, detail, headers, **extra)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(req: Request, exc: ProblemError) -> JSONResponse:
        return _refusal(req, exc.status, exc.kind, exc.title, exc.detail, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_field_problem(e) for e in exc.errors()]
        return _refusal(req, 422, "invalid-request", "Request rejected", f"{len(errors)} field(s) failed validation",
                        errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _BODY_NOT_PARSED:
            return _refusal(req, 422, "invalid-request", "Request rejected", "1 field(s) failed validation",
                            errors=[{"field": "(body)", "reason": "must be JSON text in UTF-8"}])
        # Its headers kept: a 405's `Allow` (RFC 9110 15.5.6), a 401's challenge.
        return _refusal(req, exc.status_code, "http-" + str(exc.status_code), str(exc.detail), str(exc.detail),
                        headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def _gone(req: Request, exc: ClientDisconnect) -> JSONResponse:
        # The sender closed the connection before its body arrived (a route that reads its body itself
        # without saying so: hub/api/files.py and hub/api/reconciliations.py answer it themselves):
        # the client's doing, answered (to no one, but logged and counted) as a body that did not arrive.
        return _refusal(req, 408, "body-incomplete", "Request body incomplete",
                        "the connection closed before the whole body arrived: send it again",
                        errors=[{"field": "(body)", "reason": "ended before the whole body arrived"}])

    async def _store_error(req: Request, exc: Exception) -> JSONResponse:
        # Answered here (Starlette's exception middleware), not by the catch-all below: its answer is
        # followed by the exception raised again to the server, which then drops the connection.
        kind = store_fault(exc)
        if kind is None:
            return _internal_error(req, exc)
        log.error("store unavailable; answered 503", error_kind=kind, exc_type=type(exc).__name__)
        return store_unavailable(req, kind)

    app.add_exception_handler(DBAPIError, _store_error)
    app.add_exception_handler(sqlite3.Error, _store_error)
    app.add_exception_handler(StoreUnreachable, _store_error)  # PostgreSQL stopped, restarting, failed over
    app.add_exception_handler(PoolTimeout, _store_error)  # every pooled connection held past pool_timeout
    try:  # the driver's own errors where SQLAlchemy does not wrap them (a connection the server refused)
        import asyncpg  # noqa: PLC0415 - production mode's driver
    except ImportError:
        pass
    else:
        app.add_exception_handler(asyncpg.PostgresError, _store_error)
        app.add_exception_handler(asyncpg.InterfaceError, _store_error)

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception) -> JSONResponse:
        kind = store_fault(exc)
        if kind is not None:
            log.error("store unavailable; answered 503", error_kind=kind, exc_type=type(exc).__name__)
            return store_unavailable(req, kind, close=True)
        return _internal_error(req, exc)


# A store fault's Retry-After (seconds): an operator freeing space or ending a lock takes a while.
STORE_RETRY_AFTER = "30"


def store_unavailable(req: Request, kind: str, close: bool = False) -> JSONResponse:
    """A request the store could not record (hub/store/db.py `store_fault`: its disk full, read-only,
    locked past the wait): `503` naming the cause, with Retry-After; every write is idempotent, so
    sending it again is safe (a change recorded before is answered as a duplicate). `close`: the
    server drops the connection after this answer (the catch-all's path), so the client is told."""
    headers = {"Retry-After": STORE_RETRY_AFTER, **({"Connection": "close"} if close else {})}
    return _refusal(req, 503, "store-unavailable", "Store unavailable",
                    f"{STORE_FAULTS[kind]}: the request was not completed; send it again later (anything "
                    "already recorded is answered as a duplicate, never recorded twice)", headers,
                    errors=[{"field": "(store)", "reason": STORE_FAULTS[kind]}])


def _internal_error(req: Request, exc: Exception) -> JSONResponse:
    # A fault of ours, not of the input: say so without leaking internals. `Connection: close`: the
    # server closes the connection after this answer (the exception is raised on to it), and a client
    # that kept it alive for its next request would otherwise meet a dropped connection.
    log.error("unhandled error", exc_type=type(exc).__name__)
    return _refusal(req, 500, "internal-error", "Internal error",
                    "The hub could not complete the request; nothing was recorded. Retry later.",
                    {"Connection": "close"})


async def correction_answer(hub: Any, started: float, done: Any, not_found: str) -> dict[str, Any]:
    """A correction's answer (a retraction, its reversal, a merge's reversal: hub/api/retractions.py,
    hub/api/merges.py): its body with `duplicate`; `done` None (no such id this client may correct, the same
    for an unknown id and another organisation's) one `404` naming nothing, no sooner than
    S117_WRITE_REFUSAL_FLOOR_MS after `started` (no membership oracle by time)."""
    from hub.access import no_sooner_than

    if done is None:
        await no_sooner_than(started, hub.settings.write_refusal_floor_ms / 1000)
        raise ProblemError(404, "not-found", "Not found", not_found)
    return {**done.body, "duplicate": done.duplicate}
