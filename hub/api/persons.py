"""Query a person's s117 position: GET /v1/persons/{person_id}/s117.

`person_id` is the hub's own identifier: NHS numbers never go in a URL (URLs
end up in access logs). Finding a person by NHS number is a POST with the
number in the body. Only organisations party to the person's aftercare (a
responsible, coordinating or notified body, a dispute party, or a source that
reported on them) may see it, and only while a data-sharing agreement names them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from hub.api.deps import ClientDep, HubDep, require
from hub.api.problems import ProblemError
from hub.codec import from_jsonable, to_jsonable
from hub.domain.model import RegisterChange, S117Status
from hub.domain.rules import evaluate
from hub.ingest.nhs_number import nhs_number_problem, normalise
from hub.ingest.service import Client
from hub.money.view import funding_view
from hub.sharing import FUNDING
from hub.store.schema import persons, register_changes, service_levels
from hub.workflows.distribution import transfers_for_person

router = APIRouter(prefix="/v1/persons", tags=["persons"])


class LookupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nhs_number: str


@router.post("/lookup", summary="Find the hub's person id for an NHS number (number in the body, never the URL)")
async def lookup(body: LookupIn, hub: HubDep, client: ClientDep) -> dict:
    require(client, "s117:read")
    reason = nhs_number_problem(body.nhs_number)
    if reason:
        raise ProblemError(422, "invalid-request", "Request rejected", "nhs_number " + reason,
                           errors=[{"field": "nhs_number", "reason": reason}])
    index = hub.protector.index(normalise(body.nhs_number))
    async with hub.engine.connect() as conn:
        row = (await conn.execute(select(persons.c.person_id).where(persons.c.nhs_number_index == index))).first()
        await conn.rollback()
    if row is None:
        raise ProblemError(404, "not-found", "Not found", "no person with that NHS number is on the register")
    await _authorise(hub, client, row.person_id)
    return {"person_id": row.person_id}


async def _changes(hub, person_id: str) -> tuple[list[RegisterChange], dict[str, Any]]:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(
            select(register_changes.c.canonical, service_levels.c.state, service_levels.c.deadline)
            .join(service_levels, service_levels.c.change_id == register_changes.c.change_id, isouter=True)
            .where(register_changes.c.person_id == person_id)
        )).all()
        await conn.rollback()
    changes = [from_jsonable(RegisterChange, r.canonical) for r in rows]
    levels = {r.canonical["change_id"]: {"state": r.state, "deadline": r.deadline.isoformat() if r.deadline else None}
              for r in rows}
    return changes, levels


async def _authorise(
    hub, client: Client, person_id: str,  # noqa: ANN001
) -> tuple[list[RegisterChange], dict[str, Any], S117Status]:
    """The person's changes, service levels and status today, if the client
    may see them; otherwise the same 404 as for an unknown id."""
    changes, levels = await _changes(hub, person_id)
    if not changes:
        raise ProblemError(404, "not-found", "Not found", "no person with that id is on the register")
    today = datetime.now(UTC).date()
    status = evaluate(person_id, changes, hub.ref, hub.agreements, today)
    if "hub:admin" in client.scopes:
        return changes, levels, status
    parties = {c.source for c in changes}
    parties |= {d.org.code for d in (status.responsible_council, status.responsible_commissioner,
                                      status.coordinating_council) if d is not None and d.org is not None}
    for dispute in status.open_disputes:
        parties |= set(dispute.parties)
    party = client.client_id in parties or client.org_code in parties
    has_agreement = any(g.in_force(today) for g in hub.sharing.grants_for(client.org_code))
    if not party or (client.org_kind != "trust" and not has_agreement):
        # The same answer as "not found": do not confirm who is on the register.
        raise ProblemError(404, "not-found", "Not found", "no person with that id is on the register")
    return changes, levels, status


@router.get("/{person_id}/s117", summary="Entitlement, responsible bodies with explanations, reviews, disputes, history")
async def s117_position(person_id: str, hub: HubDep, client: ClientDep, as_of: date | None = None) -> dict:
    require(client, "s117:read")
    changes, levels, status = await _authorise(hub, client, person_id)
    if as_of is not None and as_of != status.as_of:
        status = evaluate(person_id, changes, hub.ref, hub.agreements, as_of)
    body = to_jsonable(status)
    async with hub.engine.connect() as conn:  # transfer pending / accepted (hub/workflows/distribution.py)
        body["transfers"] = await transfers_for_person(conn, person_id)
        await conn.rollback()
    body["register_service_level"] = [
        {"change_id": c.change_id, "change_type": c.change_type.value, "notified_on": c.notified_on.isoformat(),
         "recorded_on": c.recorded_on.isoformat(), **levels.get(c.change_id, {})}
        for c in sorted(changes, key=lambda c: (c.recorded_on, c.change_id))
    ]
    await _add_funding(hub, client, person_id, status, body)
    return body


async def _add_funding(hub, client: Client, person_id: str, status: S117Status, body: dict) -> None:  # noqa: ANN001
    """Costs, providers and the split with its citation: only for bodies an
    agreement grants the `funding` field group (hub/money/view.py)."""
    today = datetime.now(UTC).date()
    if hub.packages is None or not ("hub:admin" in client.scopes
                                    or hub.sharing.grants_group(client.org_code, FUNDING, today)):
        return
    lines = await hub.packages.lines_for_person(person_id)
    decisions = (await hub.packages.decisions([person_id])).get(person_id, [])
    body["funding"] = funding_view(status, hub.agreements, lines, decisions, status.as_of)
