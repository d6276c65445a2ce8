"""Aftercare packages: per person, lines of services with their cost.

A line is one service (supported accommodation, a support worker's hours,
day opportunities ...) from one provider, at a weekly cost or a unit cost and
a number of units a week, from a start date to an end date (inclusive; open
while in force). A change of cost or provider does not rewrite the line: it
ends the current version the day before and starts a new version, so a month
that straddles the change is charged at each rate for its own days.

What a line meets decides whether it counts towards the s117 total:
- a need that does not arise from the mental disorder is not s117 aftercare
  (`s117_eligible` false; Bucks "Distinguishing between needs");
- NHS-funded nursing care is outside the s117 total (FOI Q5; Worcs 10.1);
- universal services (GP, CMHT activity, community nursing, medication) are
  never counted (FOI Q4);
- an accommodation top-up the person chooses is theirs (Worcs 8.3, 13.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from hub.domain.agreements import NeedTag

# Cohorts the area agreements and the oversight report know (FOI Q2a names
# learning disability and children and young people).
COHORTS = ("adult", "older-adult", "learning-disability", "children-young-people")
PAYERS = ("council", "icb")


class Exclusion(StrEnum):
    NHS_FUNDED_NURSING_CARE = "nhs-funded-nursing-care"
    UNIVERSAL_SERVICE = "universal-service"
    TOP_UP = "top-up"


class PackageAction(StrEnum):
    START = "start"
    CHANGE = "change"
    END = "end"


@dataclass(frozen=True, slots=True)
class Provider:
    kind: str  # "ods" (an NHS organisation) or "council" (a council's own provider id)
    code: str


@dataclass(frozen=True, slots=True)
class PackageLine:
    """One version of one package line."""

    source: str  # the client that recorded it
    package_id: str  # the sender's id for the line
    version: int
    person_id: str
    council: str  # the pair that funds it: the person's responsible council (GSS) ...
    icb: str  # ... and ICB (ODS), as on the line's start
    paid_by: str  # "council" or "icb": who pays the provider and recharges the other
    service_type: str
    provider: Provider
    need: NeedTag
    start: date
    end: date | None = None  # inclusive; None while in force
    weekly_cost_pence: int | None = None
    unit_cost_pence: int | None = None
    units_per_week: Decimal | None = None
    s117_eligible: bool = True
    exclusion: Exclusion | None = None
    s17_leave: bool = False
    cohort: str = "adult"
    # The ODS or GSS code of the body whose system recorded the line (its `source`'s organisation), as the
    # person query shows it: with `package_id`, how another body names the line to change or end it
    # (hub/money/service.py). Not part of what the line is or costs.
    recorded_by: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if (self.weekly_cost_pence is None) == (self.unit_cost_pence is None):
            raise ValueError("a line has a weekly cost or a unit cost, not both or neither")
        if self.unit_cost_pence is not None and self.units_per_week is None:
            raise ValueError("a unit cost needs units_per_week")
        if self.end is not None and self.end < self.start:
            raise ValueError("a line cannot end before it starts")

    @property
    def weekly_cost(self) -> Decimal:
        """Pence a week, exact (a unit cost times fractional units is not rounded here)."""
        if self.weekly_cost_pence is not None:
            return Decimal(self.weekly_cost_pence)
        assert self.unit_cost_pence is not None and self.units_per_week is not None
        return Decimal(self.unit_cost_pence) * self.units_per_week

    def in_force(self, day: date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)

    def overlaps(self, first: date, last: date) -> bool:
        return self.start <= last and (self.end is None or self.end >= first)


@dataclass(frozen=True, slots=True)
class PackageProblem:
    field: str
    reason: str


# Fields a change may carry; a field left out keeps the current version's value.
CHANGEABLE = ("service_type", "provider", "need", "weekly_cost_pence", "unit_cost_pence", "units_per_week",
              "s117_eligible", "exclusion", "s17_leave", "cohort", "paid_by", "end")


def apply_action(
    versions: list[PackageLine], action: PackageAction, effective: date, new: PackageLine | None,
    changes: dict[str, Any] | None = None,
) -> tuple[list[PackageLine], list[PackageProblem]]:
    """Apply a start / change / end to a line's versions (oldest first).

    Returns the versions to write (the updated latest, and the new one), or
    problems naming the field. `new` is the full line for a start; `changes`
    the fields a change sets."""
    latest = versions[-1] if versions else None
    if action is PackageAction.START:
        if latest is not None:
            return [], [PackageProblem("package_id", "is already started: send a change or an end for it")]
        assert new is not None
        return [replace(new, version=1, start=effective)], []
    if latest is None:
        return [], [PackageProblem("package_id", "has not been started: send a start first")]
    if effective < latest.start or (action is PackageAction.CHANGE and effective == latest.start):
        return [], [PackageProblem("effective_date", "must be after the day the line's current version started: "
                                                     "an earlier version is never rewritten")]
    if latest.end is not None and effective > latest.end:
        return [], [PackageProblem("effective_date", "is after the line ended")]
    if action is PackageAction.END:
        return [replace(latest, end=effective)], []
    changes = dict(changes or {})
    if "weekly_cost_pence" in changes and changes["weekly_cost_pence"] is not None:
        changes.setdefault("unit_cost_pence", None)
        changes.setdefault("units_per_week", None)
    if changes.get("unit_cost_pence") is not None:
        changes.setdefault("weekly_cost_pence", None)
    unknown = set(changes) - set(CHANGEABLE)
    if unknown:
        return [], [PackageProblem(sorted(unknown)[0], "cannot be changed on a line")]
    try:
        successor = replace(latest, version=latest.version + 1, start=effective,
                            **{"end": latest.end, **changes})
    except ValueError as exc:
        return [], [PackageProblem("weekly_cost_pence", str(exc))]
    return [replace(latest, end=effective - timedelta(days=1)), successor], []
