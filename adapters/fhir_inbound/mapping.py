"""FHIR R4 (UK Core) message Bundle -> the canonical register change.

Pure: bytes in, a MappingResult out; no I/O, no clock, no reference data.
The Bundle is first read with fhir.resources (R4B models, which carry R4's
shape for every resource used here) to check that it is well formed FHIR;
the mapping then walks the JSON so that every problem can name its place as
a FHIRPath-like location ("Bundle.entry[2].resource.identifier"). Problems
never quote a value: values may be personal data.

The hub's ingest validates the mapped change exactly as for REST (check
digit, ODS / GSS codes, dates, what each change type needs); `origins` maps
each canonical field back to the FHIR location it came from so that those
problems too can be reported against the FHIR message.

README.md in this folder has the mapping table and the reasons behind it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from hub.codec import duplicate_keys, json_path
from hub.domain.dates import england_day
from hub.domain.model import ChangeType
from hub.domain.rules.legal_status import CPIA_ORDER_TYPES
from hub.fhir.conformance import PROFILES, required_elements
from hub.ingest.contract import MAX_EXPECTED_STAY_WEEKS
from hub.fhir.namespaces import (
    DEFAULT_NAMESPACES,
    GSS_CODE_SYSTEM,
    HUB_FHIR_BASE,
    LEGAL_STATUS_ENGLAND_SYSTEM,
    LEGAL_STATUS_EXTENSION_URL,
    NHS_NUMBER_SYSTEM,
    ODS_ORGANIZATION_SYSTEM,
    Namespaces,
)

# The hub's inbound event codes (schemas/CodeSystem-s117-register-change-type.json);
# the codes are the values of hub.domain.model.ChangeType (a test keeps them equal).
# These two are the default base's; map_message takes the configured Namespaces.
CHANGE_TYPE_SYSTEM: Final = f"{HUB_FHIR_BASE}/CodeSystem/s117-register-change-type"
# Patient.address extension: the council (ONS GSS code) of ordinary residence.
# UK Core has no element for it: Address.district is a free-text name and
# Extension-UKCore-AddressKey carries a UPRN / PAF key, not a council.
EXT_RESIDENCE_COUNCIL: Final = f"{HUB_FHIR_BASE}/StructureDefinition/Extension-S117-ResidenceCouncil"
# Encounter extension (valueCode): with legal status 31 (CP(I)A 1964), the order the court made, one of the
# register change contract's order_type codes. UK Core's legal status extension has no element for it.
EXT_CPIA_ORDER_TYPE: Final = f"{HUB_FHIR_BASE}/StructureDefinition/Extension-S117-CpiaOrderType"
# Encounter extensions of a detention (hub/domain/children.py): the stay the trust expects, in whole weeks
# (valuePositiveInt; R4 Encounter.length is the stay's actual length, and R4 has no element for an expected one),
# and the council maintaining the person's EHC plan (valueIdentifier, the GSS system, as the residence council).
# Read on a `detained` change only: README.md, "A child's detention".
EXT_EXPECTED_STAY_WEEKS: Final = f"{HUB_FHIR_BASE}/StructureDefinition/Extension-S117-ExpectedStayWeeks"
EXT_EHC_PLAN_COUNCIL: Final = f"{HUB_FHIR_BASE}/StructureDefinition/Extension-S117-EhcPlanCouncil"
# Patient extension (valueIdentifier, the GSS system, as the residence council): the successor council whose area
# covers the residence the responsible council was determined by, after that council was split between several
# successors (hazard H-03). The register change's residence_before_detention_la_gss, which a `moved` change only
# takes: on another change ingest refuses it at its location, as REST refuses the field. README.md, "Why a hub
# extension for the successor of a split council".
EXT_RESIDENCE_BEFORE_DETENTION_COUNCIL: Final = (
    f"{HUB_FHIR_BASE}/StructureDefinition/Extension-S117-ResidenceBeforeDetentionCouncil")
NO_FIXED_ABODE_POSTCODE: Final = "ZZ993VZ"  # NHS Data Dictionary pseudo-postcode
# Change types whose content (a joint discharge decision, a dispute) has no
# FHIR mapping yet: they are taken as canonical JSON only.
NOT_CARRIED: Final = frozenset({ChangeType.S117_DISCHARGE_DECIDED, ChangeType.DISPUTE_RAISED,
                                ChangeType.DISPUTE_RESOLVED})
# FHIR R4 `id` datatype (MessageHeader.response.identifier must be one); fullmatch ("$" would let a final LF in).
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# FHIR strings hold no character below U+0020 but tab, LF and CR. In the JSON text such a character can only
# be escaped: \b, \f or \u0000-\u001f. A cheap look at the body first; the strings are walked (to name the
# location) only when it finds one (it also finds an escaped backslash before "b", which the walk then clears).
_CONTROL_ESCAPE = re.compile(rb"\\(?:[bf]|u00(?:0[0-8bcefBCEF]|1[0-9a-fA-F]))")
_NOT_FHIR_STRING = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# fhir.resources' message for an absent required choice element; it lists element names only.
_CHOICE_MISSING = re.compile(r"Expect any of field value from this list \[([^\]]*)\]")
_FULL_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}")

# OperationOutcome.issue.code values used (FHIR IssueType).
INVALID: Final = "invalid"
REQUIRED: Final = "required"
VALUE: Final = "value"
NOT_SUPPORTED: Final = "not-supported"
EXTENSION: Final = "extension"
CODE_INVALID: Final = "code-invalid"
BUSINESS_RULE: Final = "business-rule"
# FHIR R4 EncounterStatus (a required binding), and those that say the Encounter did not happen as recorded.
ENCOUNTER_STATUSES: Final = frozenset({"planned", "arrived", "triaged", "in-progress", "onleave", "finished",
                                       "cancelled", "entered-in-error", "unknown"})
NOT_HAPPENED: Final = {"entered-in-error": "was entered in error", "cancelled": "was cancelled",
                       "planned": "is only planned"}
# The change types an Encounter entered in error withdraws: the hub retracts the one change it names
# (hub/api/fhir_inbound.py, hub/retraction.py `retract_cancelled`), as an HL7 A11 / A13 does.
RETRACTABLE_IN_ERROR: Final = frozenset({ChangeType.DETAINED, ChangeType.LEFT_HOSPITAL})
# The hub's inbound person events (schemas/CodeSystem-s117-person-event.json): not register changes. A merge of
# two NHS numbers by PDS (the FHIR counterpart of HL7 A40): the focused Patient's NHS number is retained, its
# `link` of type `replaces` names the superseded one (R4 Patient.link); hub/merges.py merges them.
MERGE_EVENT: Final = "nhs-numbers-merged"


@dataclass(frozen=True, slots=True)
class FhirProblem:
    """One problem at a FHIRPath-like location. Never quotes the value."""

    location: str
    reason: str
    code: str = VALUE

    def as_dict(self) -> dict[str, str]:
        return {"field": self.location, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class MappingResult:
    change: dict[str, Any] | None = None
    problems: tuple[FhirProblem, ...] = ()
    # canonical field (as ingest names it, e.g. "person.nhs_number") -> FHIR location
    origins: dict[str, str] = field(default_factory=dict)
    source_message_id: str | None = None
    message_header_id: str | None = None  # the request's, for MessageHeader.response.identifier
    event_code: str | None = None
    source_endpoint: str | None = None  # the request's MessageHeader.source.endpoint
    # Set (to the FHIR location of Encounter.status) when the focused Encounter is entered-in-error and the
    # event is one it withdraws (RETRACTABLE_IN_ERROR): `change` then names the change to retract, not one to record.
    entered_in_error: str | None = None
    # A merge (MERGE_EVENT): {"retained": NHS number, "superseded": NHS number}, as sent (the merge checks them);
    # `change` is then None, `origins` names "retained", "superseded" and "birth_date".
    merge: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        return (self.change is not None or self.merge is not None) and not self.problems

    def location_of(self, canonical_field: str) -> str:
        """The FHIR location a canonical field came from ("Bundle" if unknown)."""
        if canonical_field in self.origins:
            return self.origins[canonical_field]
        parts = canonical_field.split(".")
        for n in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:n])
            if prefix in self.origins:
                return self.origins[prefix]
        return "Bundle"


class _Rejected(Exception):
    def __init__(self, *problems: FhirProblem) -> None:
        super().__init__("rejected")
        self.problems = problems


# --- shape -----------------------------------------------------------------


def _path(loc: tuple[Any, ...]) -> str:
    out = "Bundle"
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("root", "__root__"):
            continue
        else:
            out += f".{part}"
    return out


def _shape_reason(err_type: str) -> tuple[str, str]:
    # Built from the error type only: pydantic's and fhir.resources' messages
    # may quote the offending value.
    if err_type == "missing":
        return REQUIRED, "is required"
    if err_type == "extra_forbidden":
        return INVALID, "is not an element of this FHIR R4 resource or data type"
    if "date" in err_type or "time" in err_type:
        return VALUE, "is not a valid FHIR date / dateTime"
    if err_type == "model_validation_format":
        return INVALID, "must be a FHIR resource (a JSON object with resourceType)"
    return VALUE, "is not a valid value for its FHIR R4 data type"


def _check_shape(data: dict[str, Any]) -> list[FhirProblem]:
    problems: list[FhirProblem] = []
    entries = data.get("entry")
    if entries is not None and not isinstance(entries, list):
        return [FhirProblem("Bundle.entry", "must be an array", INVALID)]
    for i, entry in enumerate(entries or []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            problems.append(FhirProblem(f"Bundle.entry[{i}].resource", "must be a FHIR resource (a JSON object)",
                                        REQUIRED if isinstance(entry, dict) and "resource" not in entry else INVALID))
            continue
        rtype = resource.get("resourceType")
        try:
            ok = isinstance(rtype, str) and get_fhir_model_class(rtype) is not None
        except (ValueError, KeyError, AttributeError, ImportError):
            ok = False
        if not ok:
            problems.append(FhirProblem(f"Bundle.entry[{i}].resource.resourceType", "is not a FHIR R4 resource type",
                                        VALUE))
    if problems:
        return problems
    try:
        Bundle.model_validate(data)
    except ValidationError as exc:
        seen: set[str] = set()
        for err in exc.errors(include_url=False, include_input=False, include_context=False):
            code, reason = _shape_reason(err["type"])
            loc = _path(tuple(err["loc"]))
            choice = _CHOICE_MISSING.search(err["msg"])
            if choice:  # a required choice element (value[x]) is absent: name it, not the resource
                names = re.findall(r"'([A-Za-z]+)'", choice.group(1))
                stem = os.path.commonprefix(names) if names else ""
                if stem:
                    code, reason, loc = REQUIRED, f"is required (one of {', '.join(names)})", f"{loc}.{stem}[x]"
            if (loc, reason) not in seen:
                seen.add((loc, reason))  # type: ignore[arg-type]
                problems.append(FhirProblem(loc, reason, code))
    except Exception:  # noqa: BLE001 - fhir.resources raises KeyError / TypeError on some malformed input
        problems.append(FhirProblem("Bundle", "could not be read as a FHIR R4 Bundle", INVALID))
    return problems


# --- navigation ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    index: int
    resource: dict[str, Any]
    full_url: str | None

    @property
    def loc(self) -> str:
        return f"Bundle.entry[{self.index}].resource"

    @property
    def type(self) -> str:
        return self.resource.get("resourceType", "")


def _resolve(entries: list[_Entry], reference: Any) -> _Entry | None:
    """A literal reference to an entry of the Bundle: its fullUrl, or Type/id."""
    if not isinstance(reference, str) or not reference:
        return None
    for e in entries:
        if e.full_url and e.full_url == reference:
            return e
    for e in entries:
        rid = e.resource.get("id")
        if rid and (reference == f"{e.type}/{rid}" or reference.endswith(f"/{e.type}/{rid}")):
            return e
    return None


def _ods_of(entries: list[_Entry], ref: dict[str, Any], loc: str) -> tuple[str | None, str]:
    """ODS code of an organisation reference: Reference.identifier, else the
    Organization entry it refers to. (code, location it came from)."""
    ident = ref.get("identifier")
    if isinstance(ident, dict) and ident.get("system") == ODS_ORGANIZATION_SYSTEM and ident.get("value"):
        return str(ident["value"]).strip().upper(), f"{loc}.identifier.value"
    target = _resolve(entries, ref.get("reference"))
    if target is not None and target.type == "Organization":
        for j, idf in enumerate(target.resource.get("identifier") or []):
            if idf.get("system") == ODS_ORGANIZATION_SYSTEM and idf.get("value"):
                return str(idf["value"]).strip().upper(), f"{target.loc}.identifier[{j}].value"
    return None, loc


def _date(value: Any) -> str | None:
    """The day of a FHIR date / dateTime in England (a dateTime with a time carries its zone, R4: the
    instant 2026-05-31T23:30:00Z is 00:30 BST on 1 June, hub/domain/dates.py); a date's own day; None for
    a partial date (YYYY, YYYY-MM)."""
    if not (isinstance(value, str) and _FULL_DATE.match(value)):
        return None
    if len(value) > 10:
        try:
            at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value[:10]  # the element's own validation names a malformed dateTime
        if at.tzinfo is not None:
            return england_day(at).isoformat()
    return value[:10]


# --- mapping ---------------------------------------------------------------


class _Mapper:
    def __init__(self, data: dict[str, Any], ns: Namespaces = DEFAULT_NAMESPACES) -> None:
        self.data = data
        self.change_type_system = ns.change_type_codesystem
        self.ext_event_occurred = ns.extension("S117-EventOccurred")
        self.ext_residence_council = ns.extension("S117-ResidenceCouncil")
        self.ext_cpia_order_type = ns.extension("S117-CpiaOrderType")
        self.ext_expected_stay_weeks = ns.extension("S117-ExpectedStayWeeks")
        self.ext_ehc_plan_council = ns.extension("S117-EhcPlanCouncil")
        self.ext_residence_before_detention = ns.extension("S117-ResidenceBeforeDetentionCouncil")
        self.entries = [
            _Entry(i, e["resource"], e.get("fullUrl") if isinstance(e.get("fullUrl"), str) else None)
            for i, e in enumerate(data.get("entry") or [])
        ]
        self.problems: list[FhirProblem] = []
        self.origins: dict[str, str] = {}
        self.change: dict[str, Any] = {}
        self.person: dict[str, Any] = {}
        self.entered_in_error: str | None = None
        self.person_event_system = ns.person_event_codesystem
        self.merge: dict[str, str] | None = None

    def add(self, location: str, reason: str, code: str = VALUE) -> None:
        self.problems.append(FhirProblem(location, reason, code))

    def set(self, name: str, value: Any, location: str) -> None:
        if name.startswith("person."):
            self.person[name.removeprefix("person.")] = value
        else:
            self.change[name] = value
        self.origins[name] = location

    # The MessageHeader: event, ids, source ------------------------------
    def header(self) -> tuple[dict[str, Any], ChangeType | None, str | None]:
        if not self.entries or self.entries[0].type != "MessageHeader":
            raise _Rejected(FhirProblem("Bundle.entry[0].resource",
                                        "must be a MessageHeader: a message Bundle starts with its header", REQUIRED))
        mh = self.entries[0].resource
        loc = self.entries[0].loc
        coding = mh.get("eventCoding")
        if not isinstance(coding, dict):
            raise _Rejected(FhirProblem(f"{loc}.eventCoding", f"is required: a code of {self.change_type_system}",
                                        REQUIRED if "eventUri" not in mh else NOT_SUPPORTED))
        change_type: ChangeType | None = None
        if coding.get("system") == self.person_event_system:  # a person event: a merge of NHS numbers
            if coding.get("code") != MERGE_EVENT:
                raise _Rejected(FhirProblem(f"{loc}.eventCoding.code", "is not a code of the s117-person-event "
                                            f"CodeSystem ({MERGE_EVENT})", VALUE))
        elif coding.get("system") != self.change_type_system:
            raise _Rejected(FhirProblem(f"{loc}.eventCoding.system", f"must be {self.change_type_system} (a "
                                        f"register change) or {self.person_event_system} (a merge)", VALUE))
        else:
            try:
                change_type = ChangeType(coding.get("code"))
            except ValueError:
                raise _Rejected(FhirProblem(f"{loc}.eventCoding.code", "is not a code of the "
                                            "s117-register-change-type CodeSystem", VALUE)) from None
        if change_type is None:
            pass
        elif change_type in NOT_CARRIED:
            raise _Rejected(FhirProblem(f"{loc}.eventCoding.code", "this change type carries a joint discharge "
                                        "decision or a dispute, which the FHIR message does not map; send it as "
                                        "canonical JSON to POST /v1/register-changes", NOT_SUPPORTED))
        else:
            self.set("change_type", change_type.value, f"{loc}.eventCoding.code")

        mh_id = mh.get("id")
        if not isinstance(mh_id, str) or not _FHIR_ID.fullmatch(mh_id):
            self.add(f"{loc}.id", "is required: it identifies the message, and the response message refers to it "
                     "(MessageHeader.response.identifier)", REQUIRED)
            mh_id = None
        ident = self.data.get("identifier")
        if isinstance(ident, dict) and isinstance(ident.get("value"), str) and ident["value"].strip():
            self.set("source_message_id", ident["value"].strip(), "Bundle.identifier.value")
        elif mh_id:
            self.set("source_message_id", mh_id, f"{loc}.id")

        source = mh.get("source") if isinstance(mh.get("source"), dict) else {}
        name = source.get("name")
        if isinstance(name, str) and name.strip():
            self.set("source_system", name.strip()[:100], f"{loc}.source.name")
        else:
            self.add(f"{loc}.source.name", "is required: the name of the reporting system (e.g. RiO)", REQUIRED)
        return mh, change_type, mh_id

    # The effective date ---------------------------------------------------
    def effective_date(self, mh: dict[str, Any], change_type: ChangeType, encounter: _Entry | None) -> None:
        mh_loc = self.entries[0].loc
        occurred: tuple[str, str] | None = None
        for j, ext in enumerate(mh.get("extension") or []):
            if ext.get("url") == self.ext_event_occurred:
                loc = f"{mh_loc}.extension[{j}].valueDate"
                if _date(ext.get("valueDate")) is None:
                    self.add(loc, "must be a full date (YYYY-MM-DD)", VALUE if "valueDate" in ext else REQUIRED)
                    return
                occurred = (ext["valueDate"][:10], loc)
        period_field = {ChangeType.DETAINED: "start", ChangeType.LEFT_HOSPITAL: "end"}.get(change_type)
        from_period: tuple[str, str] | None = None
        if period_field and encounter is not None:
            value = (encounter.resource.get("period") or {}).get(period_field)
            if value is not None:
                loc = f"{encounter.loc}.period.{period_field}"
                d = _date(value)
                if d is None:
                    self.add(loc, "must carry a full date", VALUE)
                    return
                from_period = (d, loc)
        if occurred and from_period and occurred[0] != from_period[0]:
            self.add(occurred[1], f"differs from the date in {from_period[1]}: the two must agree", VALUE)
            return
        chosen = from_period or occurred
        if chosen is None:
            where = (f"{encounter.loc}.period.{period_field}" if period_field and encounter is not None
                     else f"{mh_loc}.extension")
            reason = (f"is required: the date the person {'was detained' if period_field == 'start' else 'left hospital'}"
                      if period_field and encounter is not None
                      else f"is required: an extension {self.ext_event_occurred} (valueDate) with the date of the change")
            self.add(where, reason, REQUIRED)
            return
        self.set("effective_date", chosen[0], chosen[1])

    # The Encounter: the detention -------------------------------------------
    def encounter(self, enc: _Entry, change_type: ChangeType) -> _Entry | None:
        res = enc.resource
        status = res.get("status")
        if status not in ENCOUNTER_STATUSES:  # fhir.resources takes any code; R4 binds it (required)
            self.add(f"{enc.loc}.status", "must be a FHIR R4 EncounterStatus code (in-progress, finished, ...)",
                     CODE_INVALID)
            return None
        if status == "entered-in-error" and change_type in RETRACTABLE_IN_ERROR:
            # The trust withdraws a detention (or discharge) it sent: the message names the change to retract,
            # mapped as the change itself was (the person, the date, the hospital).
            self.entered_in_error = f"{enc.loc}.status"
        elif status in NOT_HAPPENED:
            # The trust says this stay did not happen as sent: recording it would put a detention on the
            # register that its own system has withdrawn.
            self.add(f"{enc.loc}.status", f"the Encounter {NOT_HAPPENED[status]}: the hub records a register "
                     "change only from a stay that happened (a detention or discharge already recorded in "
                     "error is retracted by a message whose Encounter is entered-in-error; any change by "
                     "POST /v1/register-changes/{change_id}/retraction)", BUSINESS_RULE)
            return None
        self.legal_status(enc, change_type)
        self.order_type(enc)
        if change_type is ChangeType.DETAINED and self.entered_in_error is None:
            self.child_facts(enc)
        provider = res.get("serviceProvider")
        if isinstance(provider, dict):
            code, loc = _ods_of(self.entries, provider, f"{enc.loc}.serviceProvider")
            if code is None:
                self.add(f"{enc.loc}.serviceProvider", "must identify the hospital by ODS code (identifier system "
                         f"{ODS_ORGANIZATION_SYSTEM}, or a reference to an Organization entry with one)", VALUE)
            else:
                self.set("hospital_ods", code, loc)
        subject = res.get("subject")
        if not isinstance(subject, dict) or not subject.get("reference"):
            self.add(f"{enc.loc}.subject", "is required: a reference to the Patient entry", REQUIRED)
            return None
        patient = _resolve(self.entries, subject.get("reference"))
        if patient is None or patient.type != "Patient":
            self.add(f"{enc.loc}.subject.reference", "must resolve to a Patient entry of the Bundle", VALUE)
            return None
        return patient

    def legal_status(self, enc: _Entry, change_type: ChangeType) -> None:
        found: list[tuple[int, dict[str, Any], str | None]] = []
        for j, ext in enumerate(enc.resource.get("extension") or []):
            if ext.get("url") != LEGAL_STATUS_EXTENSION_URL:
                continue
            context = None
            for part in ext.get("extension") or []:
                if part.get("url") == "legalStatusContext":
                    codings = (part.get("valueCodeableConcept") or {}).get("coding") or []
                    context = next((c.get("code") for c in codings if c.get("code")), None)
            found.append((j, ext, context))
        if not found:
            return
        if len(found) > 1:
            wanted = "discharge" if change_type is ChangeType.LEFT_HOSPITAL else "admission"
            matching = [f for f in found if f[2] == wanted]
            if len(matching) != 1:
                self.add(f"{enc.loc}.extension", "has more than one UK Core legal status; send one, or one per "
                         "legalStatusContext (admission / discharge)", INVALID)
                return
            found = matching
        j, ext, _ = found[0]
        ext_loc = f"{enc.loc}.extension[{j}]"
        for k, part in enumerate(ext.get("extension") or []):
            if part.get("url") != "legalStatusClassification":
                continue
            loc = f"{ext_loc}.extension[{k}].valueCodeableConcept.coding"
            codings = (part.get("valueCodeableConcept") or {}).get("coding") or []
            for m, c in enumerate(codings):
                if c.get("system") == LEGAL_STATUS_ENGLAND_SYSTEM and c.get("code"):
                    self.set("legal_status_code", str(c["code"]), f"{loc}[{m}].code")
                    return
            self.add(loc, f"needs a coding from {LEGAL_STATUS_ENGLAND_SYSTEM}: the hub applies the England "
                     "legal status classification only", VALUE)
            return
        self.add(f"{ext_loc}.extension", "needs a legalStatusClassification", REQUIRED)

    def order_type(self, enc: _Entry) -> None:
        """Extension-S117-CpiaOrderType on the Encounter: the contract's order_type code (FHIR codes are
        case-sensitive). Without it, a legal status 31 is refused by ingest at the Encounter's extensions."""
        found = [(j, ext) for j, ext in enumerate(enc.resource.get("extension") or [])
                 if ext.get("url") == self.ext_cpia_order_type]
        if not found:
            self.origins["order_type"] = f"{enc.loc}.extension"
            return
        if len(found) > 1:
            self.add(f"{enc.loc}.extension", "has more than one CP(I)A order type extension", INVALID)
            return
        j, ext = found[0]
        loc = f"{enc.loc}.extension[{j}].valueCode"
        value = ext.get("valueCode")
        codes = ", ".join(CPIA_ORDER_TYPES)
        if not isinstance(value, str) or not value:
            self.add(loc, f"is required: the CP(I)A 1964 order code ({codes})", REQUIRED)
        elif value not in CPIA_ORDER_TYPES:
            self.add(loc, f"must be one of the CP(I)A 1964 order codes: {codes}; only a hospital order "
                     "qualifies for s117", VALUE)
        else:
            self.set("order_type", value, loc)

    def _one_extension(self, enc: _Entry, url: str, what: str) -> tuple[int, dict[str, Any]] | None:
        found = [(j, ext) for j, ext in enumerate(enc.resource.get("extension") or []) if ext.get("url") == url]
        if len(found) > 1:
            self.add(f"{enc.loc}.extension", f"has more than one {what} extension", INVALID)
            return None
        return found[0] if found else None

    def child_facts(self, enc: _Entry) -> None:
        """A detention's two optional facts for a child's notices (hub/domain/children.py), on a `detained`
        change only (an Encounter sent again as it stands, for its discharge say, may still carry them: they
        are the admission's, and no other change takes them). Extension-S117-ExpectedStayWeeks
        (valuePositiveInt) -> `expected_stay_weeks`; Extension-S117-EhcPlanCouncil (valueIdentifier, system
        GSS) -> `ehc_plan_la_gss`. The values are passed as sent: ingest checks them as it checks REST's
        (1-260 weeks, a JSON whole number; a GSS code of a social services authority), at their location."""
        found = self._one_extension(enc, self.ext_expected_stay_weeks, "expected stay")
        if found is not None:
            j, ext = found
            loc = f"{enc.loc}.extension[{j}].valuePositiveInt"
            if ext.get("valuePositiveInt") is None:  # absent, or JSON null (no value: FHIR's ext-1)
                self.add(loc, "is required: the stay the trust expects, in whole weeks (1 to "
                         f"{MAX_EXPECTED_STAY_WEEKS})", REQUIRED)
            else:
                self.set("expected_stay_weeks", ext["valuePositiveInt"], loc)
        self._council_extension(enc, self.ext_ehc_plan_council, "EHC plan council", "ehc_plan_la_gss",
                                "the council maintaining the EHC plan")

    # The Patient ----------------------------------------------------------
    def patient(self, pat: _Entry) -> None:
        res = pat.resource
        if res.get("active") is False:  # a modifier element: the record is not in use (a merged duplicate, say)
            self.add(f"{pat.loc}.active", "the Patient record is inactive (active false): send the change about "
                     "the person's record in use", BUSINESS_RULE)
        # Identifier.use is a modifier element: an NHS number with use "old" is no longer the person's.
        all_numbers = [(j, i) for j, i in enumerate(res.get("identifier") or [])
                       if i.get("system") == NHS_NUMBER_SYSTEM and i.get("value")]
        numbers = [(j, str(i.get("value"))) for j, i in all_numbers if i.get("use") != "old"]
        if not numbers and all_numbers:
            self.add(f"{pat.loc}.identifier[{all_numbers[0][0]}].use", "the NHS number sent has use old (no "
                     "longer the person's): send the current one", BUSINESS_RULE)
        elif not numbers:
            self.add(f"{pat.loc}.identifier", f"needs the NHS number (an identifier with system {NHS_NUMBER_SYSTEM})",
                     REQUIRED)
        elif len({n.replace(' ', '') for _, n in numbers}) > 1:
            self.add(f"{pat.loc}.identifier", "has more than one different NHS number", INVALID)
        else:
            self.set("person.nhs_number", numbers[0][1], f"{pat.loc}.identifier[{numbers[0][0]}].value")

        names = res.get("name") or []
        pick = next((j for j, n in enumerate(names) if n.get("use") == "official"),
                    next((j for j, n in enumerate(names) if n.get("use") == "usual"), 0 if names else None))
        if pick is not None:
            name = names[pick]
            if name.get("family"):
                self.set("person.family_name", name["family"].strip(), f"{pat.loc}.name[{pick}].family")
            if name.get("given"):
                self.set("person.given_name", name["given"][0].strip(), f"{pat.loc}.name[{pick}].given[0]")

        if res.get("birthDate") is not None:
            d = _date(res["birthDate"])
            if d is None:
                self.add(f"{pat.loc}.birthDate", "must be a full date (YYYY-MM-DD)", VALUE)
            else:
                self.set("person.birth_date", d, f"{pat.loc}.birthDate")

        self.address(pat)
        self.successor_council(pat)
        self.gp(pat)

    def address(self, pat: _Entry) -> None:
        addresses = pat.resource.get("address") or []
        current = [j for j, a in enumerate(addresses) if a.get("use") != "old"]
        pick = next((j for j in current if addresses[j].get("use") == "home"), current[0] if current else None)
        if pick is None:
            return
        addr, loc = addresses[pick], f"{pat.loc}.address[{pick}]"
        postcode = addr.get("postalCode")
        if postcode:
            if postcode.replace(" ", "").upper() == NO_FIXED_ABODE_POSTCODE:
                self.set("no_fixed_abode", True, f"{loc}.postalCode")
            else:
                self.set("person.postcode", postcode.strip().upper(), f"{loc}.postalCode")
        councils = [(k, e) for k, e in enumerate(addr.get("extension") or []) if e.get("url") == self.ext_residence_council]
        if len(councils) > 1:
            self.add(f"{loc}.extension", "has more than one residence council extension", INVALID)
            return
        if councils:
            k, ext = councils[0]
            ident = ext.get("valueIdentifier")
            ext_loc = f"{loc}.extension[{k}].valueIdentifier"
            if not isinstance(ident, dict) or not ident.get("value"):
                self.add(ext_loc, "is required: the council's ONS GSS code as an Identifier", REQUIRED)
            elif ident.get("system") != GSS_CODE_SYSTEM:
                self.add(f"{ext_loc}.system", f"must be {GSS_CODE_SYSTEM}", VALUE)
            else:
                self.set("residence_la_gss", str(ident["value"]).strip().upper(), f"{ext_loc}.value")

    def successor_council(self, pat: _Entry) -> None:
        """Extension-S117-ResidenceBeforeDetentionCouncil on the Patient (valueIdentifier, system GSS) ->
        `residence_before_detention_la_gss`: the successor of a split council covering the residence the
        responsible council was determined by (hazard H-03). Read on every change the Patient comes with and
        passed as sent: ingest checks it as REST's (a council in place today; a `moved` change only, refused by
        name on any other, as on REST), at its location. Unlike a detention's Encounter extensions it is not
        skipped on other changes: a successor sent with them would otherwise be dropped unseen, the person
        left with no responsible council."""
        self._council_extension(pat, self.ext_residence_before_detention, "residence before detention council",
                                "residence_before_detention_la_gss",
                                "the successor council whose area covers the residence before the detention")

    def _council_extension(self, entry: _Entry, url: str, label: str, field: str, council: str) -> None:
        """One hub extension on `entry` naming a council (valueIdentifier, system GSS) -> `field`, its code as
        sent (trimmed, in capitals; ingest checks it at `.value`); a missing value or another system named at
        its location. `label` names the extension when it comes twice; `council` says which council it is."""
        found = self._one_extension(entry, url, label)
        if found is None:
            return
        j, ext = found
        loc = f"{entry.loc}.extension[{j}].valueIdentifier"
        ident = ext.get("valueIdentifier")
        if not isinstance(ident, dict) or not ident.get("value"):
            self.add(loc, f"is required: the ONS GSS code of {council}, as an Identifier", REQUIRED)
        elif ident.get("system") != GSS_CODE_SYSTEM:
            self.add(f"{loc}.system", f"must be {GSS_CODE_SYSTEM}", VALUE)
        else:
            self.set(field, str(ident["value"]).strip().upper(), f"{loc}.value")

    def gp(self, pat: _Entry) -> None:
        gps = pat.resource.get("generalPractitioner") or []
        codes: dict[str, str] = {}
        for j, ref in enumerate(gps):
            code, loc = _ods_of(self.entries, ref, f"{pat.loc}.generalPractitioner[{j}]")
            if code is not None:
                codes.setdefault(code, loc)
        if gps and not codes:
            self.add(f"{pat.loc}.generalPractitioner", "must identify the GP practice by ODS code (identifier system "
                     f"{ODS_ORGANIZATION_SYSTEM}, or a reference to an Organization entry with one)", VALUE)
        elif len(codes) > 1:
            self.add(f"{pat.loc}.generalPractitioner", "names more than one GP practice", INVALID)
        elif codes:
            (code, loc), = codes.items()
            self.set("gp_practice_ods", code, loc)

    # A merge of two NHS numbers (MERGE_EVENT) ---------------------------------
    def merged(self, mh: dict[str, Any]) -> MappingResult:
        """The focused Patient: its NHS number (not `use` old) retained; its one `link` of type `replaces`
        names the superseded number (`other.identifier`, or `other.reference` to a Patient entry of the
        Bundle carrying it). Each problem at its element."""
        mh_loc = self.entries[0].loc
        focus = mh.get("focus") or []
        target = _resolve(self.entries, focus[0].get("reference")) if focus else None
        if not focus:
            self.add(f"{mh_loc}.focus", "is required: a reference to the Patient whose NHS number is retained",
                     REQUIRED)
            return self._result()
        if target is None or target.type != "Patient":
            self.add(f"{mh_loc}.focus[0].reference", "must resolve to a Patient entry of the Bundle (the record "
                     "whose NHS number is retained)", VALUE)
            return self._result()
        pat, res = target, target.resource
        if res.get("active") is False:
            self.add(f"{pat.loc}.active", "the focused Patient must be the record in use (the retained one): it "
                     "is inactive (active false)", BUSINESS_RULE)
        numbers = [(j, str(i.get("value"))) for j, i in enumerate(res.get("identifier") or [])
                   if i.get("system") == NHS_NUMBER_SYSTEM and i.get("value") and i.get("use") != "old"]
        if not numbers:
            self.add(f"{pat.loc}.identifier", "needs the retained NHS number (an identifier with system "
                     f"{NHS_NUMBER_SYSTEM}, not use old)", REQUIRED)
        elif len({n.replace(" ", "") for _, n in numbers}) > 1:
            self.add(f"{pat.loc}.identifier", "has more than one different NHS number: the retained one only "
                     "(the superseded one goes in link)", INVALID)
        else:
            self.origins["retained"] = f"{pat.loc}.identifier[{numbers[0][0]}].value"
            retained = numbers[0][1]
        links = [(k, link) for k, link in enumerate(res.get("link") or []) if isinstance(link, dict)]
        replaces = [(k, link) for k, link in links if link.get("type") == "replaces"]
        superseded: str | None = None
        if not replaces:
            by = next((k for k, link in links if link.get("type") == "replaced-by"), None)
            if by is not None:
                self.add(f"{pat.loc}.link[{by}].type", "the focused Patient must be the retained record: a link "
                         "replaced-by says it is the superseded one (focus the retained Patient, its link type "
                         "replaces)", BUSINESS_RULE)
            else:
                self.add(f"{pat.loc}.link", "needs a link of type replaces whose other.identifier is the "
                         "superseded NHS number", REQUIRED)
        elif len(replaces) > 1:
            self.add(f"{pat.loc}.link", "has more than one link of type replaces: one merge a message (send each "
                     "superseded number in its own message)", INVALID)
        else:
            k, link = replaces[0]
            other = link.get("other") if isinstance(link.get("other"), dict) else {}
            where = f"{pat.loc}.link[{k}].other"
            ident = other.get("identifier")
            if isinstance(ident, dict) and ident.get("system") == NHS_NUMBER_SYSTEM and ident.get("value"):
                superseded, self.origins["superseded"] = str(ident["value"]), f"{where}.identifier.value"
            else:
                found = _resolve(self.entries, other.get("reference"))
                idents = [(j, i) for j, i in enumerate((found.resource.get("identifier") or []) if found else [])
                          if found.type == "Patient" and i.get("system") == NHS_NUMBER_SYSTEM and i.get("value")]
                if found is not None and len({str(i["value"]).replace(" ", "") for _, i in idents}) == 1:
                    superseded = str(idents[0][1]["value"])
                    self.origins["superseded"] = f"{found.loc}.identifier[{idents[0][0]}].value"
                else:
                    self.add(f"{where}.identifier", "needs the superseded NHS number (an identifier with system "
                             f"{NHS_NUMBER_SYSTEM}, or a reference to a Patient entry carrying one)", REQUIRED)
        if res.get("birthDate") is not None and _date(res["birthDate"]) is None:
            self.add(f"{pat.loc}.birthDate", "must be a full date (YYYY-MM-DD)", VALUE)
        self.origins["birth_date"] = f"{pat.loc}.birthDate" if "birthDate" in res else pat.loc
        self.origins["force"] = f"{mh_loc}.eventCoding"
        if not self.problems and superseded is not None and numbers:
            self.merge = {"retained": retained, "superseded": superseded}
        return self._result()

    def run(self) -> MappingResult:
        try:
            mh, change_type, mh_id = self.header()
        except _Rejected as r:
            return MappingResult(problems=r.problems, **self._ids())
        if change_type is None:
            return self.merged(mh)
        mh_loc = self.entries[0].loc
        focus = mh.get("focus") or []
        if not focus:
            self.add(f"{mh_loc}.focus", "is required: a reference to the Encounter (the detention) or the Patient",
                     REQUIRED)
            return self._result()
        target = _resolve(self.entries, focus[0].get("reference"))
        encounter: _Entry | None = None
        patient: _Entry | None = None
        if target is None or target.type not in ("Encounter", "Patient"):
            self.add(f"{mh_loc}.focus[0].reference", "must resolve to an Encounter or Patient entry of the Bundle",
                     VALUE)
            return self._result()
        if target.type == "Encounter":
            encounter = target
            patient = self.encounter(encounter, change_type)
        else:
            patient = target
        self.effective_date(mh, change_type, encounter)
        if patient is not None:
            self.patient(patient)
        return self._result()

    def _ids(self) -> dict[str, Any]:
        mh = self.entries[0].resource if self.entries and self.entries[0].type == "MessageHeader" else {}
        mh_id = mh.get("id") if isinstance(mh.get("id"), str) and _FHIR_ID.fullmatch(mh.get("id")) else None
        coding = mh.get("eventCoding") if isinstance(mh.get("eventCoding"), dict) else {}
        source = mh.get("source") if isinstance(mh.get("source"), dict) else {}
        ident = self.data.get("identifier")
        smid = ident.get("value") if isinstance(ident, dict) and isinstance(ident.get("value"), str) else None
        # One with a control character is not kept with the quarantined message (a NUL is no text a column holds).
        smid = None if smid is not None and _NOT_FHIR_STRING.search(smid) else (smid or "").strip()[:200] or mh_id
        return {"source_message_id": smid, "message_header_id": mh_id,
                "event_code": coding.get("code") if isinstance(coding.get("code"), str) else None,
                "source_endpoint": source.get("endpoint") if isinstance(source.get("endpoint"), str) else None}

    def _result(self) -> MappingResult:
        ids = self._ids()
        if self.problems:
            return MappingResult(problems=tuple(self.problems), origins=self.origins, **ids)
        if self.merge is not None:
            return MappingResult(merge=self.merge, origins=self.origins, **ids)
        change = {**self.change, "person": self.person}
        self.origins.setdefault("person", self.origins.get("person.nhs_number", "Bundle"))
        return MappingResult(change=change, origins=self.origins, entered_in_error=self.entered_in_error, **ids)


