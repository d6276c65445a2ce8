"""SWIFT-style EVENT codes and the canonical change each one means.

A council reports what its case system records for s117: where the person
lives, their GP, placements, reviews, the joint decision to end aftercare,
ordinary-residence and commissioner disputes, and death (Bucks protocol:
"SWIFT(AIS) would be used to flag reviews"; s117-domain.md "The register").
It does not report detentions, leave, leaving hospital or CTOs: those are the
detaining trust's to report, and a council row claiming one is refused with
the reason rather than mapped.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.domain.model import ChangeType, DischargeReason, DisputeKind


@dataclass(frozen=True, slots=True)
class EventSpec:
    change_type: ChangeType
    # Columns this event reads beyond the common ones (record, dates, person).
    # Other columns may be filled (a SWIFT export fills every column it has)
    # and are ignored for this event.
    uses: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()  # of `uses`: must be non-blank


# Columns every event reads.
COMMON_COLUMNS = ("RECORD_ID", "EVENT", "EFFECTIVE_DATE", "NOTIFIED_DATE", "NHS_NO", "SURNAME", "FORENAME",
                  "DOB", "POSTCODE")

_DISCHARGE = ("LA_AGREES", "NHS_AGREES", "PERSON_INVOLVED", "END_REASONS", "PARTICIPANTS")

COUNCIL_EVENTS: dict[str, EventSpec] = {
    # LA_GSS is the council of ordinary residence after the move; NFA=Y instead
    # when the person has no fixed abode (one of the two is required, unless the
    # row only names, in PRE_DETENTION_LA_GSS, the successor of a council split
    # between several successors whose area covers the residence before the
    # detention: the person has not moved; hazard H-03).
    "ADDR_CHANGE": EventSpec(ChangeType.MOVED, uses=("LA_GSS", "NFA", "PRE_DETENTION_LA_GSS")),
    "GP_CHANGE": EventSpec(ChangeType.GP_CHANGED, uses=("GP_ODS",), requires=("GP_ODS",)),
    "PLACEMENT": EventSpec(ChangeType.PLACEMENT_STARTED),
    "REVIEW_DONE": EventSpec(ChangeType.REVIEW_COMPLETED),
    "REVIEW_REQ": EventSpec(ChangeType.REVIEW_REQUESTED, uses=("REVIEW_REASON",)),
    "END_CONSIDERED": EventSpec(ChangeType.DISCHARGE_CONSIDERED),
    "S117_END": EventSpec(ChangeType.S117_DISCHARGE_DECIDED, uses=_DISCHARGE, requires=_DISCHARGE),
    "DISPUTE_RAISED": EventSpec(ChangeType.DISPUTE_RAISED, uses=("DISPUTE_ID", "DISPUTE_TYPE", "DISPUTE_PARTIES"),
                                requires=("DISPUTE_ID", "DISPUTE_TYPE", "DISPUTE_PARTIES")),
    "DISPUTE_RESOLVED": EventSpec(
        ChangeType.DISPUTE_RESOLVED,
        uses=("DISPUTE_ID", "DISPUTE_TYPE", "DISPUTE_PARTIES", "RESOLVED_RESPONSIBLE"),
        requires=("DISPUTE_ID", "DISPUTE_TYPE", "DISPUTE_PARTIES", "RESOLVED_RESPONSIBLE")),
    "DECEASED": EventSpec(ChangeType.DIED),
}

_TRUST_ONLY = ("a council does not report detentions, leave, leaving hospital or community treatment orders: "
               "the detaining trust reports them")

# Codes a council system might carry for the detaining trust's changes, with the change each claims:
# a row with one is about that change (MappedRow.about), which the access policy refuses a council
# (trust-only-change-type) before anything of the row is kept.
TRUST_EVENTS: dict[str, ChangeType] = {
    "ADMISSION": ChangeType.DETAINED, "DETAINED": ChangeType.DETAINED, "DETENTION": ChangeType.DETAINED,
    "SECTION_CHANGE": ChangeType.SECTION_CHANGED, "S17_LEAVE_START": ChangeType.S17_LEAVE_STARTED,
    "S17_LEAVE_END": ChangeType.S17_LEAVE_ENDED, "LEFT_HOSPITAL": ChangeType.LEFT_HOSPITAL,
    "HOSP_DISCHARGE": ChangeType.LEFT_HOSPITAL, "INFORMAL": ChangeType.SECTION_ENDED_STAYED_INFORMALLY,
    "CTO_START": ChangeType.CTO_STARTED, "CTO_RECALL": ChangeType.CTO_RECALLED,
    "CTO_REVOKE": ChangeType.CTO_REVOKED, "CTO_END": ChangeType.CTO_ENDED,
}

# Codes a council system might carry that the hub recognises and refuses, with why.
REFUSED_EVENTS: dict[str, str] = {
    "S117_START": ("is not a council event: s117 entitlement starts from the qualifying detention and leaving "
                   "hospital, which the detaining trust reports; the hub then tells the council"),
    **{code: "is a trust event: " + _TRUST_ONLY for code in TRUST_EVENTS},
}

COUNCIL_CHANGE_TYPES = frozenset(spec.change_type for spec in COUNCIL_EVENTS.values())
# The hub's own wire codes for trust-only changes are refused the same way.
for _ct in ChangeType:
    if _ct not in COUNCIL_CHANGE_TYPES:
        _code = _ct.value.upper().replace("-", "_")
        TRUST_EVENTS.setdefault(_code, _ct)
        REFUSED_EVENTS.setdefault(_code, "is a trust event: " + _TRUST_ONLY)

# END_REASONS codes (';'-separated). Only NO_NEED is a lawful ground on its
# own (Worcs 16.1); the others are recorded so the hub can refuse a decision
# resting on them alone (Worcs 16.9; Bucks list).
DISCHARGE_REASON_CODES: dict[str, DischargeReason] = {
    "NO_NEED": DischargeReason.NO_LONGER_NEEDS_SERVICES,
    "REFUSED_PLAN": DischargeReason.REFUSED_PLAN,
    "DISCH_SPECIALIST": DischargeReason.DISCHARGED_FROM_SPECIALIST_SERVICES,
    "TIME_PASSED": DischargeReason.TIME_PASSED,
    "DOLS_MCA": DischargeReason.DEPRIVED_OF_LIBERTY_MCA,
    "INFORMAL_OR_S2": DischargeReason.RETURNED_INFORMALLY_OR_S2,
    "CTO_S17_ENDED": DischargeReason.NO_LONGER_ON_CTO_OR_S17_LEAVE,
}

# ---------------------------------------------------------------- packages
# Aftercare package lines (hub/domain/money): not register changes, so they
# map to the package contract (hub/money/contract.py) instead.


@dataclass(frozen=True, slots=True)
class PackageSpec:
    action: str  # start, change, end
    uses: tuple[str, ...]
    requires: tuple[str, ...]


PACKAGE_COLUMNS = ("PACKAGE_ID", "SERVICE_TYPE", "PROVIDER_TYPE", "PROVIDER", "NEED", "WEEKLY_COST", "UNIT_COST",
                   "UNITS_PER_WEEK", "S117_NEED", "EXCLUSION", "S17_LEAVE", "COHORT", "PAID_BY", "END_DATE")
# Columns a package record reads besides these (no name, date of birth or
# postcode: a package needs none of them).
PACKAGE_COMMON = ("RECORD_ID", "EVENT", "EFFECTIVE_DATE", "NHS_NO")

PACKAGE_EVENTS: dict[str, PackageSpec] = {
    "PKG_START": PackageSpec("start", PACKAGE_COLUMNS,
                             ("PACKAGE_ID", "SERVICE_TYPE", "PROVIDER_TYPE", "PROVIDER", "NEED")),
    "PKG_CHANGE": PackageSpec("change", PACKAGE_COLUMNS, ("PACKAGE_ID",)),
    "PKG_END": PackageSpec("end", ("PACKAGE_ID",), ("PACKAGE_ID",)),
}

NEED_CODES = {"H": "health", "SC": "social-care", "J": "joint"}
EXCLUSION_CODES = {"FNC": "nhs-funded-nursing-care", "UNIVERSAL": "universal-service", "TOPUP": "top-up"}
PROVIDER_KIND_CODES = {"ODS": "ods", "LA": "council"}
COHORT_CODES = {"AD": "adult", "OA": "older-adult", "LD": "learning-disability", "CYP": "children-young-people"}
PAYER_CODES = {"LA": "council", "ICB": "icb"}

DISPUTE_KIND_CODES: dict[str, DisputeKind] = {"LA": DisputeKind.COUNCIL, "NHS": DisputeKind.COMMISSIONER}
