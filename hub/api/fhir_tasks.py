"""FHIR R4 Task for transfers and dispute stages: GET, PUT, PATCH /v1/fhir/Task/{id}.

A party reads its Task and may update it the FHIR way as well as by the
plain JSON API: on a transfer Task the incoming body sets `status` to
`accepted` (accept) or `rejected` with `statusReason.text` (contest, which
opens a dispute). Other changes are refused with an OperationOutcome naming
the rule; dispute stages move by POST /v1/disputes/{id}/escalate | resolve.
PATCH takes a JSON Patch (RFC 6902) of `/status` and `/statusReason`.
Non-parties get the same 404 as an unknown id. Every read, allowed or
refused, is recorded in `access_decisions` (channel `case`), as the plain
API's case reads are.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from hub.access import record_decision
from hub.api.deps import ClientDep, HubDep, require
from hub.api.outcomes import FHIR_JSON, outcome
from hub.api.problems import ProblemError, answer
from hub.api.workflow_access import is_admin, service
from hub.domain.access import Rule
from hub.domain.workflows.model import Action, Case, CaseKind, WorkflowRefusal
from hub.fhir.negotiation import body_media_refusal, format_refusal
from hub.observability.logging import bound_correlation_id
from hub.workflows.fhir_task import build_task, parse_task_id, task_id

router = APIRouter(prefix="/v1/fhir/Task", tags=["fhir"])
MAX_BODY = 64 * 1024




def _not_found() -> JSONResponse:
    return outcome(404, "not-found", "no Task with that id for this organisation")


async def _load(hub, value: str) -> tuple[Case | None, int | None]:  # noqa: ANN001
    case_id, stage = parse_task_id(value)
    async with hub.engine.connect() as conn:
        case = await service(hub).load(conn, case_id)
        await conn.rollback()
    return case, stage


def _visible(client, case: Case | None, stage: int | None) -> tuple[Case, int | None] | None:  # noqa: ANN001
    if case is None or not (is_admin(client) or client.org_code in case.parties):
        return None
    if case.kind is CaseKind.TRANSFER and stage is not None:
        return None
    if case.kind is CaseKind.DISPUTE and (stage is None or stage > case.stage_index):
        return None
    return case, stage


async def _case(hub, client, value: str) -> tuple[Case, int | None] | None:  # noqa: ANN001
    return _visible(client, *await _load(hub, value))


def _task(case: Case, stage: int | None) -> dict[str, Any]:
    if case.kind is CaseKind.DISPUTE and stage is not None and stage < case.stage_index:
        earlier = build_task(replace(case, stage_index=stage, clock=None, responsible=None, reason=""))
        earlier["status"] = "completed"
        earlier["businessStatus"] = {"text": "escalated"}
        earlier.pop("owner", None)
        return earlier
    return build_task(case)


_NOT_ACCEPTABLE = answer("An answer other than FHIR R4 JSON was asked for (_format, Accept): nothing done",
                         problem=False, fhir=True)


_TASK_BODY = frozenset({FHIR_JSON, "application/json"})
_PATCH_BODY = frozenset({"application/json-patch+json", "application/json"})


def _unsendable(request: Request, accepted: frozenset[str], send: str) -> JSONResponse | None:
    """A body in a format the route does not read (a Task as XML, a FHIRPath Patch's Parameters, no
    Content-Type): 415 naming Content-Type, before anything is read or done."""
    refused = body_media_refusal(request.headers.get("content-type", ""), accepted, send)
    return None if refused is None else outcome(415, "not-supported", *refused)


def _unreadable(request: Request) -> JSONResponse | None:
    """A client asking for a format the hub does not answer in (XML, another FHIR version): 406, before
    anything is read or done (hub/fhir/negotiation.py)."""
    refused = format_refusal(request)
    return None if refused is None else outcome(406, "not-supported", *refused)


@router.get("/{task_id}", summary="A transfer or dispute-stage Task (FHIR R4)",
            responses={404: answer("No Task with that id for this organisation", problem=False, fhir=True),
                       406: _NOT_ACCEPTABLE})
async def read_task(task_id: str, request: Request, hub: HubDep, client: ClientDep) -> JSONResponse:
    require(client, "s117:read")
    if (refused := _unreadable(request)) is not None:
        return refused
    case, stage = await _load(hub, task_id)
    found = _visible(client, case, stage)
    # A read of the case, allowed or refused, in access_decisions (channel `case`, the
    # case's kind as the change type), as GET /v1/transfers/{id} and /v1/disputes/{id} record it.
    async with hub.engine.begin() as conn:
        await record_decision(conn, client, channel="case", action="read", allowed=found is not None,
                              rule=Rule.ALLOWED if found is not None else Rule.NO_RELATIONSHIP,
                              change_type=case.kind.value if case is not None else None,
                              person_id=case.person_id if case is not None else None,
                              correlation_id=bound_correlation_id())
    if found is None:
        return _not_found()
    return JSONResponse(_task(*found), media_type=FHIR_JSON)


async def _body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ProblemError(413, "too-large", "Body too large", f"at most {MAX_BODY} bytes")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


MAX_REASON = 1000  # as POST /v1/transfers/{id}/contest's `reason`


def _reason_problem(reason: Any, where: str) -> JSONResponse | None:
    """A contest's reason (statusReason.text) as the plain API takes it: text of at most 1000 characters."""
    if reason is None or (isinstance(reason, str) and len(reason) <= MAX_REASON):
        return None
    return outcome(422, "value", f"{where}: must be text of at most {MAX_REASON} characters", where)


