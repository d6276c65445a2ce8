"""The canonical JSON register change a trust pushes to POST /v1/register-changes.

contracts/register-change.schema.json is generated from this model
(`s117hub contracts`), and a test fails if the two drift apart.

Types are taken as the schema states them, never coerced (a Unix time or a
datetime is not a date, "yes" or 1 is not true), and every string refuses
control and bidirectional-formatting characters: all of it is pydantic-core's
own work (strict types, patterns), no Python runs per field. The reasons
named for each pattern are in hub/ingest/validation.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

import orjson

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, StrictBool
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from hub.domain.model import ChangeType, DischargeReason, DisputeKind
from hub.domain.rules.legal_status import CpiaOrderType

# What no string of the contract may hold: C0 and C1 control characters (with
# DEL) and the Unicode bidirectional formatting characters (LRM / RLM, the
# embeddings and overrides U+202A-U+202E, the isolates U+2066-U+2069), which
# reorder what a person reads in a console or a letter. The patterns are
# written for both pydantic-core's regex engine and JSON Schema's (ECMA-262).
_BIDI = r"\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROLS = r"\x00-\x1f\x7f-\x9f"
TEXT = rf"^[^{_CONTROLS}{_BIDI}]*$"
# Free text (a review reason): tab, LF and CR allowed (a council file's quoted cell may hold line breaks).
FREE_TEXT = rf"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_BIDI}]*$"
# An identifier: not blank, no leading or trailing whitespace; inner spaces allowed ("SWIFT (council file)").
IDENTIFIER = rf"^[^\s{_CONTROLS}{_BIDI}](?:[^{_CONTROLS}{_BIDI}]*[^\s{_CONTROLS}{_BIDI}])?$"
# A UK postcode in capitals, the inward code with or without its space (council files check theirs with it:
# adapters/council_files/mapping.py _POSTCODE).
POSTCODE = r"^[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}$"
ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
ODS = r"^[A-Z0-9]{3,6}$"
GSS = r"^[EWSN][0-9]{8}$"
LEGAL_STATUS = r"^[0-9]{1,2}$"
# An NHS number's form as JSON Schema states it: ten ASCII digits, ASCII spaces anywhere ("943 476 5919").
NHS_NUMBER_FORM = r"^ *(?:[0-9] *){10}$"
MAX_EXPECTED_STAY_WEEKS = 260  # five years: a longer expectation is not a number of weeks anyone plans by

Text = Annotated[str, Field(strict=True, pattern=TEXT)]
FreeText = Annotated[str, Field(strict=True, pattern=FREE_TEXT)]
Identifier = Annotated[str, Field(strict=True, pattern=IDENTIFIER)]


@dataclass(frozen=True)
class Written:
    """A value taken only as a string of `pattern`, then read by pydantic-core's `read` schema (which
    refuses a day that does not exist): pydantic's lax `date` also takes a Unix time (an int, a float,
    "20250106") and a datetime at midnight, its lax `datetime` a Unix time and a bare date. Both steps in
    pydantic-core; JSON Schema shows a string of `json_format`."""

    pattern: str
    read: Callable[[], CoreSchema]
    json_format: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.chain_schema([core_schema.str_schema(strict=True, pattern=self.pattern), self.read()])

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"type": "string", "format": self.json_format}


# A calendar date written YYYY-MM-DD, and nothing else.
_IsoDate = Written(ISO_DATE, core_schema.date_schema, "date")
IsoDate = Annotated[date, _IsoDate]


def _ods(description: str = "ODS organisation or site code"):  # noqa: ANN202
    return Field(default=None, strict=True, pattern=ODS, description=description)


def _gss(description: str = "ONS GSS code of a local authority"):  # noqa: ANN202
    return Field(default=None, strict=True, pattern=GSS, description=description)


class PersonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Checked by hub/ingest/nhs_number.py (the reason named, the modulus-11 check digit too); the schema's
    # pattern (10 ASCII digits, spaces anywhere) tells integrators the form, and is not run here.
    nhs_number: str = Field(strict=True, description="10-digit NHS number (spaces allowed), with a valid "
                            "modulus-11 check digit", json_schema_extra={"pattern": NHS_NUMBER_FORM})
    given_name: Text | None = Field(default=None, max_length=100)
    family_name: Text | None = Field(default=None, max_length=100)
    birth_date: IsoDate | None = None
    postcode: str | None = Field(default=None, strict=True, pattern=POSTCODE, description="UK postcode in capitals")


class DischargeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    council_agrees: StrictBool
    commissioner_agrees: StrictBool
    reasons: list[DischargeReason] = Field(min_length=1)
    participants: list[Text] = Field(min_length=1)
    person_involved: StrictBool


class DisputeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dispute_id: Identifier = Field(min_length=1, max_length=100)
    kind: DisputeKind
    parties: list[Identifier] = Field(min_length=2)
    resolved_responsible: Identifier | None = None


class RegisterChangeIn(BaseModel):
    """One change to a person's s117 register entry, as a source system reports it."""

    model_config = ConfigDict(extra="forbid", title="S117RegisterChange")

    schema_version: Literal["1"] = "1"
    source_system: Identifier = Field(min_length=1, max_length=100, description="Reporting system, e.g. 'RiO'")
    source_message_id: Identifier = Field(min_length=1, max_length=200,
                                          description="Unique per source; the idempotency key")
    change_type: ChangeType
    effective_date: IsoDate
    notified_on: IsoDate | None = Field(default=None,
                                        description="When notice of the change was received; defaults to today")
    person: PersonIn
    legal_status_code: str | None = Field(default=None, strict=True, pattern=LEGAL_STATUS,
                                          description="England MHA legal status code")
    order_type: CpiaOrderType | None = Field(
        default=None, description="With legal status 31 (CP(I)A 1964), the order the court made: hospital-order "
        "(with or without a restriction order; qualifies for s117), supervision-order or absolute-discharge")
    hospital_ods: str | None = _ods("ODS code of the hospital site or trust")
    gp_practice_ods: str | None = _ods("ODS code of the GP practice the person is registered with")
    residence_la_gss: str | None = _gss("Council of ordinary residence")
    no_fixed_abode: StrictBool = False
    discharge_destination_la_gss: str | None = _gss("Council of the discharge destination")
    from_prison: StrictBool = False
    discharge: DischargeIn | None = None
    dispute: DisputeIn | None = None
    review_reason: FreeText | None = Field(default=None, max_length=200)
    already_receiving_s117_from: str | None = _ods("Commissioner already funding s117 aftercare, if any")
    # A child's detention (hub/domain/children.py): optional. HL7 v2 (PV2-10, ZU5-9) and FHIR (Encounter
    # extensions) map to them too (adapters/); council files carry no detention.
    expected_stay_weeks: int | None = Field(
        default=None, strict=True, ge=1, le=MAX_EXPECTED_STAY_WEEKS,
        description="On a detention: how many weeks the trust expects the stay in hospital to last. For a child "
        "(under 18 on the day), 12 or more sends the Children Act 1989 s85 notice to the council responsible for "
        "the child at admission (Worcs 6.1); otherwise it goes once the child has been in hospital 12 weeks")
    ehc_plan_la_gss: str | None = _gss("On a detention: the council maintaining the person's Education, Health "
                                       "and Care plan, told of the admission (Worcs 6.4)")
    # A county split between several successors (hazard H-03): the person query's responsibility_undetermined
    # names them; this names the one whose area covers the address (hub/domain/rules/engine.py).
    residence_before_detention_la_gss: str | None = _gss(
        "On a moved change: the successor council whose area covers the place of ordinary residence the "
        "responsible council was determined by, when that council has since been split between several "
        "successors (e.g. Cumbria 2023: Cumberland or Westmorland and Furness). It becomes the responsible "
        "council. Send it alone (the person has not moved: no residence_la_gss) or with a move")


def change_digest(change: RegisterChangeIn) -> str:
    """SHA-256 of what a validated change means, for the idempotency check of
    a repeated source_message_id: the same change sent again with the NHS
    number spaced, an explicit null or false where the default is meant,
    legal status "3" for "03" or its keys in another order gives the same
    digest; any difference in a value gives another. Defaults are left out,
    so a field added to the contract later does not change the digest of the
    changes recorded before it.

    Not used yet: hub/ingest/service.py still hashes the payload as sent
    (`payload_sha256`, before validation). It is to take this digest for a
    change that validates, and to accept a stored digest of either kind (the
    rows recorded before hold the raw payload's)."""
    data = change.model_dump(mode="json", exclude_defaults=True)
    person = data["person"]
    person["nhs_number"] = person["nhs_number"].replace(" ", "")
    if "legal_status_code" in data:
        data["legal_status_code"] = data["legal_status_code"].zfill(2)
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()
