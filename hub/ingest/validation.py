"""Checks beyond the JSON shape: reference codes, check digits, possible dates,
and what each kind of change must carry. Each problem names the field and the
reason and never quotes the value (values may be personal data)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import ValidationError

from hub.domain.model import ChangeType
from hub.domain.ports import ReferenceData
from hub.domain.rules.legal_status import CPIA_ORDER_TYPES
from hub.ingest import contract
from hub.ingest.contract import RegisterChangeIn
from hub.ingest.nhs_number import nhs_number_problem

# The Mental Health Act 1983 came into force on 30 September 1983.
MHA_COMMENCEMENT = date(1983, 9, 30)


UNKNOWN_KEY = "(unknown key)"
MAX_NAMED_KEY = 64
ORDER_CODES = ", ".join(CPIA_ORDER_TYPES)

DATE_REASON = "must be a date written YYYY-MM-DD"
FLAG_REASON = "must be true or false"
# The contract's fields that are dates (contract.IsoDate): any error on one is told as DATE_REASON.
DATE_FIELDS = frozenset({"effective_date", "notified_on", "person.birth_date"})
_NO_CONTROLS = "control characters or Unicode bidirectional formatting characters (U+200E, U+200F, U+202A-U+202E, " \
    "U+2066-U+2069)"
# A pattern the value does not match -> the reason (pydantic's own message quotes the pattern).
PATTERN_REASONS: dict[str, str] = {
    contract.TEXT: f"must not contain {_NO_CONTROLS}",
    contract.FREE_TEXT: f"must not contain {_NO_CONTROLS} other than tab, CR and LF",
    contract.IDENTIFIER: f"must not be blank, begin or end with whitespace, or contain {_NO_CONTROLS}",
    contract.POSTCODE: "must be a UK postcode in capitals, with or without its space (e.g. SW1A 2AA)",
    contract.ISO_DATE: DATE_REASON,
    contract.ODS: "must be an ODS code: 3 to 6 capital letters or digits",
    contract.GSS: "must be an ONS GSS code: E, W, S or N and 8 digits",
    contract.LEGAL_STATUS: "must be an England MHA legal status code: 1 or 2 digits",
}


@dataclass(frozen=True, slots=True)
class FieldProblem:
    field: str
    reason: str
    # A key the contract does not have: named to the sender in its answer, but
    # stored and logged only as "<parent>.(unknown key)": a key is free text
    # (it could be a name or a diagnosis) and the contract is closed.
    unknown_key: bool = False

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}

    def stored_dict(self) -> dict[str, str]:
        """What quarantine keeps and logs show."""
        if not self.unknown_key:
            return self.as_dict()
        parent = self.field.rpartition(".")[0] if "." in self.field else ""
        return {"field": f"{parent}.{UNKNOWN_KEY}" if parent else UNKNOWN_KEY, "reason": self.reason}


def problems_from_pydantic(exc: ValidationError) -> list[FieldProblem]:
    """Each error as the field and a reason built from the error's type (and
    pattern), never from the value."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        kind = err["type"]
        msg = err["msg"]
        unknown = kind == "extra_forbidden"
        if unknown:
            msg = "is not a field of the register change contract (it is closed: unknown keys are refused)"
            loc = loc if len(loc) <= MAX_NAMED_KEY else loc[:MAX_NAMED_KEY] + "..."
        elif kind == "missing":
            msg = "is required"
        elif kind == "value_error":  # a contract's own check: its reason, without pydantic's "Value error, "
            msg = str((err.get("ctx") or {}).get("error") or msg).removeprefix("Value error, ")
        elif loc in DATE_FIELDS:
            # A string that is not YYYY-MM-DD, another type, or a day the calendar does not have.
            msg = DATE_REASON if kind in ("string_type", "string_pattern_mismatch") \
                else f"{DATE_REASON} (a day that exists)"
        elif kind in ("bool_type", "bool_parsing"):
            msg = FLAG_REASON
        elif kind == "string_type":
            msg = "must be a string"
        elif kind == "string_pattern_mismatch":
            msg = PATTERN_REASONS.get((err.get("ctx") or {}).get("pattern"), "is not in the form the contract "
                                      "requires")
        elif loc == "expected_stay_weeks":
            msg = f"must be a whole number of weeks from 1 to {contract.MAX_EXPECTED_STAY_WEEKS}"
        elif loc == "order_type":
            msg = f"must be one of the CP(I)A 1964 order codes: {ORDER_CODES}"
        out.append(FieldProblem(loc, msg, unknown))
    return out


