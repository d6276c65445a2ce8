"""What the transfer and dispute routers share: who may see a case (its
parties; others get the same 404 as for an unknown id), refusals as problem
details naming the rule, and the list query for a caller's queue."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select

from hub.access import record_decision
from hub.api.problems import ProblemError
from hub.bootstrap import Hub
from hub.domain.access import Rule
from hub.domain.workflows.model import Case, CaseKind, WorkflowRefusal, refusal_errors
from hub.ingest.service import Client
from hub.observability.logging import bound_correlation_id
from hub.store.schema import workflow_cases
from hub.workflows.service import WorkflowService, case_view

_TITLES = {403: "Not permitted", 409: "Transition not allowed", 422: "Request rejected"}


def is_admin(client: Client) -> bool:
    return "hub:admin" in client.scopes


def service(hub: Hub) -> WorkflowService:
    assert hub.workflows is not None
    return hub.workflows


def not_found(kind: CaseKind) -> ProblemError:
    return ProblemError(404, "not-found", "Not found", f"no {kind.value} case with that id for this organisation")


async def visible_case(hub: Hub, client: Client, case_id: str, kind: CaseKind, *, read: bool = False) -> Case:
    """The case if the caller is a party to it (or the hub operator), else the
    unknown id's 404. `read`: a read of the case (its view, its statement),
    recorded in `access_decisions` allowed or refused (channel `case`, the
    case's kind as the change type), as every read of a person is."""
    await service(hub).clock.load()  # the tests' settable clock, as another process may have set it; else nothing
    async with hub.engine.connect() as conn:
        case = await service(hub).load(conn, case_id)
        await conn.rollback()
    allowed = case is not None and case.kind is kind and (is_admin(client) or client.org_code in case.parties)
    if read:
        async with hub.engine.begin() as conn:
            await record_decision(conn, client, channel="case", action="read", allowed=allowed,
                                  rule=Rule.ALLOWED if allowed else Rule.NO_RELATIONSHIP, change_type=kind.value,
                                  person_id=case.person_id if case is not None else None,
                                  correlation_id=bound_correlation_id())
    if not allowed:
        raise not_found(kind)
    return case


def refusal(exc: WorkflowRefusal) -> ProblemError:
    """The problem for an illegal transition; bad terms (422) name their field in `errors`."""
    errors = refusal_errors(exc.rule, exc.detail) if exc.status == 422 else None
    return ProblemError(exc.status, exc.rule, _TITLES.get(exc.status, "Refused"), exc.detail, rule=exc.rule,
                        citation=exc.citation, **({"errors": errors} if errors else {}))


async def list_cases(hub: Hub, client: Client, kind: CaseKind, state: str | None, org: str | None) -> dict[str, Any]:
    """The caller's cases of `kind` (the operator's: any organisation's). Each list is recorded in
    `access_decisions`, allowed or refused (channel `case`, action `list`, no one person: a list
    polled every few seconds by the console is one row a request, not one a case)."""
    refused = org is not None and org != client.org_code and not is_admin(client)
    async with hub.engine.begin() as conn:
        await record_decision(conn, client, channel="case", action="list", allowed=not refused,
                              rule=Rule.NO_RELATIONSHIP if refused else Rule.ALLOWED, change_type=kind.value,
                              correlation_id=bound_correlation_id())
    if refused:
        raise ProblemError(403, "forbidden", "Not permitted", "org: an organisation may list only its own cases",
                           errors=[{"field": "org", "reason": "must be the calling organisation"}])
    who = org or (None if is_admin(client) else client.org_code)
    await service(hub).clock.load()  # the tests' settable clock, as another process may have set it; else nothing
    q = select(workflow_cases.c.data).where(workflow_cases.c.kind == kind.value)
    if state:
        q = q.where(workflow_cases.c.state == state)
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(q)).all()
        await conn.rollback()
    svc = service(hub)
    today = svc.clock.today()
    cases = [svc.from_row(r.data) for r in rows]
    cases = [c for c in cases if who is None or who in c.parties]
    # Oldest breach first, then the nearest deadline, then the oldest case.
    cases.sort(key=lambda c: (c.clock is None, c.clock.due_on if c.clock else date.max, c.opened_on, c.case_id))
    return {"as_of": today.isoformat(), "items": [case_view(c, today, svc.holidays) for c in cases]}


async def act_on_case(hub: Hub, client: Client, case_id: str, kind: CaseKind, action: Any,
                      body: dict[str, Any]) -> tuple[dict[str, Any], Any, WorkflowService]:
    """A party's action on its transfer or dispute: the case as it now is, the
    transitions with their citations, and the register change it recorded (a
    resolution). Returns (answer, what the service did, the service)."""
    from hub.api.deps import require  # noqa: PLC0415 (deps imports bootstrap, like this module)

    require(client, "workflows:write")
    await visible_case(hub, client, case_id, kind)
    svc = service(hub)
    try:
        acted = await svc.act(case_id, client.org_code, action, body)
    except WorkflowRefusal as exc:
        raise refusal(exc) from exc
    out = case_view(acted.case, svc.clock.today(), svc.holidays)
    out["transitions"] = [{"action": t.action.value, "from_state": t.from_state, "to_state": t.to_state,
                           "citation": t.citation, "explanation": t.explanation} for t in acted.transitions]
    if acted.register_change is not None:
        recorded = await svc.record_register_change(acted.case.person_id, acted.register_change, client.org_code)
        out["register_change"] = {"change_id": recorded.get("change_id"), "status": recorded.get("status")}
    return out, acted, svc
