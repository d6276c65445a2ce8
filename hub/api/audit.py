"""The IG lead's audit (hub:admin): verify the tamper-evident chain; who was
told what about a person (NHS number in the body), as JSON or FHIR AuditEvents."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from hub.api.deps import ClientDep, HubDep, person_id_for_nhs_number, require
from hub.api.problems import ProblemError
from hub.audit import audit_events_bundle, record_operator_action

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


@router.post("/person", summary="Who was told what about this person, when, under which agreement",
             responses={404: {"description": "No person with that NHS number is on the register"}})
async def person(body: PersonAuditIn, hub: HubDep, client: ClientDep) -> dict:
    require(client, "hub:admin")
    person_id = await person_id_for_nhs_number(hub, body.nhs_number)
    async with hub.engine.begin() as conn:
        # A subject access look-up is itself an operator action on the record.
        await record_operator_action(conn, client.client_id, "audit-person", person_id or "(not on the register)")
    if person_id is None:
        raise ProblemError(404, "not-found", "Not found", "no person with that NHS number is on the register")
    while await hub.audit.extend():
        pass
    entries = await hub.audit.person(person_id)
    if body.format == "fhir":
        return audit_events_bundle(person_id, entries, hub.settings.hub_endpoint)
    return {"person_id": person_id, "disclosures": entries}