REQUIRED_BY_CHANGE: dict[ChangeType, tuple[str, ...]] = {
    ChangeType.DETAINED: ("legal_status_code", "hospital_ods"),
    ChangeType.SECTION_CHANGED: ("legal_status_code",),
    ChangeType.GP_CHANGED: ("gp_practice_ods",),
    ChangeType.S117_DISCHARGE_DECIDED: ("discharge",),
    ChangeType.DISPUTE_RAISED: ("dispute",),
    ChangeType.DISPUTE_RESOLVED: ("dispute",),
    ChangeType.PLACEMENT_STARTED: (),
}


# The optional facts each change type takes (hub/domain/rules/engine.py reads
# them): anything else a change carries is refused by name, never accepted
# and ignored. The GP, residence and hospital a detention, discharge, leave
# or CTO change carries are the person's on its date.
_CARE_FACTS = ("gp_practice_ods", "residence_la_gss", "no_fixed_abode", "hospital_ods")
_SECTION = ("legal_status_code", "order_type", "already_receiving_s117_from")
# A child's detention (hub/domain/children.py): the expected stay and the council maintaining an EHC plan.
_CHILD = ("expected_stay_weeks", "ehc_plan_la_gss")
USED_BY_CHANGE: dict[ChangeType, frozenset[str]] = {
    ChangeType.DETAINED: frozenset({*_CARE_FACTS, *_SECTION, "from_prison", *_CHILD}),
    ChangeType.SECTION_CHANGED: frozenset({*_CARE_FACTS, *_SECTION}),
    ChangeType.S17_LEAVE_STARTED: frozenset(_CARE_FACTS),
    ChangeType.S17_LEAVE_ENDED: frozenset(_CARE_FACTS),
    ChangeType.SECTION_ENDED_STAYED_INFORMALLY: frozenset(_CARE_FACTS),
    # The legal status at discharge evidences the detention (engine).
    ChangeType.LEFT_HOSPITAL: frozenset({*_CARE_FACTS, "legal_status_code", "order_type",
                                         "discharge_destination_la_gss"}),
    ChangeType.CTO_STARTED: frozenset({*_CARE_FACTS, *_SECTION, "discharge_destination_la_gss"}),
    ChangeType.CTO_RECALLED: frozenset(_CARE_FACTS),
    ChangeType.CTO_REVOKED: frozenset({*_CARE_FACTS, *_SECTION}),
    ChangeType.CTO_ENDED: frozenset(_CARE_FACTS),
    ChangeType.MOVED: frozenset({"residence_la_gss", "no_fixed_abode", "gp_practice_ods",
                                 "residence_before_detention_la_gss"}),
    ChangeType.GP_CHANGED: frozenset({"gp_practice_ods"}),
    ChangeType.PLACEMENT_STARTED: frozenset(),
    ChangeType.REVIEW_COMPLETED: frozenset(),
    ChangeType.REVIEW_REQUESTED: frozenset({"review_reason"}),
    ChangeType.DISCHARGE_CONSIDERED: frozenset({"review_reason"}),
    ChangeType.S117_DISCHARGE_DECIDED: frozenset({"discharge"}),
    ChangeType.DISPUTE_RAISED: frozenset({"dispute"}),
    ChangeType.DISPUTE_RESOLVED: frozenset({"dispute"}),
    ChangeType.DIED: frozenset(),
}
OPTIONAL_FACTS = (
    "legal_status_code", "order_type", "hospital_ods", "gp_practice_ods", "residence_la_gss", "no_fixed_abode",
    "discharge_destination_la_gss", "from_prison", "discharge", "dispute", "review_reason",
    "already_receiving_s117_from", *_CHILD, "residence_before_detention_la_gss",
)

# The optional facts a change type does not take, in OPTIONAL_FACTS' order (the order problems are named in).
_NOT_USED: dict[ChangeType, tuple[str, ...]] = {
    t: tuple(name for name in OPTIONAL_FACTS if name not in USED_BY_CHANGE[t]) for t in ChangeType}


UNCHECKED: Any = object()  # semantic_problems' nhs_problem when the caller has not checked the number


