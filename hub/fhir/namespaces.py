"""Canonical URLs and identifier systems used in the hub's outbound FHIR.

National systems are the ones UK Core fixes (see schemas/README.md). The hub's
own URLs derive from one canonical base (``Namespaces.for_base``), the
setting S117_CANONICAL_BASE; councils are identified by their ONS GSS code.
"""

from __future__ import annotations

from dataclasses import dataclass
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

# --- councils ------------------------------------------------------------------
# ONS Government Statistical Service codes (E06..., E08..., E09..., E10...):
# the ONS statistical geography namespace (each code resolves under it as
# <system>/<code>). UK Core fixes no identifier system for local authorities.
GSS_CODE_SYSTEM: Final = "http://statistics.data.gov.uk/id/statistical-geography"

# --- the hub's own namespace -------------------------------------------------
# Every URL the hub mints (CodeSystems, profiles, extensions, identifier
# systems, problem types) sits under one canonical base, the setting
# S117_CANONICAL_BASE (hub/settings.py). Embedded mode defaults to this
# clearly local value (the reserved .localhost domain); production
# (PostgreSQL) must set it. Code system URLs must not change once in use.
DEFAULT_CANONICAL_BASE: Final = "https://s117-hub.localhost"


@dataclass(frozen=True, slots=True)
class Namespaces:
    """The hub's URLs under one canonical base (see ``for_base``)."""

    base: str
    fhir_base: str
    event_codesystem: str
    change_type_codesystem: str
    person_id_system: str
    person_event_codesystem: str
    system_id_system: str
    change_id_system: str
    problem_base: str

    @classmethod
    def for_base(cls, base: str) -> Namespaces:
        base = base.rstrip("/")
        fhir = f"{base}/fhir"
        return cls(
            base=base,
            fhir_base=fhir,
            event_codesystem=f"{fhir}/CodeSystem/s117-event",
            change_type_codesystem=f"{fhir}/CodeSystem/s117-register-change-type",
            person_id_system=f"{fhir}/Id/person-id",
            person_event_codesystem=f"{fhir}/CodeSystem/s117-person-event",
            system_id_system=f"{fhir}/Id/system",
            change_id_system=f"{fhir}/Id/register-change-id",
            problem_base=f"{base}/problems/",
        )

    def canonical(self, resource_type: str, rid: str) -> str:
        """The canonical URL of a conformance resource, e.g. a profile."""
        return f"{self.fhir_base}/{resource_type}/{rid}"

    def extension(self, name: str) -> str:
        """``name`` like "S117-Determination"."""
        return f"{self.fhir_base}/StructureDefinition/Extension-{name}"

    def profile(self, name: str) -> str:
        """``name`` like "S117-Patient"."""
        return f"{self.fhir_base}/StructureDefinition/{name}"


DEFAULT_NAMESPACES: Final = Namespaces.for_base(DEFAULT_CANONICAL_BASE)

# The default base's URLs under their historical names (tests, examples and
# code that has no Settings at hand). Outbound messages take a Namespaces
# built from the configured base.
HUB_BASE: Final = DEFAULT_NAMESPACES.base
HUB_FHIR_BASE: Final = DEFAULT_NAMESPACES.fhir_base
EVENT_CODESYSTEM_URL: Final = DEFAULT_NAMESPACES.event_codesystem
HUB_PERSON_ID_SYSTEM: Final = DEFAULT_NAMESPACES.person_id_system
HUB_SYSTEM_ID_SYSTEM: Final = DEFAULT_NAMESPACES.system_id_system

# Hub extensions (simple unless noted); defined in hub/fhir/conformance.py.
EXT_RESPONSIBLE_COMMISSIONER: Final = DEFAULT_NAMESPACES.extension("S117-ResponsibleCommissioner")
EXT_COORDINATING_COUNCIL: Final = DEFAULT_NAMESPACES.extension("S117-CoordinatingCouncil")
# Complex: aspect (code), explanation (string), citation (string), rule (code).
EXT_DETERMINATION: Final = DEFAULT_NAMESPACES.extension("S117-Determination")
# Complex: dueDate (date), kind (code).
EXT_NEXT_REVIEW: Final = DEFAULT_NAMESPACES.extension("S117-NextReview")
EXT_EVENT_OCCURRED: Final = DEFAULT_NAMESPACES.extension("S117-EventOccurred")

# Org.kind values that carry a GSS code; every other kind carries an ODS code.
GSS_ORG_KINDS: Final = frozenset({"council"})


def org_identifier_system(kind: str) -> str:
    return GSS_CODE_SYSTEM if kind in GSS_ORG_KINDS else ODS_ORGANIZATION_SYSTEM
