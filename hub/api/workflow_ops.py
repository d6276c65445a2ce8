"""Operator endpoints for the workflow clocks (scope hub:admin), and the
console page of open transfers and disputes (GET /console/workflows).

POST /v1/ops/workflows/scan runs the clock scanner now. POST
/v1/ops/workflows/clock moves the workflows' "today" forward; it exists only
when S117_WORKFLOW_CLOCK_SETTABLE is set (end-to-end tests inject time this
way instead of sleeping); otherwise it answers every method, key and body the
404 of a route that does not exist (the setting is looked at before the scope,
and the scope before the body). The offset is kept in the
store (`workflow_clock`), so the clock scanner sees it in whichever process
it runs (`s117hub serve` may put it in a worker process).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.api.deps import ClientDep, HubDep, require
from hub.api.workflow_access import service

router = APIRouter(prefix="/v1/ops/workflows", tags=["operations"])
page_router = APIRouter(tags=["ops"])
_STATIC = Path(__file__).parent / "static"
_PAGE = _STATIC / "workflows.html"

# The console pages (GET /console, /console/workflows) and their scripts: a
# page takes an operator's hub:admin key, so nothing but the hub's own script
# files runs in it (no inline script, no on...= handler, no javascript: URL),
# it talks to the hub alone, and no other site may frame it (clickjacking).
CONSOLE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
CONSOLE_HEADERS = {"Cache-Control": "no-store", "Content-Security-Policy": CONSOLE_CSP, "X-Frame-Options": "DENY",
                   "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
JAVASCRIPT = "text/javascript; charset=utf-8"


def no_store(response: Response) -> None:
    """A dependency of every /v1/ops router (hub/api/app.py): the operator's answers (a person's trace or
    audit, held and dead deliveries, the lists) are never kept by a browser's or a proxy's cache."""
    response.headers["Cache-Control"] = "no-store"


def console_script(name: str) -> Response:
    """One of the console's scripts (hub/api/static/<name>), with the pages' headers."""
    return Response((_STATIC / name).read_bytes(), media_type=JAVASCRIPT, headers=CONSOLE_HEADERS)


@page_router.get("/console/workflows", include_in_schema=False)
async def workflows_page() -> HTMLResponse:
    """Open transfers and disputes by age and clock, oldest breach first. Static:
    it calls /v1/transfers and /v1/disputes with the signed-in key."""
    return HTMLResponse(_PAGE.read_text(), headers=CONSOLE_HEADERS)


@page_router.get("/console/workflows.js", include_in_schema=False)
async def workflows_script() -> Response:
    return console_script("workflows.js")


class ClockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    advance_days: int = Field(strict=True, ge=0, le=3660)  # a whole JSON number ("3", 3.0, true were read)


@router.post("/scan", summary="Run the workflow clock scanner now: reminders, breaches, escalation")
async def scan(hub: HubDep, client: ClientDep) -> dict:
    require(client, "hub:admin")
    svc = service(hub)
    counts = await svc.scan()  # first: it loads a settable clock's offset, which "as_of" then shows
    return {"as_of": svc.clock.today().isoformat(), **counts}


# Every method: on a hub whose clock is not settable, the route answers as one that does not exist.
_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@router.api_route("/clock", methods=_ANY_METHOD, include_in_schema=False)
async def set_clock(request: Request, hub: HubDep, client: ClientDep) -> dict:
    # The setting, then the scope, and only then the body: a hub whose clock is not settable answers
    # every caller the 404 of a route that does not exist, whatever was sent (a body checked first
    # answered "422 body Field required", which told anyone the hidden route was there).
    if not hub.settings.workflow_clock_settable:
        raise StarletteHTTPException(404)
    require(client, "hub:admin")
    if request.method != "POST":
        raise StarletteHTTPException(405, headers={"Allow": "POST"})
    try:
        body = ClockIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    svc = service(hub)
    await svc.clock.set(body.advance_days)  # kept in the store: the scanner may run in a worker process
    return {"as_of": svc.clock.today().isoformat(), "offset_days": body.advance_days}