def semantic_problems(change: RegisterChangeIn, ref: ReferenceData, today: date,
                      nhs_problem: str | None | Any = UNCHECKED) -> list[FieldProblem]:
    """`nhs_problem`: `nhs_number_problem(change.person.nhs_number)` when the
    caller has it already (ingest's bulk path checks the number for its access
    precheck), so it is not worked out twice."""
    problems: list[FieldProblem] = []
    add = lambda f, r: problems.append(FieldProblem(f, r))  # noqa: E731

    reason = nhs_number_problem(change.person.nhs_number) if nhs_problem is UNCHECKED else nhs_problem
    if reason:
        add("person.nhs_number", reason)

    # The model's field values by name (pydantic keeps them in the instance's dict): read by
    # subscript, not a `getattr` call each (a dozen a change).
    fields = vars(change)
    for name in _NOT_USED[change.change_type]:
        value = fields[name]
        if value is not None and value is not False:
            add(name, f"is not used by a '{change.change_type.value}' change: send it on a change that "
                "takes it (or leave it out)")
    for name in REQUIRED_BY_CHANGE.get(change.change_type, ()):
        if fields[name] is None:
            add(name, f"is required for a '{change.change_type.value}' change")
    # A move that only names the successor of a split council (the person has not moved) carries no residence.
    naming_successor = change.residence_before_detention_la_gss is not None
    if change.change_type is ChangeType.DETAINED or (change.change_type is ChangeType.MOVED and not naming_successor):
        if change.residence_la_gss is None and not change.no_fixed_abode:
            add("residence_la_gss", "is required (or no_fixed_abode: true) for this change: "
                "responsibility follows ordinary residence")
    if change.no_fixed_abode and change.residence_la_gss is not None:
        # As council files refuse LA_GSS with NFA Y: one of the two decides the responsible council.
        add("residence_la_gss", "must be left out when no_fixed_abode is true: a person with no fixed abode has "
            "no council of ordinary residence")
    if change.change_type is ChangeType.DISPUTE_RESOLVED and change.dispute and not change.dispute.resolved_responsible:
        add("dispute.resolved_responsible", "is required when a dispute is resolved")

    if change.legal_status_code is not None:
        status = ref.legal_status(change.legal_status_code)
        if status is None:
            add("legal_status_code", "is not a code of the England MHA legal status classification")
        elif change.change_type is ChangeType.DETAINED and not status.detained:
            # 01 informal, 35/36 guardianship, 98 not applicable, 99 not known: none is a detention.
            add("legal_status_code", "is not a detention: a 'detained' change needs a legal status code "
                "for a formal detention (02-20, 31, 32, 37, 38)")
        elif status.s117_qualifying == "review" and not change.order_type:
            add("order_type", f"is required with legal status 31 (one of {ORDER_CODES}): only a hospital order "
                "qualifies for s117")
    if change.hospital_ods is not None and ref.hospital(change.hospital_ods) is None:
        add("hospital_ods", "is not a hospital site registered with the hub")
    if change.gp_practice_ods is not None and not ref.is_known_practice(change.gp_practice_ods):
        add("gp_practice_ods", "is not a GP practice in the ODS reference data")
    code = change.already_receiving_s117_from
    if code is not None and ref.commissioner_successor(code, today) is None \
            and ref.commissioner_successor(code, change.effective_date) is None:
        add("already_receiving_s117_from", "is not an NHS commissioner (ICB, sub-ICB location, CCG or NHS England) "
            "in the ODS reference data")
    for name in ("residence_la_gss", "discharge_destination_la_gss", "ehc_plan_la_gss"):
        code = fields[name]
        if code is not None and not ref.is_known_council_code(code):
            add(name, "is not an English social services authority (GSS) code")

    successor = change.residence_before_detention_la_gss
    if successor is not None:
        current = ref.council(successor, today) if ref.is_known_council_code(successor) else None
        if current is None or current.code != successor:
            add("residence_before_detention_la_gss", "must be the GSS code of a council in place today: a successor "
                "of the split council the person query's responsibility_undetermined names")

    if change.effective_date > today:
        add("effective_date", "is in the future")
    if change.effective_date < MHA_COMMENCEMENT:
        add("effective_date", "is before the Mental Health Act 1983 came into force (1983-09-30)")
    if change.notified_on is not None:
        if change.notified_on > today:
            add("notified_on", "is in the future")
        if change.notified_on < change.effective_date:
            add("notified_on", "is before the effective date of the change")
    birth = change.person.birth_date
    if birth is not None:
        if birth > today:
            add("person.birth_date", "is in the future")
        elif birth > change.effective_date:
            add("person.birth_date", "is after the effective date of the change")
        elif today.year - birth.year > 125:
            add("person.birth_date", "is more than 125 years ago")
    return problems
