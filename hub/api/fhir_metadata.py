"""GET /v1/fhir/metadata: the server's CapabilityStatement (FHIR R4 `capabilities` interaction).

A FHIR client's first call (`GET [base]/metadata`) learns here what the hub serves: the Task and
Subscription resources and their interactions, `$process-message`, the messages it sends and receives
(hub/fhir/capability.py). Any client key may read it (no scope). JSON only: a request for XML or Turtle
(`_format`, or an `Accept` naming no JSON type) is `406` with an OperationOutcome; `mode` other than
`full` is `422` naming `mode`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from hub.api.deps import ClientDep, HubDep
from hub.api.outcomes import FHIR_JSON, outcome
from hub.api.problems import answer
from hub.fhir.capability import server_capability_statement
from hub.fhir.negotiation import format_refusal

router = APIRouter(prefix="/v1/fhir", tags=["fhir"])




@router.get(
    "/metadata",
    summary="The hub's FHIR CapabilityStatement (R4, kind instance)",
    responses={
        200: {"description": "The CapabilityStatement", "content": {FHIR_JSON: {}}},
        406: answer("A format other than JSON was asked for (_format or Accept)", problem=False, fhir=True),
    },
)
async def metadata(request: Request, hub: HubDep, client: ClientDep) -> JSONResponse:
    refused = format_refusal(request)
    if refused is not None:
        return outcome(406, "not-supported", *refused)
    mode = request.query_params.get("mode")
    if mode not in (None, "full"):
        return outcome(422, "not-supported", "only mode=full is served: the hub has no terminology "
                        "capabilities and the full statement is its normative one", "mode")
    base = str(request.base_url).rstrip("/") + "/v1/fhir"
    return JSONResponse(server_capability_statement(hub.settings.namespaces(), base), media_type=FHIR_JSON)