def _check_profiles(data: dict[str, Any], ns: Namespaces) -> list[FhirProblem]:
    """The hub's profiles (hub/fhir/conformance.py), as far as the mapping
    needs no more: each resource has what its profile requires (min >= 1),
    and a hub profile it declares in meta.profile is the one for its type."""
    problems: list[FhirProblem] = []
    hub_profiles = f"{ns.fhir_base}/StructureDefinition/"
    located = [("Bundle", data)] + [(f"Bundle.entry[{i}].resource", e["resource"])
                                    for i, e in enumerate(data.get("entry") or [])]
    for loc, res in located:
        rtype = res.get("resourceType")
        if rtype not in PROFILES:
            continue
        expected = ns.profile(PROFILES[rtype])
        meta = res.get("meta") if isinstance(res.get("meta"), dict) else {}
        for k, url in enumerate(meta.get("profile") or []):
            if isinstance(url, str) and url.startswith(hub_profiles) and url.split("|")[0] != expected:
                problems.append(FhirProblem(f"{loc}.meta.profile[{k}]", f"must be {expected} for a {rtype}", VALUE))
        for element in required_elements(rtype):
            if res.get(element) in (None, [], {}, ""):
                problems.append(FhirProblem(f"{loc}.{element}", f"is required (profile {PROFILES[rtype]})", REQUIRED))
    return problems


