"""The package message contract (REST body; council-file package rows map to it)."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr
from typing import Annotated

from hub.domain.money import COHORTS
from hub.ingest.contract import IsoDate
from hub.ingest.validation import FieldProblem

MAX_PENCE = 10**9  # £10m a week or a unit: anything larger is a keying error

def _in_range(value: date) -> date:
    # Costs are prorated by the day; a date far outside any package's life is a keying error.
    if value < date(2000, 1, 1):
        raise ValueError(RANGE_REASON.format(side="before 2000-01-01"))
    if value > date(2100, 12, 31):
        raise ValueError(RANGE_REASON.format(side="after 2100-12-31"))
    return value


# The value of the ValueError is the reason given (hub/ingest/validation.py
# `problems_from_pydantic`, for a value error): never the value itself.
RANGE_REASON = "is {side}: a package line's dates are from 2000-01-01 to 2100-12-31"


# YYYY-MM-DD strings only, as the register-change contract takes dates (hub/ingest/contract.py
# `IsoDate`): pydantic's lax date also read a Unix time (1735776000) or "20250102" as a date.
Day = Annotated[IsoDate, AfterValidator(_in_range)]


def _whole_pence(value: object) -> object:
    """An amount is a JSON integer of pence, nothing the lax int would read as one: `true` (1 penny),
    a string ("1250" could be pence or pounds; "12.50" is refused anyway) or a number with a
    decimal point (1250.0: pounds meant, or pence?). Each is refused naming the field, as the
    register-change contract coerces no type either. Council files write pounds, which their
    mapping turns into whole pence before this (adapters/council_files/mapping.py `_money`)."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number of pence, not true or false")
    if isinstance(value, str):
        raise ValueError("must be a whole number of pence as a JSON number, not a string")
    if isinstance(value, float):
        raise ValueError("must be a whole number of pence, without a decimal point")
    return value


Pence = Annotated[int, BeforeValidator(_whole_pence)]

ORG_CODE = re.compile(r"[A-Z0-9]{3,6}|[EWSN][0-9]{8}")
RECORDED_BY_REASON = ("must be the ODS or GSS code of the body that recorded the line (the line's `recorded_by` "
                      "in the person query's funding part): 3 to 6 capital letters or digits, or E, W, S or N and "
                      "8 digits")


def _org_code(value: str) -> str:
    if not ORG_CODE.fullmatch(value):
        raise ValueError(RECORDED_BY_REASON)
    return value


OrgCode = Annotated[StrictStr, AfterValidator(_org_code)]

Cohort = Literal["adult", "older-adult", "learning-disability", "children-young-people"]
assert set(Cohort.__args__) == set(COHORTS)  # type: ignore[attr-defined]


class ProviderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["ods", "council"] = Field(description="ods: an NHS organisation's ODS code; council: the "
                                                        "council's own provider id")
    code: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,39}$")


class PersonRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nhs_number: str


class PackageIn(BaseModel):
    """One package line event: start, change (from effective_date) or end (on effective_date)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal["1"] = "1"
    source_message_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$")
    action: Literal["start", "change", "end"]
    package_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$", description="the sender's id for the line")
    person_id: str | None = Field(default=None, max_length=36, description="the hub's person id, or person")
    person: PersonRef | None = None
    effective_date: Day
    end_date: Day | None = None
    # A label shown in statements (JSON, CSV, PDF): no control characters (a NUL
    # cannot be stored in PostgreSQL text; a tab or line break starts a CSV formula or a row).
    service_type: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    provider: ProviderIn | None = None
    need: Literal["health", "social-care", "joint"] | None = None
    weekly_cost_pence: Pence | None = Field(default=None, ge=0, le=MAX_PENCE)
    unit_cost_pence: Pence | None = Field(default=None, ge=0, le=MAX_PENCE)
    units_per_week: Decimal | None = Field(default=None, ge=0, le=1000, max_digits=8, decimal_places=2)
    s117_eligible: StrictBool | None = None  # true / false only, not "yes", "1" or 1 (as register changes)
    exclusion: Literal["nhs-funded-nursing-care", "universal-service", "top-up"] | None = None
    s17_leave: StrictBool | None = None
    cohort: Cohort | None = None
    paid_by: Literal["council", "icb"] | None = None
    # A change or an end of a line another body's system recorded: that body's code (the line's `recorded_by`
    # in the person query's funding part); the line is then the one with this package_id it recorded for the
    # person. Without it, the line is the sender's own. Who may write it: hub/money/service.py.
    line_recorded_by: OrgCode | None = Field(default=None, description=(
        "for a change or an end of a line another body recorded: the ODS or GSS code the person query shows as "
        "the line's recorded_by; without it, the line is the sender's own"))


START_REQUIRED = ("service_type", "provider", "need")


def package_problems(p: PackageIn) -> list[FieldProblem]:
    """What the contract's types cannot say: which fields an action needs."""
    out: list[FieldProblem] = []
    if (p.person_id is None) == (p.person is None):
        out.append(FieldProblem("person_id", "give the hub's person_id or person.nhs_number, one of them"))
    weekly, unit = p.weekly_cost_pence is not None, p.unit_cost_pence is not None
    if weekly and (unit or p.units_per_week is not None):
        out.append(FieldProblem("weekly_cost_pence", "give a weekly cost or a unit cost with units_per_week, "
                                                     "not both"))
    if unit != (p.units_per_week is not None):
        out.append(FieldProblem("units_per_week" if unit else "unit_cost_pence",
                                "a unit cost and units_per_week go together"))
    if p.action == "start":
        out += [FieldProblem(f, f"is required to start a line") for f in START_REQUIRED if getattr(p, f) is None]
        if not weekly and not unit:
            out.append(FieldProblem("weekly_cost_pence", "is required to start a line (or unit_cost_pence with "
                                                         "units_per_week)"))
    if p.end_date is not None and p.end_date < p.effective_date:
        out.append(FieldProblem("end_date", "is before effective_date"))
    if p.action == "start" and p.line_recorded_by is not None:
        out.append(FieldProblem("line_recorded_by", "a start records a line of the sender's own: line_recorded_by "
                                                    "names another body's line to change or end"))
    if p.action == "end":
        extra = [f for f in ("service_type", "provider", "need", "weekly_cost_pence", "unit_cost_pence",
                             "units_per_week", "end_date") if getattr(p, f) is not None]
        out += [FieldProblem(f, "an end takes only its effective_date (the last day of the line)") for f in extra]
    return out


class SplitDecisionIn(BaseModel):
    """One person's split (panel decision, needs-matrix result at review, agreed
    exception), proposed by one of the person's responsible bodies."""

    model_config = ConfigDict(extra="forbid")
    person_id: str = Field(max_length=36)
    kind: Literal["panel", "matrix", "exception"]
    council_share_percent: Decimal = Field(ge=0, le=100, max_digits=5, decimal_places=2)
    effective_from: Day
    reference: str = Field(min_length=1, max_length=100, pattern=r"^[^\r\n]*$",
                           description="the panel minute or review id (never a name)")
