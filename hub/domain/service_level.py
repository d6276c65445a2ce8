"""The register service level: a change recorded within 5 working days of notice."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from datetime import date
from typing import Literal

from hub.domain import citations
from hub.domain.working_days import add_working_days, working_days_between

REGISTER_DEADLINE_WORKING_DAYS = 5

ServiceLevelState = Literal["met", "near-breach", "breach"]


@dataclass(frozen=True, slots=True)
class ServiceLevel:
    deadline: date
    working_days_taken: int
    state: ServiceLevelState
    explanation: str
    citation: str = citations.REGISTER_SERVICE_LEVEL


@lru_cache(maxsize=4096)  # a pure function of its arguments; a council file's rows share a few days
def register_service_level(
    notified_on: date,
    recorded_on: date,
    holidays: frozenset[date],
    near_breach_days: int = 1,
) -> ServiceLevel:
    """Whether recording on `recorded_on` met the 5-working-day register rule.

    A near-breach is a recording within `near_breach_days` working days of
    the deadline: met, but only just, which oversight groups want to see
    before it becomes a breach.
    """
    if near_breach_days < 0:
        raise ValueError("near_breach_days must not be negative")
    deadline = add_working_days(notified_on, REGISTER_DEADLINE_WORKING_DAYS, holidays)
    taken = working_days_between(notified_on, recorded_on, holidays)
    if taken > REGISTER_DEADLINE_WORKING_DAYS:
        state: ServiceLevelState = "breach"
        verdict = "breached"
    elif taken > REGISTER_DEADLINE_WORKING_DAYS - near_breach_days:
        state = "near-breach"
        verdict = "met, near the limit"
    else:
        state = "met"
        verdict = "met"
    explanation = (
        f"register service level {verdict}: recorded {taken} working day(s) after notice "
        f"on {notified_on.isoformat()}, deadline {deadline.isoformat()} "
        f"({REGISTER_DEADLINE_WORKING_DAYS} working days, {citations.REGISTER_SERVICE_LEVEL})"
    )
    return ServiceLevel(deadline=deadline, working_days_taken=taken, state=state, explanation=explanation)
