"""The canonical JSON register change a trust pushes to POST /v1/register-changes.

contracts/register-change.schema.json is generated from this model
(`s117hub contracts`), and a test fails if the two drift apart.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hub.domain.model import ChangeType, DischargeReason, DisputeKind
from hub.domain.rules.legal_status import CpiaOrderType


def _ods(description: str = "ODS organisation or site code"):  # noqa: ANN202
    return Field(default=None, pattern=r"^[A-Z0-9]{3,6}$", description=description)


def _gss(description: str = "ONS GSS code of a local authority"):  # noqa: ANN202
    return Field(default=None, pattern=r"^[EWSN][0-9]{8}$", description=description)


class PersonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nhs_number: str = Field(description="10-digit NHS number (spaces allowed)")
    given_name: str | None = Field(default=None, max_length=100)
    family_name: str | None = Field(default=None, max_length=100)
    birth_date: date | None = None
    postcode: str | None = Field(default=None, max_length=10)


class DischargeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    council_agrees: bool
    commissioner_agrees: bool
    reasons: list[DischargeReason] = Field(min_length=1)
    participants: list[str] = Field(min_length=1)
    person_involved: bool


class DisputeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dispute_id: str = Field(min_length=1, max_length=100)
    kind: DisputeKind
    parties: list[str] = Field(min_length=2)
    resolved_responsible: str | None = None


class RegisterChangeIn(BaseModel):
    """One change to a person's s117 register entry, as a source system reports it."""

    model_config = ConfigDict(extra="forbid", title="S117RegisterChange")

    schema_version: Literal["1"] = "1"
    source_system: str = Field(min_length=1, max_length=100, description="Reporting system, e.g. 'RiO'")
    source_message_id: str = Field(min_length=1, max_length=200, description="Unique per source; the idempotency key")
    change_type: ChangeType
    effective_date: date
    notified_on: date | None = Field(default=None, description="When notice of the change was received; defaults to today")
    person: PersonIn
    legal_status_code: str | None = Field(default=None, pattern=r"^[0-9]{1,2}$", description="England MHA legal status code")
    order_type: CpiaOrderType | None = Field(
        default=None, description="With legal status 31 (CP(I)A 1964), the order the court made: hospital-order "
        "(with or without a restriction order; qualifies for s117), supervision-order or absolute-discharge")
    hospital_ods: str | None = _ods("ODS code of the hospital site or trust")
    gp_practice_ods: str | None = _ods("ODS code of the GP practice the person is registered with")
    residence_la_gss: str | None = _gss("Council of ordinary residence")
    no_fixed_abode: bool = False
    discharge_destination_la_gss: str | None = _gss("Council of the discharge destination")
    from_prison: bool = False
    discharge: DischargeIn | None = None
    dispute: DisputeIn | None = None
    review_reason: str | None = Field(default=None, max_length=200)
    already_receiving_s117_from: str | None = _ods("Commissioner already funding s117 aftercare, if any")
