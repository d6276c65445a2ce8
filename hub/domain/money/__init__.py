"""Aftercare packages and money: what a person's s117 aftercare costs, who
pays which part under the area's split in force each day, and what the
council and the ICB owe each other for a month. Standard library only.

Money is integer pence (exact); a fractional step (a unit cost times hours a
week, a week's cost over some days) is a `Decimal` rounded once, half up, to
a penny at the place `statements.py` says. Who is charged each day (the
register's pair; agreed interim dispute shares) is `responsibility.py`.
"""

from hub.domain.money.packages import (
    COHORTS,
    Exclusion,
    PackageAction,
    PackageLine,
    PackageProblem,
    Provider,
    apply_action,
)
from hub.domain.money.responsibility import InterimSpan, PairSpan, interim_spans, money_changes, pair_spans
from hub.domain.money.splits import PersonDecision, SplitRule, rule_for
from hub.domain.money.statements import (
    ROUNDING_RULES,
    LineItem,
    PersonStatement,
    Statement,
    month_bounds,
    statement_for,
)

__all__ = [
    "COHORTS", "Exclusion", "InterimSpan", "LineItem", "PairSpan", "interim_spans", "money_changes", "pair_spans", "PackageAction", "PackageLine", "PackageProblem", "PersonDecision",
    "PersonStatement", "Provider", "ROUNDING_RULES", "SplitRule", "Statement", "apply_action", "month_bounds",
    "rule_for", "statement_for",
]