async def _apply(hub, client, task_value: str, status: Any, reason: Any) -> JSONResponse:  # noqa: ANN001
    require(client, "workflows:write")
    if not isinstance(status, str):
        return outcome(422, "value", "Task.status: must be a code (a string)", "Task.status")
    found = await _case(hub, client, task_value)
    if found is None:
        return _not_found()
    case, stage = found
    current = _task(case, stage)
    if status == current["status"]:
        return JSONResponse(current, media_type=FHIR_JSON)  # nothing to do
    if case.kind is not CaseKind.TRANSFER or status not in ("accepted", "rejected"):
        shown = repr(status) if len(status) <= 32 else "this status"
        return outcome(422, "business-rule",
                        f"status: '{current['status']}' -> {shown} is not a change a party can make on this Task; "
                        "a transfer's incoming body may set 'accepted' or 'rejected' (with statusReason.text); "
                        "dispute stages move by POST /v1/disputes/{id}/escalate | resolve", "Task.status")
    action = Action.ACCEPT if status == "accepted" else Action.CONTEST
    svc = service(hub)
    try:
        acted = await svc.act(case.case_id, client.org_code, action, {"reason": reason or ""})
    except WorkflowRefusal as exc:
        code = {403: "forbidden", 409: "conflict"}.get(exc.status, "business-rule")
        return outcome(exc.status, code, f"{exc.rule}: {exc.detail} ({exc.citation})", "Task.status")
    if acted.register_change is not None:
        await svc.record_register_change(acted.case.person_id, acted.register_change, client.org_code)
    return JSONResponse(build_task(acted.case), media_type=FHIR_JSON)


# What a PUT or PATCH of a Task may answer of its own (the OpenAPI document; each an OperationOutcome).
_WRITE_ANSWERS: dict[int | str, dict] = {
    403: answer("The key lacks the scope, or the transition is not the caller's to make", problem=False, fhir=True),
    404: answer("No Task with that id for this organisation", problem=False, fhir=True),
    406: _NOT_ACCEPTABLE,
    409: answer("The transition is not allowed now", problem=False, fhir=True),
    413: answer("The body is over 64 KB", problem=False, fhir=True),
    415: answer("A body other than the route reads (PUT: a Task as application/fhir+json or application/json; "
                "PATCH: JSON Patch as application/json-patch+json or application/json), or none: nothing done",
                problem=False, fhir=True),
    422: answer("Refused: an OperationOutcome naming the problem", problem=False, fhir=True),
}


@router.put("/{task_id}", summary="Update a Task: a transfer's incoming body sets status accepted / rejected",
            responses=_WRITE_ANSWERS)
async def put_task(task_id: str, request: Request, hub: HubDep, client: ClientDep) -> JSONResponse:
    if (refused := _unreadable(request)) is not None:
        return refused
    if (refused := _unsendable(request, _TASK_BODY,
                               "the Task as application/fhir+json (or application/json)")) is not None:
        return refused
    body = await _body(request)
    if not isinstance(body, dict) or body.get("resourceType") != "Task":
        return outcome(422, "structure", "the body must be a FHIR Task", "Task")
    if body.get("id") not in (None, task_id):
        return outcome(422, "invariant", "Task.id must equal the id in the URL", "Task.id")
    status_reason = body.get("statusReason")
    if status_reason is not None and not isinstance(status_reason, dict):
        return outcome(422, "structure", "Task.statusReason: must be a CodeableConcept (an object with text)",
                        "Task.statusReason")
    reason = (status_reason or {}).get("text")
    if (bad := _reason_problem(reason, "Task.statusReason.text")) is not None:
        return bad
    return await _apply(hub, client, task_id, body.get("status"), reason)


@router.patch("/{task_id}", summary="JSON Patch of /status (and /statusReason) of a Task",
            responses=_WRITE_ANSWERS)
async def patch_task(task_id: str, request: Request, hub: HubDep, client: ClientDep) -> JSONResponse:
    if (refused := _unreadable(request)) is not None:
        return refused
    if (refused := _unsendable(request, _PATCH_BODY, "a JSON Patch (RFC 6902) as application/json-patch+json "
                               "(or application/json); FHIRPath Patch is not supported")) is not None:
        return refused
    ops = await _body(request)
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        return outcome(422, "structure", "the body must be a JSON Patch array (RFC 6902)")
    status, reason = None, None
    for i, op in enumerate(ops):
        path, kind = op.get("path"), op.get("op")
        if kind not in ("replace", "add") or path not in ("/status", "/statusReason", "/statusReason/text"):
            return outcome(422, "not-supported", f"[{i}]: only replace/add of /status and /statusReason are "
                            "supported", f"[{i}].path")
        if path == "/status":
            status = op.get("value")
        elif path == "/statusReason":
            value = op.get("value")
            if not isinstance(value, dict):
                return outcome(422, "structure", f"[{i}].value: /statusReason must be a CodeableConcept (an "
                                "object with text)", f"[{i}].value")
            reason = value.get("text")
        else:
            reason = op.get("value")
        if (bad := _reason_problem(reason, f"[{i}].value")) is not None:
            return bad
    if status is None:
        return outcome(422, "required", "the patch must set /status", "/status")
    return await _apply(hub, client, task_id, status, reason)


__all__ = ["router", "task_id"]
