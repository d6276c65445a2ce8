"""Canonical URLs and identifier systems used in the hub's outbound FHIR.

National systems are the ones UK Core fixes (see schemas/README.md). The hub's
own namespace is one constant so it can be changed in one place: UK Core
defines no identifier system for ONS GSS codes (none among the UK Core
resources we hold, and UK Core publishes no NamingSystem files), so council
codes are carried under a hub-defined system.
"""

from __future__ import annotations

from typing import Final

# --- national (UK Core / NHS England) --------------------------------------
NHS_NUMBER_SYSTEM: Final = "https://fhir.nhs.uk/Id/nhs-number"
ODS_ORGANIZATION_SYSTEM: Final = "https://fhir.nhs.uk/Id/ods-organization-code"

LEGAL_STATUS_EXTENSION_URL: Final = (
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-LegalStatus"
)
LEGAL_STATUS_CONTEXT_SYSTEM: Final = "https://fhir.hl7.org.uk/CodeSystem/UKCore-LegalStatusContext"
LEGAL_STATUS_ENGLAND_SYSTEM: Final = (
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-LegalStatusClassificationEngland"
)
ACT_CODE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

# --- the hub's own namespace -------------------------------------------------
# A placeholder under the reserved example.org domain until the hub has a
# registered canonical base; every hub URL below derives from it.
# One base for every identifier the hub mints (FHIR systems, problem types,
# contract ids). A placeholder until the hub's public domain is registered:
# code system URLs must not change once in use.
HUB_BASE: Final = "https://s117-hub.example.org"
HUB_FHIR_BASE: Final = f"{HUB_BASE}/fhir"

EVENT_CODESYSTEM_URL: Final = f"{HUB_FHIR_BASE}/CodeSystem/s117-event"
HUB_PERSON_ID_SYSTEM: Final = f"{HUB_FHIR_BASE}/Id/person-id"
# ONS Government Statistical Service codes (E06..., E08..., E09..., E10...).
GSS_CODE_SYSTEM: Final = f"{HUB_FHIR_BASE}/Id/ons-gss-code"
HUB_SYSTEM_ID_SYSTEM: Final = f"{HUB_FHIR_BASE}/Id/system"

# Hub extensions (simple unless noted).
EXT_RESPONSIBLE_COMMISSIONER: Final = (
    f"{HUB_FHIR_BASE}/StructureDefinition/Extension-S117-ResponsibleCommissioner"
)
EXT_COORDINATING_COUNCIL: Final = (
    f"{HUB_FHIR_BASE}/StructureDefinition/Extension-S117-CoordinatingCouncil"
)
# Complex: aspect (code), explanation (string), citation (string), rule (code).
EXT_DETERMINATION: Final = f"{HUB_FHIR_BASE}/StructureDefinition/Extension-S117-Determination"
# Complex: dueDate (date), kind (code).
EXT_NEXT_REVIEW: Final = f"{HUB_FHIR_BASE}/StructureDefinition/Extension-S117-NextReview"
EXT_EVENT_OCCURRED: Final = f"{HUB_FHIR_BASE}/StructureDefinition/Extension-S117-EventOccurred"

HUB_EXTENSION_URLS: Final = frozenset(
    {
        EXT_RESPONSIBLE_COMMISSIONER,
        EXT_COORDINATING_COUNCIL,
        EXT_DETERMINATION,
        EXT_NEXT_REVIEW,
        EXT_EVENT_OCCURRED,
    }
)

# Org.kind values that carry a GSS code; every other kind carries an ODS code.
GSS_ORG_KINDS: Final = frozenset({"council"})


def org_identifier_system(kind: str) -> str:
    return GSS_CODE_SYSTEM if kind in GSS_ORG_KINDS else ODS_ORGANIZATION_SYSTEM
