"""The IG lead's audit (hub:admin): verify the tamper-evident chain; who was
told what about a person (NHS number in the body), as JSON or FHIR AuditEvents."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from hub.api.deps import ClientDep, HubDep, require
from hub.api.problems import ProblemError
from hub.audit import audit_events_bundle, record_operator_action
from hub.ingest.nhs_number import nhs_number_problem, normalise
from hub.store.schema import persons

router = APIRouter(prefix="/v1/ops/audit", tags=["audit"])


@router.get("/verify", summary="Check the audit chain: edited, deleted or reordered entries; signed checkpoints")
async def verify(hub: HubDep, client: ClientDep) -> dict:
    require(client, "hub:admin")
    while await hub.audit.extend():
        pass
    return await hub.audit.verify()


class PersonAuditIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nhs_number: str
    format: Literal["json", "fhir"] = "json"


@router.post("/person", summary="Who was told what about this person, when, under which agreement")
async def person(body: PersonAuditIn, hub: HubDep, client: ClientDep) -> dict:
    require(client, "hub:admin")
    reason = nhs_number_problem(body.nhs_number)
    if reason:
        raise ProblemError(422, "invalid-request", "Request rejected", "nhs_number " + reason,
                           errors=[{"field": "nhs_number", "reason": reason}])
    index = hub.protector.index(normalise(body.nhs_number))
    async with hub.engine.begin() as conn:
        row = (await conn.execute(select(persons.c.person_id).where(persons.c.nhs_number_index == index))).first()
        # A subject access look-up is itself an operator action on the record.
        await record_operator_action(conn, client.client_id, "audit-person",
                                     row.person_id if row else "(not on the register)")
    if row is None:
        raise ProblemError(404, "not-found", "Not found", "no person with that NHS number is on the register")
    while await hub.audit.extend():
        pass
    entries = await hub.audit.person(row.person_id)
    if body.format == "fhir":
        return audit_events_bundle(row.person_id, entries, hub.settings.hub_endpoint)
    return {"person_id": row.person_id, "disclosures": entries}
