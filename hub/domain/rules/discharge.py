"""The discharge guard: when a joint s117 discharge decision may take effect."""

from __future__ import annotations

from collections.abc import Callable

from hub.domain import citations
from hub.domain.model import DischargeDecision, DischargeReason, Determination, S117Status

LAWFUL_REASONS = frozenset({DischargeReason.NO_LONGER_NEEDS_SERVICES})

FORBIDDEN_REASON_WORDS: dict[DischargeReason, str] = {
    DischargeReason.REFUSED_PLAN: "the person refused the aftercare plan",
    DischargeReason.DISCHARGED_FROM_SPECIALIST_SERVICES: "discharged from specialist mental health services",
    DischargeReason.TIME_PASSED: "an arbitrary period has passed",
    DischargeReason.DEPRIVED_OF_LIBERTY_MCA: "deprived of liberty under the Mental Capacity Act",
    DischargeReason.RETURNED_INFORMALLY_OR_S2: "returned to hospital informally or under s2",
    DischargeReason.NO_LONGER_ON_CTO_OR_S17_LEAVE: "no longer on a CTO or s17 leave",
}

GuardCheck = Callable[[S117Status, DischargeDecision], str | None]


def _not_entitled(status: S117Status, decision: DischargeDecision) -> str | None:
    if status.entitled:
        return None
    return "there is no open s117 entitlement to discharge"


def _on_cto(status: S117Status, decision: DischargeDecision) -> str | None:
    return "the person is on a community treatment order" if status.on_cto else None


def _not_joint(status: S117Status, decision: DischargeDecision) -> str | None:
    missing = [
        body
        for body, agrees in (("council", decision.council_agrees), ("NHS commissioner", decision.commissioner_agrees))
        if not agrees
    ]
    return f"the {' and the '.join(missing)} did not agree" if missing else None


def _no_reasons(status: S117Status, decision: DischargeDecision) -> str | None:
    return "no reasons were recorded" if not decision.reasons else None


def _no_participants(status: S117Status, decision: DischargeDecision) -> str | None:
    return "the participants in the decision were not recorded" if not decision.participants else None


def _person_not_involved(status: S117Status, decision: DischargeDecision) -> str | None:
    return "the person was not involved in the decision" if not decision.person_involved else None


def _only_forbidden_reasons(status: S117Status, decision: DischargeDecision) -> str | None:
    if not decision.reasons or LAWFUL_REASONS.intersection(decision.reasons):
        return None
    grounds = "; ".join(FORBIDDEN_REASON_WORDS[reason] for reason in decision.reasons)
    return f"the only grounds given are ones the policies forbid ({grounds})"


# Checked in order; every failing rule is named, the first one leads.
DISCHARGE_GUARDS: tuple[tuple[str, str, GuardCheck], ...] = (
    ("not-entitled", citations.DISCHARGE_NOT_ENTITLED, _not_entitled),
    ("cto-blocks-discharge", citations.DISCHARGE_CTO, _on_cto),
    ("joint-agreement-required", citations.DISCHARGE_JOINT, _not_joint),
    ("reasons-required", citations.DISCHARGE_REASONS_RECORDED, _no_reasons),
    ("participants-required", citations.DISCHARGE_REASONS_RECORDED, _no_participants),
    ("person-involvement-required", citations.DISCHARGE_PERSON_INVOLVED, _person_not_involved),
    ("forbidden-sole-grounds", citations.DISCHARGE_FORBIDDEN_GROUNDS, _only_forbidden_reasons),
)


def check_discharge(status_before: S117Status, decision: DischargeDecision) -> Determination | None:
    """None when the decision may end entitlement; otherwise the refusal, rule named."""
    failures = [
        (rule, citation, why)
        for rule, citation, check in DISCHARGE_GUARDS
        if (why := check(status_before, decision)) is not None
    ]
    if not failures:
        return None
    rules = ", ".join(rule for rule, _, _ in failures)
    reasons = "; ".join(f"{why} ({citation})" for _, citation, why in failures)
    unique_citations = "; ".join(dict.fromkeys(citation for _, citation, _ in failures))
    return Determination(
        org=None,
        explanation=f"s117 discharge refused [{rules}]: {reasons}",
        citation=unique_citations,
        rule=failures[0][0],
    )
