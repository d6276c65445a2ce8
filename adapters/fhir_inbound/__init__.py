"""FHIR R4 (UK Core) message Bundles pushed by trusts, mapped to the canonical register change."""

from adapters.fhir_inbound.mapping import (
    CHANGE_TYPE_SYSTEM,
    EXT_CPIA_ORDER_TYPE,
    EXT_EHC_PLAN_COUNCIL,
    EXT_EXPECTED_STAY_WEEKS,
    EXT_RESIDENCE_BEFORE_DETENTION_COUNCIL,
    EXT_RESIDENCE_COUNCIL,
    FhirProblem,
    MappingResult,
    map_message,
)

__all__ = [
    "CHANGE_TYPE_SYSTEM", "EXT_CPIA_ORDER_TYPE", "EXT_EHC_PLAN_COUNCIL", "EXT_EXPECTED_STAY_WEEKS",
    "EXT_RESIDENCE_BEFORE_DETENTION_COUNCIL", "EXT_RESIDENCE_COUNCIL", "FhirProblem", "MappingResult", "map_message",
]