def _control_characters(value: Any, loc: str, out: list[FhirProblem]) -> None:
    """Every string under `value` holding a character FHIR strings may not (below U+0020 but tab, LF, CR)."""
    if isinstance(value, str):
        if _NOT_FHIR_STRING.search(value):
            out.append(FhirProblem(loc, "must not contain control characters: a FHIR string holds no character "
                                   "below U+0020 other than tab, CR and LF", VALUE))
    elif isinstance(value, dict):
        for key, item in value.items():
            _control_characters(item, f"{loc}.{key}", out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _control_characters(item, f"{loc}[{i}]", out)


def _check_identity(data: dict[str, Any]) -> list[FhirProblem]:
    """Entries a reference could not tell apart: a fullUrl used twice (FHIR
    bdl-7; refused even with different meta.versionId, as a message has one
    version of each resource), or two entries of one resource type and id."""
    problems: list[FhirProblem] = []
    urls: dict[str, int] = {}
    ids: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(data.get("entry") or []):
        url = entry.get("fullUrl")
        if isinstance(url, str):
            if url in urls:
                problems.append(FhirProblem(f"Bundle.entry[{i}].fullUrl", f"is the fullUrl of Bundle.entry[{urls[url]}]"
                                            ": a fullUrl must be unique in the Bundle (FHIR bdl-7)", INVALID))
                continue
            urls[url] = i
        resource = entry["resource"]
        rid = resource.get("id")
        if isinstance(rid, str):
            key = (resource.get("resourceType"), rid)
            if key in ids:
                problems.append(FhirProblem(f"Bundle.entry[{i}].resource.id", f"is the id of the {key[0]} in "
                                            f"Bundle.entry[{ids[key]}]: a reference could not tell the two apart",
                                            INVALID))
            else:
                ids[key] = i
    return problems


def _modifiers(value: Any, loc: str, out: list[FhirProblem]) -> None:
    """Every modifierExtension and implicitRules in the Bundle (its resources, contained ones, backbone
    elements). The hub understands none: each changes the meaning of the element it is on (FHIR R4
    extensibility.html#modifierExtension, resource.html#implicitRules: a system SHALL NOT process one it
    does not understand), so the message is refused rather than recorded as if it were absent. Other
    extensions the hub does not know are ignored, but each must be a valid FHIR extension (ext-1: a value
    or extensions, not both or neither)."""
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{loc}.{key}"
            if key == "modifierExtension" and item not in (None, []):
                out.append(FhirProblem(where, "the hub understands no modifier extension: one changes the meaning "
                                       "of the element it is on, so the message cannot be processed with it "
                                       "(send the element without it, or send what it means in the element "
                                       "itself)", EXTENSION))
            elif key == "implicitRules" and "resourceType" in value and item is not None:
                out.append(FhirProblem(where, "the hub applies no implicit rules beyond FHIR R4 and UK Core: a "
                                       "resource made under other rules cannot be processed", NOT_SUPPORTED))
            else:
                if key == "extension" and isinstance(item, list):
                    for j, ext in enumerate(item):
                        if isinstance(ext, dict) and (any(k.startswith("value") for k in ext)
                                                      == bool(ext.get("extension"))):
                            out.append(FhirProblem(f"{where}[{j}]", "must have either a value[x] or extensions, "
                                                   "not both or neither (FHIR ext-1)", INVALID))
                _modifiers(item, where, out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _modifiers(item, f"{loc}[{i}]", out)


DUPLICATE_KEY = "appears more than once in its JSON object: which value was meant cannot be told"


def _duplicate_keys(body: bytes | str, parsed: Any = None) -> list[FhirProblem]:
    """Each property a JSON object of the body names more than once, at its location: a parser keeps one of
    the values (orjson the last), the sender's system may have meant another (hub/codec.py `duplicate_keys`,
    shared with the hub's other JSON entry points; `parsed`: orjson's reading, so most bodies cost a count)."""
    return [FhirProblem(json_path(path, "Bundle"), DUPLICATE_KEY, INVALID) for path in duplicate_keys(body, parsed)]


def map_message(body: bytes | str, ns: Namespaces = DEFAULT_NAMESPACES) -> MappingResult:
    """Map one FHIR message Bundle (JSON) to the canonical register change.
    ``ns``: the hub's URLs under the configured canonical base."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return MappingResult(problems=(FhirProblem("Bundle", "is not valid JSON", INVALID),))
    twice = _duplicate_keys(body, data)
    if twice:
        return MappingResult(problems=tuple(twice))
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        return MappingResult(problems=(FhirProblem("Bundle.resourceType", "must be Bundle", INVALID),))
    if data.get("type") != "message":
        return MappingResult(problems=(FhirProblem("Bundle.type", "must be message (a FHIR message Bundle)",
                                                   REQUIRED if "type" not in data else VALUE),))
    shape = _check_shape(data)
    if shape:
        return MappingResult(problems=tuple(shape))
    problems = _check_identity(data)
    _modifiers(data, "Bundle", problems)
    if _CONTROL_ESCAPE.search(body.encode() if isinstance(body, str) else body):
        _control_characters(data, "Bundle", problems)
    if problems:
        return MappingResult(problems=tuple(problems), **_Mapper(data, ns)._ids())
    profiled = _check_profiles(data, ns)
    if profiled:
        return MappingResult(problems=tuple(profiled), **_Mapper(data, ns)._ids())
    return _Mapper(data, ns).run()
