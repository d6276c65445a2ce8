"""Trace and withheld disclosures for integration engineers (hub:admin).

GET /v1/ops/trace?correlation_id= | source=&source_message_id= | event_id= | message_id= | person_id=
POST /v1/ops/trace/person {"nhs_number": ...}: by NHS number, in the body (never a URL)
GET /v1/ops/withheld?days=: events addressed to a body that no agreement or subscription let through
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from hub.api.deps import ClientDep, Days, HubDep, person_id_for_nhs_number, require
from hub.api.problems import ProblemError
from hub.audit import record_operator_action
from hub.observability import metrics
from hub.timeseries import series
from hub.trace import TraceQuery, trace, withheld

router = APIRouter(prefix="/v1/ops", tags=["operations"])
Id = Annotated[str | None, Query(max_length=200)]


@router.get("/trace", summary="One message's timeline, end to end")
async def trace_get(hub: HubDep, client: ClientDep, correlation_id: Id = None, source: Id = None,
                    source_message_id: Id = None, event_id: Id = None, message_id: Id = None,
                    person_id: Id = None) -> dict:
    require(client, "hub:admin")
    q = TraceQuery(correlation_id, source, source_message_id, event_id, message_id, person_id)
    if not any((correlation_id, event_id, message_id, person_id, source_message_id)):
        raise ProblemError(422, "invalid-request", "Request rejected", "name what to trace",
                           errors=[{"field": "(query)", "reason": "give correlation_id, event_id, message_id, "
                                    "person_id or source_message_id (with source, or alone)"}])
    if person_id:  # everything recorded and sent about one person: a look-up on the record, kept as such
        await _looked_up(hub, client, person_id)
    return await trace(hub.engine, q)


async def _looked_up(hub, client, person_id: str) -> None:  # noqa: ANN001
    async with hub.engine.begin() as conn:
        await record_operator_action(conn, client.client_id, "trace-person", person_id)


class PersonTraceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nhs_number: str


@router.post("/trace/person", summary="Everything recorded and sent about one person (NHS number in the body)",
             responses={404: {"description": "No person with that NHS number is on the register"}})
async def trace_person(body: PersonTraceIn, hub: HubDep, client: ClientDep) -> dict:
    require(client, "hub:admin")
    person_id = await person_id_for_nhs_number(hub, body.nhs_number)
    # As a subject access look-up (hub/api/audit.py): recorded, found or not.
    await _looked_up(hub, client, person_id or "(not on the register)")
    if person_id is None:
        raise ProblemError(404, "not-found", "Not found", "no person with that NHS number is on the register")
    return await trace(hub.engine, TraceQuery(person_id=person_id))


@router.get("/series", summary="Ingest, deliveries, lag, latency, quarantine and dead letters over time")
async def series_get(hub: HubDep, client: ClientDep, window: Literal["hour", "day", "week"] = "hour") -> dict:
    require(client, "hub:admin")
    return await series(hub.engine, window)


@router.get("/withheld", summary="Events the rules addressed to a body that no agreement or subscription let through")
async def withheld_get(hub: HubDep, client: ClientDep, days: Days = 30) -> dict:
    require(client, "hub:admin")
    groups = await withheld(hub.engine, datetime.now(UTC) - timedelta(days=days))
    for g in groups:
        metrics.WITHHELD.labels(recipient=g["recipient"], decision=g["decision"]).set(g["count"])
    return {"days": days, "groups": groups}
