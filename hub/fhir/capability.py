"""The hub's CapabilityStatement as its FHIR endpoint answers it (GET /v1/fhir/metadata).

The package's statement (hub/fhir/conformance.py `_capability_statement`: the REST resources and
interactions, `$process-message`, the messages sent and received) with this server's base as
`implementation.url` and messaging endpoint, and the SubscriptionTopic urls a Subscription's criteria may
name; `instantiates` names the package's canonical one. A FHIR
client's first call is `GET [base]/metadata`.
"""

from __future__ import annotations

from typing import Any

from hub.domain.model import EventType
from hub.fhir.conformance import _capability_statement
from hub.fhir.namespaces import Namespaces
from hub.fhir.subscriptions import topic_url

__all__ = ["server_capability_statement"]


def server_capability_statement(ns: Namespaces, base: str) -> dict[str, Any]:
    """kind instance, fhirVersion 4.0.1, JSON only; `base` is the FHIR base the client called
    (`https://host/v1/fhir`)."""
    cs = _capability_statement(ns, base)
    canonical = cs.pop("url")
    cs["instantiates"] = [canonical]
    cs["status"] = "active"
    cs["format"] = ["application/fhir+json", "json"]
    cs["implementation"] = {"description": "S117 Hub FHIR endpoint", "url": base}
    # The topics a Subscription's criteria may name, as this server accepts them.
    for resource in cs["rest"][0]["resource"]:
        if resource["type"] == "Subscription":
            resource["documentation"] += " Topics: " + ", ".join(topic_url(e.value, ns.fhir_base) for e in EventType) + "."
    return cs
