"""GET /asyncapi.json: the AsyncAPI 3.0 document of the hub's Kafka topics (hub/asyncapi.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from hub.api.deps import HubDep
from hub.asyncapi import asyncapi_document
from hub.bootstrap import kafka_bootstrap, outbound_kafka_bootstrap

router = APIRouter(tags=["subscriptions"])


@router.get("/asyncapi.json", summary="AsyncAPI 3.0 document of every Kafka topic the hub writes")
async def asyncapi(request: Request, hub: HubDep) -> dict:
    s = hub.settings
    return asyncapi_document(version=request.app.version, kafka_servers=kafka_bootstrap(s.bus_url),
                             outbound_servers=outbound_kafka_bootstrap(s), bus_security=s.kafka_security("bus"),
                             outbound_security=s.kafka_security("outbound"))
