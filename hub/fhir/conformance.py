"""The hub's FHIR implementation package, as Python data.

Profiles (on UK Core where UK Core has one), the hub's extensions, ValueSets
for its CodeSystems, a MessageDefinition per event type, the hub's
CapabilityStatement and examples, all under one canonical base
(``Namespaces``). ``build_package`` returns every file of the FHIR NPM package
(``package/package.json``, the resources, ``package/examples/``,
``package/.index.json``); ``s117hub fhir-package`` writes them, and the copy
checked in under ``schemas/fhir-package/`` (default base) is kept equal to
this module by a test and loaded by the HAPI FHIR validator in the suite.

To define a new hub extension, add one ``ExtensionDef`` to ``EXTENSIONS``:
its StructureDefinition is generated and every profile of a resource named in
its ``contexts`` gets a slice for it (so the validator accepts it there).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from hub.domain.model import BODY_EVENT_TYPES, CHILD_EVENT_TYPES, ChangeType, EventType
from hub.domain.reconciliation import Kind
from hub.fhir.namespaces import (
    DEFAULT_NAMESPACES,
    GSS_CODE_SYSTEM,
    NHS_NUMBER_SYSTEM,
    ODS_ORGANIZATION_SYSTEM,
    Namespaces,
)

__all__ = [
    "EXTENSIONS",
    "PACKAGE_NAME",
    "PACKAGE_VERSION",
    "PROFILES",
    "ExtensionDef",
    "Part",
    "ProfileDef",
    "build_package",
    "profile_url",
    "required_elements",
]

PACKAGE_NAME: Final = "uk.s117hub.fhir"
PACKAGE_VERSION: Final = "0.1.0"
FHIR_VERSION: Final = "4.0.1"
# UK Core STU2 as published (the copies in schemas/ukcore come from its staging repository).
UKCORE_PACKAGE: Final = ("fhir.r4.ukcore.stu2", "2.0.2")
PUBLISHER: Final = "S117 Hub"
_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
FHIR_CORE: Final = "http://hl7.org/fhir/StructureDefinition/"
UKCORE: Final = "https://fhir.hl7.org.uk/StructureDefinition/"


# --- extensions ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Part:
    """One sub-extension of a complex extension."""

    url: str
    type: str
    min: int
    max: str
    short: str
    valueset: str | None = None  # a hub ValueSet id, or a ValueSet's canonical URL (http...); required binding


@dataclass(frozen=True, slots=True)
class ExtensionDef:
    name: str  # "S117-Determination" -> Extension-S117-Determination
    title: str
    description: str
    contexts: tuple[str, ...]  # element paths it may sit on, e.g. ("EpisodeOfCare",)
    value_type: str | None = None  # simple extension: the value[x] type
    target: str | None = None  # Reference target resource type
    parts: tuple[Part, ...] = ()  # complex extension
    max: str = "1"  # per resource/element (in the profiles' slices)
    slice: str = ""  # slice name in profiles (default: derived from name)

    @property
    def id(self) -> str:
        return f"Extension-{self.name}"

    @property
    def slice_name(self) -> str:
        if self.slice:
            return self.slice
        tail = self.name.removeprefix("S117-")
        return tail[0].lower() + tail[1:]


EXTENSIONS: Final[tuple[ExtensionDef, ...]] = (
    ExtensionDef(
        "S117-EventOccurred",
        "S117 event occurred",
        "The date the event the message announces took effect (e.g. the day the person left hospital), "
        "as opposed to MessageHeader timestamp (when the message was sent). Inbound: the effective date of "
        "the register change.",
        ("MessageHeader",),
        value_type="date",
    ),
    ExtensionDef(
        "S117-ResponsibleCommissioner",
        "S117 responsible NHS commissioner",
        "The NHS body (ICB / sub-ICB location, by ODS code) responsible for commissioning the person's "
        "s117 aftercare (MHA 1983 s117(3)).",
        ("EpisodeOfCare",),
        value_type="Reference",
        target="Organization",
    ),
    ExtensionDef(
        "S117-CoordinatingCouncil",
        "S117 coordinating council",
        "The council (by ONS GSS code) coordinating the person's aftercare where it differs from the "
        "responsible council (e.g. a placement out of area).",
        ("EpisodeOfCare",),
        value_type="Reference",
        target="Organization",
    ),
    ExtensionDef(
        "S117-Determination",
        "S117 determination",
        "Why the hub determined an aspect of the person's s117 status: the explanation and the policy "
        "citation (e.g. 'Worcs 4.3.1') of the rule applied.",
        ("EpisodeOfCare",),
        parts=(
            Part("aspect", "code", 1, "1", "What was determined", valueset="s117-determination-aspect"),
            Part("explanation", "string", 1, "1", "The explanation, in words"),
            Part("citation", "string", 0, "1", "The policy paragraph or statute applied"),
            Part("rule", "code", 0, "1", "The hub's rule identifier (e.g. reasons-required)"),
        ),
        max="*",
    ),
    ExtensionDef(
        "S117-ResponsibilityUndetermined",
        "S117 responsible body not determined",
        "A responsible body the person is owed (the responsible council, the NHS commissioner) that the hub "
        "could not determine: e.g. no place of residence before the detention until the area discharged to is "
        "known, or a GP practice or area its reference data does not map. Sent with the field group "
        "'responsibility' in place of the absent managingOrganization / ResponsibleCommissioner, so that an "
        "absent body never has to be read as 'not disclosed'. The role, a data-absent-reason code "
        "(temp-unknown: expected to become known; unknown: someone must find it) and the reason in words "
        "(never an organisation, a date or personal data).",
        ("EpisodeOfCare",),
        parts=(
            Part("role", "code", 1, "1", "The body not determined (responsible-council, responsible-commissioner)",
                 valueset="s117-determination-aspect"),
            Part("absentReason", "code", 1, "1", "Why it is absent (FHIR data-absent-reason)",
                 valueset="http://hl7.org/fhir/ValueSet/data-absent-reason"),
            Part("reason", "string", 1, "1", "The reason, in words"),
        ),
        max="*",
    ),
    ExtensionDef(
        "S117-NextReview",
        "S117 next review",
        "When the person's s117 aftercare is next due for review, and which kind of review.",
        ("EpisodeOfCare",),
        parts=(
            Part("dueDate", "date", 1, "1", "The date the review is due"),
            Part("kind", "code", 1, "1", "The kind of review", valueset="s117-review-kind"),
        ),
    ),
    ExtensionDef(
        "S117-CpiaOrderType",
        "S117 CP(I)A 1964 order type",
        "With legal status 31 (Criminal Procedure (Insanity) Act 1964), the order the court made: hospital-order "
        "(with or without a restriction order; qualifies for s117), supervision-order or absolute-discharge. "
        "Inbound: the register change's order_type.",
        ("Encounter",),
        value_type="code",
    ),
    # A child's detention (hub/domain/children.py): the two facts the children's notices read.
    ExtensionDef(
        "S117-ExpectedStayWeeks",
        "S117 expected stay in hospital, in weeks",
        "On a detention: how many whole weeks the trust expects the stay in hospital to last (R4 "
        "Encounter.length is the actual length; there is no element for an expected one). For a child, 12 or "
        "more sends the Children Act 1989 s85 notice to the council responsible for the child at admission "
        "(Worcs 6.1). Inbound: the register change's expected_stay_weeks (1 to 260), on a detained change.",
        ("Encounter",),
        value_type="positiveInt",
    ),
    ExtensionDef(
        "S117-EhcPlanCouncil",
        "S117 council maintaining the EHC plan",
        "On a detention: the council (ONS GSS code) maintaining the person's Education, Health and Care plan, "
        "told of the admission (Worcs 6.4). Inbound: the register change's ehc_plan_la_gss, on a detained "
        "change.",
        ("Encounter",),
        value_type="Identifier",
    ),
    # A county split between several successors (hazard H-03): the successor covering the residence.
    ExtensionDef(
        "S117-ResidenceBeforeDetentionCouncil",
        "S117 successor council of the residence before the detention",
        "On a moved change: the council (ONS GSS code, a council in place today) whose area covers the place of "
        "ordinary residence the responsible council was determined by, when that council has since been split "
        "between several successors (e.g. Cumbria 2023: Cumberland or Westmorland and Furness). It becomes the "
        "responsible council. Inbound: the register change's residence_before_detention_la_gss, on a moved "
        "change only.",
        ("Patient",),
        value_type="Identifier",
    ),
    ExtensionDef(
        "S117-ResidenceCouncil",
        "S117 council of ordinary residence",
        "The council (ONS GSS code) in whose area the person was ordinarily resident, on the address it "
        "applies to. UK Core has no element for it (Address.district is a free-text name).",
        ("Address",),
        value_type="Identifier",
    ),
    # The s117-reconciliation-drift message (hub/fhir/drift.py): counts about a body, no person.
    ExtensionDef(
        "S117-DriftCount",
        "S117 reconciliation drift: open differences of one kind",
        "How many differences of one kind between the body's own s117 list and the hub's register are open "
        "(open or explained) after the body's last snapshot was compared. One per kind, zeros included.",
        ("Basic",),
        parts=(
            Part("kind", "code", 1, "1", "The kind of difference", valueset="s117-reconciliation-difference"),
            Part("open", "unsignedInt", 1, "1", "Open differences of this kind"),
        ),
        max="*",
    ),
    ExtensionDef(
        "S117-DriftSummary",
        "S117 reconciliation drift: totals",
        "The body's open differences in all, the people on its list (rows accepted from its snapshot) and "
        "the date of the list.",
        ("Basic",),
        parts=(
            Part("open", "unsignedInt", 1, "1", "Open differences in all"),
            Part("listed", "unsignedInt", 1, "1", "People on the body's list"),
            Part("asOf", "date", 1, "1", "The date of the body's list"),
        ),
    ),
    ExtensionDef(
        "S117-DriftThreshold",
        "S117 reconciliation drift: the agreed threshold",
        "The threshold the body's data-sharing agreement sets (recipients[].reconciliation): a number of open "
        "differences and/or a percentage of the body's list; the alert is sent when either is reached.",
        ("Basic",),
        parts=(
            Part("openItems", "unsignedInt", 0, "1", "drift_alert_open_items"),
            Part("percentOfList", "decimal", 0, "1", "drift_alert_percent"),
        ),
    ),
    ExtensionDef(
        "S117-ReconciliationReport",
        "S117 reconciliation report",
        "Where the body reads the whole report, every difference with who must act: "
        "GET /v1/reconciliations/{snapshot id} (with the body's API key).",
        ("Basic",),
        value_type="url",
    ),
    # The children's notices (hub/children.py): why this council is told.
    ExtensionDef(
        "S117-ChildNotice",
        "S117 child in hospital: the notice",
        "On an s117-child-long-stay-notice (Children Act 1989 s85; Worcs 6.1), s117-child-ehc-plan-notice "
        "(Worcs 6.4), s117-child-left-hospital-notice (s85(4)), s117-child-notice-withdrawn or "
        "s117-child-notice-corrected: why the notice was sent (expected to stay 12 weeks or more, 12 weeks "
        "reached, admitted with an EHC plan, the stay ended; on a withdrawal why the notice it names in "
        "supersedes is withdrawn: the admission or the leaving recorded in error; on a correction, the "
        "detention that began the stay corrected), why this council is the one told (ordinary residence before the "
        "admission, the hospital's area when the child had none, the council maintaining the EHC plan), the "
        "stay the trust expects in weeks when it said, and the statute or policy paragraph. The stay itself "
        "(admission date, hospital, section; the end date once ended) is the detention Encounter (field group "
        "legal-status); a withdrawal of a notice whose admission was recorded in error has none.",
        ("MessageHeader",),
        parts=(
            Part("reason", "code", 1, "1", "Why the notice was sent", valueset="s117-child-notice"),
            Part("basis", "code", 1, "1", "Why this council is told", valueset="s117-child-notice"),
            Part("expectedStayWeeks", "positiveInt", 0, "1", "The stay the trust expects, in weeks"),
            Part("supersedes", "string", 0, "1", "On a withdrawal: the event id (S117-Event-Id) of the notice "
                 "withdrawn; on a correction: of the message it replaces (the notice, or its last correction)"),
            Part("citation", "string", 1, "1", "The statute or policy paragraph"),
        ),
    ),
)


def _extension_sd(ext: ExtensionDef, ns: Namespaces) -> dict[str, Any]:
    url = ns.extension(ext.name)
    elements: list[dict[str, Any]] = [
        {"id": "Extension", "path": "Extension", "short": ext.title, "definition": ext.description}
    ]
    if ext.parts:
        elements.append({
            "id": "Extension.extension", "path": "Extension.extension",
            "slicing": {"discriminator": [{"type": "value", "path": "url"}], "rules": "closed"},
            "min": 1,
        })
        for part in ext.parts:
            sid = f"Extension.extension:{part.url}"
            elements.append({"id": sid, "path": "Extension.extension", "sliceName": part.url,
                             "short": part.short, "min": part.min, "max": part.max})
            elements.append({"id": f"{sid}.extension", "path": "Extension.extension.extension", "max": "0"})
            elements.append({"id": f"{sid}.url", "path": "Extension.extension.url", "fixedUri": part.url})
            value: dict[str, Any] = {"id": f"{sid}.value[x]", "path": "Extension.extension.value[x]",
                                     "min": 1, "type": [{"code": part.type}]}
            if part.valueset:
                value["binding"] = {"strength": "required", "valueSet": part.valueset
                                    if part.valueset.startswith("http") else ns.canonical("ValueSet", part.valueset)}
            elements.append(value)
        elements.append({"id": "Extension.url", "path": "Extension.url", "fixedUri": url})
        elements.append({"id": "Extension.value[x]", "path": "Extension.value[x]", "max": "0"})
    else:
        assert ext.value_type is not None, ext.name
        elements.append({"id": "Extension.extension", "path": "Extension.extension", "max": "0"})
        elements.append({"id": "Extension.url", "path": "Extension.url", "fixedUri": url})
        vtype: dict[str, Any] = {"code": ext.value_type}
        if ext.target:
            vtype["targetProfile"] = [f"{FHIR_CORE}{ext.target}"]
        elements.append({"id": "Extension.value[x]", "path": "Extension.value[x]", "min": 1, "type": [vtype]})
    return {
        "resourceType": "StructureDefinition",
        "id": ext.id,
        "url": url,
        "version": PACKAGE_VERSION,
        "name": ext.id.replace("-", ""),
        "title": ext.title,
        "status": "draft",
        "publisher": PUBLISHER,
        "description": ext.description,
        "fhirVersion": FHIR_VERSION,
        "kind": "complex-type",
        "abstract": False,
        "context": [{"type": "element", "expression": c} for c in ext.contexts],
        "type": "Extension",
        "baseDefinition": f"{FHIR_CORE}Extension",
        "derivation": "constraint",
        "differential": {"element": elements},
    }


# --- profiles -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ProfileDef:
    name: str  # "S117-Patient"
    type: str
    base: str
    title: str
    description: str
    # Differential elements after the extension slices (ids relative to type).
    elements: tuple[dict[str, Any], ...] = ()
    base_slices_extension: bool = False  # the base already declares extension slicing
    example: str = ""  # the example's file stem (set by build_package)


def _e(eid: str, **kw: Any) -> dict[str, Any]:
    return {"id": eid, "path": _path_of(eid), **kw}


def _path_of(eid: str) -> str:
    return ".".join(part.split(":")[0] for part in eid.split("."))


def _profiles(ns: Namespaces) -> tuple[ProfileDef, ...]:
    org_ref = [{"code": "Reference", "targetProfile": [f"{FHIR_CORE}Organization"]}]
    return (
        ProfileDef(
            "S117-MessageBundle", "Bundle", f"{FHIR_CORE}Bundle", "S117 message Bundle",
            "An S117 Hub message: a Bundle of type message whose first entry is an S117 MessageHeader. "
            "Outbound (the hub's event messages to councils and ICBs) and inbound (a trust's register "
            "change to $process-message).",
            (
                _e("Bundle.type", fixedCode="message"),
                _e("Bundle.timestamp", min=1),
                _e("Bundle.entry", min=2),
                _e("Bundle.entry.fullUrl", min=1),
                _e("Bundle.entry.resource", min=1),
            ),
        ),
        ProfileDef(
            "S117-MessageHeader", "MessageHeader", f"{FHIR_CORE}MessageHeader", "S117 MessageHeader",
            "The header of an S117 Hub message: the event (the hub's s117-event codes outbound, its "
            "register change types inbound), when it took effect, who it is for, and its focus (the "
            "EpisodeOfCare of the entitlement outbound, the detention Encounter too when shared).",
            (
                _e("MessageHeader.event[x]", type=[{"code": "Coding"}],
                   binding={"strength": "required", "valueSet": ns.canonical("ValueSet", "s117-message-event")}),
                _e("MessageHeader.event[x].system", min=1),
                _e("MessageHeader.event[x].code", min=1),
                _e("MessageHeader.source.endpoint", min=1),
                _e("MessageHeader.focus", min=1),
            ),
        ),
        ProfileDef(
            "S117-Patient", "Patient", f"{UKCORE}UKCore-Patient", "S117 Patient",
            "The person the message is about: the hub's person id always (outbound); the NHS number, "
            "name, birth date and postcode only as the recipient's data-sharing agreement allows.",
            (
                _e("Patient.identifier", min=1),
                _e("Patient.address.extension",
                   slicing={"discriminator": [{"type": "value", "path": "url"}], "rules": "open"}),
                _e("Patient.address.extension:residenceCouncil", sliceName="residenceCouncil", min=0, max="1",
                   type=[{"code": "Extension", "profile": [ns.extension("S117-ResidenceCouncil")]}]),
            ),
            base_slices_extension=True,
        ),
        ProfileDef(
            "S117-Encounter", "Encounter", f"{UKCORE}UKCore-Encounter", "S117 detention Encounter",
            "The detention under the Mental Health Act 1983: the UK Core legal status (England "
            "classification), when it started, and the hospital (ODS) as serviceProvider.",
            (
                _e("Encounter.subject", min=1),
            ),
            base_slices_extension=True,
        ),
        ProfileDef(
            "S117-EpisodeOfCare", "EpisodeOfCare", f"{UKCORE}UKCore-EpisodeOfCare",
            "S117 aftercare EpisodeOfCare",
            "The person's s117 aftercare entitlement: its status and period, the responsible council "
            "(managingOrganization, ONS GSS code) and NHS commissioner, the next review and the reasons.",
            (
                _e("EpisodeOfCare.type", min=1),
                _e("EpisodeOfCare.managingOrganization", type=org_ref),
            ),
        ),
        ProfileDef(
            "S117-Organization", "Organization", f"{UKCORE}UKCore-Organization", "S117 Organization",
            "A body named in S117 messages: an NHS body by its ODS code, a council by its ONS GSS code. "
            "Hub messages refer to organisations logically (Reference.identifier); this profile is for "
            "receivers that resolve them to resources.",
            (_e("Organization.identifier", min=1),),
            base_slices_extension=True,
        ),
        ProfileDef(
            "S117-Position", "Parameters", f"{FHIR_CORE}Parameters", "S117 recipient position",
            "The person's whole current position for the recipient (roles, entitlement, responsible bodies "
            "as its agreement allows, a body owed and not determined as responsibilityUndetermined (role, "
            "absentReason, reason), pending reviews, open disputes) and its per-(person, recipient) "
            "version; a correction names the event it supersedes and the reason. A receiver keeps, per "
            "person, the position of the highest version it has seen. A focus of the MessageHeader.",
            (
                _e("Parameters.parameter", min=1),
                _e("Parameters.parameter.name", min=1),
            ),
        ),
        ProfileDef(
            "S117-Task", "Task", f"{FHIR_CORE}Task", "S117 transfer or dispute Task",
            "A transfer of responsibility or a dispute stage as a workflow: status (requested, accepted, "
            "rejected, in-progress, completed; cancelled: a transfer withdrawn because later history shows "
            "responsibility did not change hands, or superseded by the same hand-over on another date, or a dispute "
            "withdrawn because the change that raised it was retracted, the reason in statusReason; a dispute "
            "reopened when the change its resolution rested on was retracted is in-progress again, with a note), "
            "the clock's owner, restriction.period the clock, focus the "
            "person's s117 EpisodeOfCare (Worcs 4.3.4, 4.4.8, 15.1-15.6). Shared under the field group "
            "'workflow'.",
            (
                _e("Task.identifier", min=1),
                _e("Task.focus", min=1),
                _e("Task.for", min=1),
            ),
        ),
        ProfileDef(
            "S117-ReconciliationDrift", "Basic", f"{FHIR_CORE}Basic", "S117 reconciliation drift",
            "The focus of an s117-reconciliation-drift message: a body's own s117 list has drifted from the "
            "hub's register past the threshold in its data-sharing agreement. Counts only, about the body "
            "(subject, by GSS or ODS code), never a person: open differences per kind (DriftCount), the totals "
            "(DriftSummary), the threshold (DriftThreshold), the snapshot id (identifier) and the report's URL "
            "(ReconciliationReport).",
            (
                _e("Basic.identifier", min=1, max="1"),
                _e("Basic.identifier.system", min=1),
                _e("Basic.identifier.value", min=1),
                _e("Basic.subject", min=1),
                _e("Basic.subject.identifier", min=1),
                _e("Basic.created", min=1),
            ),
        ),
    )


def _profile_sd(p: ProfileDef, ns: Namespaces) -> dict[str, Any]:
    elements: list[dict[str, Any]] = []
    exts = [x for x in EXTENSIONS if p.type in x.contexts]
    own = list(p.elements)
    head = [e for e in own if e["path"] == p.type]
    elements.extend(head)
    if exts:
        if not p.base_slices_extension:
            elements.append({"id": f"{p.type}.extension", "path": f"{p.type}.extension",
                             "slicing": {"discriminator": [{"type": "value", "path": "url"}], "rules": "open"}})
        for x in exts:
            elements.append({"id": f"{p.type}.extension:{x.slice_name}", "path": f"{p.type}.extension",
                             "sliceName": x.slice_name, "min": 0, "max": x.max,
                             "type": [{"code": "Extension", "profile": [ns.extension(x.name)]}]})
    elements.extend(e for e in own if e["path"] != p.type)
    return {
        "resourceType": "StructureDefinition",
        "id": p.name,
        "url": ns.profile(p.name),
        "version": PACKAGE_VERSION,
        "name": p.name.replace("-", ""),
        "title": p.title,
        "status": "draft",
        "publisher": PUBLISHER,
        "description": p.description,
        "fhirVersion": FHIR_VERSION,
        "kind": "resource",
        "abstract": False,
        "type": p.type,
        "baseDefinition": p.base,
        "derivation": "constraint",
        "differential": {"element": copy.deepcopy(elements)},
    }


PROFILES: Final = {p.type: p.name for p in _profiles(DEFAULT_NAMESPACES)}


def profile_url(resource_type: str, ns: Namespaces = DEFAULT_NAMESPACES) -> str:
    """The hub profile a resource of this type declares in meta.profile."""
    return ns.profile(PROFILES[resource_type])


def required_elements(resource_type: str) -> tuple[str, ...]:
    """Direct children of the resource the hub profile requires (min >= 1),
    with what the base (R4 / UK Core) already requires of the hub's use."""
    p = next(x for x in _profiles(DEFAULT_NAMESPACES) if x.type == resource_type)
    out = []
    for e in p.elements:
        parts = e["path"].split(".")
        if len(parts) == 2 and e.get("min", 0) >= 1 and ":" not in e["id"]:
            out.append(parts[1])
    return tuple(out)


# --- terminology ----------------------------------------------------------------
_ASPECTS: Final = (
    ("event", "Event", "What happened, in words (the event's summary)."),
    ("entitlement", "Entitlement", "Whether the person is entitled to s117 aftercare, and since when."),
    ("responsible-council", "Responsible council", "The council responsible for the aftercare."),
    ("responsible-commissioner", "Responsible NHS commissioner", "The NHS body responsible for commissioning it."),
    ("coordinating-council", "Coordinating council", "The council coordinating the aftercare."),
    ("next-review", "Next review", "When the aftercare is next due for review."),
    ("discharge-refused", "Discharge refused", "Why a discharge from s117 aftercare was refused."),
)
# hub.domain.children NoticeReason and Basis (a test keeps the two equal).
CHILD_NOTICE_CODES: Final = (
    ("expected-long-stay", "Expected to stay 12 weeks or more",
     "The trust expects the child's stay in hospital to last 12 weeks or more: told at admission "
     "(Children Act 1989 s85(1)(b))."),
    ("long-stay-reached", "12 weeks in hospital",
     "The child has been in hospital 12 consecutive weeks (Children Act 1989 s85(1)(a))."),
    ("ehc-plan-admission", "Admitted with an EHC plan",
     "A child or young person with an Education, Health and Care plan was admitted under the Mental Health Act "
     "1983 (Worcs 6.4)."),
    ("stay-ended", "The stay in hospital ended",
     "The child of whom the council was told has left hospital (discharged, onto a community treatment order, "
     "or died): the date is the message's event date (Children Act 1989 s85(4))."),
    ("admission-recorded-in-error", "Withdrawn: the admission was recorded in error",
     "The detention the notice was about was retracted as recorded in error: the notice was sent in error "
     "(UK GDPR Art. 16, 19)."),
    ("stay-continues", "Withdrawn: the child is in hospital",
     "The leaving of hospital the notice told was retracted as recorded in error: the stay continues (UK GDPR "
     "Art. 16, 19)."),
    ("leaving-recorded-in-error", "Withdrawn: that leaving was recorded in error",
     "The leaving of hospital the notice told was retracted as recorded in error; another change ends the stay, "
     "told by its own notice (UK GDPR Art. 16, 19)."),
    ("another-council-concerned", "Withdrawn: another council is concerned",
     "The stay the notice told of now begins with another detention, which names another council as the one "
     "the notice is for (the council responsible for the child, Children Act 1989 s85(3), or the council "
     "maintaining the EHC plan), or a register change named (or, retracted, no longer names) the successor "
     "covering the child's address in a council area split since: the notice does not apply to this council, which is told nothing more of the "
     "stay unless it becomes the council concerned again (UK GDPR Art. 16, 19)."),
    ("admission-corrected", "Corrected: the stay began with another detention",
     "The stay the notice told of stands, but the detention that began it is not the one told (an earlier "
     "detention of the same stay was recorded late, or the one told was retracted while the child was in "
     "hospital): its date, section and hospital as now recorded are in this message's Encounter (UK GDPR "
     "Art. 16, 19)."),
    ("ordinary-residence", "Council of ordinary residence",
     "The council in whose area the child was ordinarily resident before the admission (Children Act 1989 "
     "s85(3)(a))."),
    ("hospital-area", "Council of the hospital's area",
     "The child had no ordinary residence: the council in whose area the hospital is (Children Act 1989 "
     "s85(3)(b))."),
    ("ehc-plan", "Council maintaining the EHC plan", "The council maintaining the EHC plan (Worcs 6.4)."),
    ("coordinating-council", "Council of the hospital's area, coordinating",
     "The council area the child was ordinarily resident in before the admission has since been split between "
     "successor councils (or succeeded by one not yet given a GSS code), and no register change has named the "
     "successor covering the address: the council of the hospital's area, which coordinates the person's "
     "aftercare meanwhile, is told; once the successor is named, this notice is withdrawn and the successor "
     "told."),
)

_REVIEW_KINDS: Final = (
    ("first", "First review", "The first review after the person left hospital."),
    ("annual", "Annual review", "The regular (at least yearly) review."),
    ("new-placement", "New placement review", "A review after a new placement."),
    ("unscheduled", "Unscheduled review", "A review brought forward."),
)



# hub.domain.reconciliation.Kind, with displays and definitions (a test keeps the two equal).
_DIFFERENCE_KINDS: Final = (
    (Kind.MISSING_ON_BODY_LIST.value, "Missing on the body's list",
     "The hub's register holds an entitlement the body has a part in; the body's list does not have the person."),
    (Kind.MISSING_ON_HUB_REGISTER.value, "Missing on the hub's register",
     "The body's list has the person as entitled; the hub's register holds no entitlement in which the body "
     "has a part."),
    (Kind.ENTITLEMENT_DIFFERS.value, "Entitlement differs",
     "The body's list and the register disagree on whether the person is entitled to s117 aftercare."),
    (Kind.RESPONSIBLE_BODY_DIFFERS.value, "Responsible body differs", "The responsible council or ICB differs."),
    (Kind.DATES_DIFFER.value, "Dates differ", "The entitlement's start or end date differs."),
    (Kind.REVIEW_OVERDUE.value, "Review overdue on one side",
     "One side has the next review overdue, the other not."),
)


def _codesystem(ns: Namespaces, cid: str, title: str, description: str,
                concepts: Iterable[tuple[str, str, str]]) -> dict[str, Any]:
    concept = [{"code": c, "display": d, "definition": f} for c, d, f in concepts]
    return {
        "resourceType": "CodeSystem", "id": cid, "url": ns.canonical("CodeSystem", cid),
        "version": PACKAGE_VERSION, "name": "".join(w.capitalize() for w in cid.split("-")),
        "title": title, "status": "active", "experimental": False, "publisher": PUBLISHER,
        "description": description, "caseSensitive": True, "content": "complete",
        "count": len(concept), "concept": concept,
    }


def _shipped_codesystem(ns: Namespaces, filename: str, url: str) -> dict[str, Any]:
    cs = json.loads((_SCHEMAS / filename).read_text(encoding="utf-8"))
    cs["url"] = url
    return cs


def _valueset(ns: Namespaces, vid: str, title: str, description: str, systems: Iterable[str]) -> dict[str, Any]:
    return {
        "resourceType": "ValueSet", "id": vid, "url": ns.canonical("ValueSet", vid),
        "version": PACKAGE_VERSION, "name": "".join(w.capitalize() for w in vid.split("-")),
        "title": title, "status": "active", "experimental": False, "publisher": PUBLISHER,
        "description": description, "compose": {"include": [{"system": s} for s in systems]},
    }


def _terminology(ns: Namespaces) -> list[dict[str, Any]]:
    return [
        _shipped_codesystem(ns, "CodeSystem-s117-event.json", ns.event_codesystem),
        _shipped_codesystem(ns, "CodeSystem-s117-register-change-type.json", ns.change_type_codesystem),
        _shipped_codesystem(ns, "CodeSystem-s117-person-event.json", ns.person_event_codesystem),
        _codesystem(ns, "s117-determination-aspect", "S117 determination aspect",
                    "The aspect of a person's s117 status an Extension-S117-Determination explains.", _ASPECTS),
        _codesystem(ns, "s117-review-kind", "S117 review kind",
                    "Kinds of s117 aftercare review (Extension-S117-NextReview kind).", _REVIEW_KINDS),
        _valueset(ns, "s117-event", "S117 Hub events", "Every event the hub announces.", [ns.event_codesystem]),
        _valueset(ns, "s117-register-change-type", "S117 register change types",
                  "Every register change a trust may report.", [ns.change_type_codesystem]),
        _valueset(ns, "s117-message-event", "S117 message events",
                  "MessageHeader.eventCoding of an S117 message: an outbound event, an inbound register change "
                  "or an inbound person event (a merge of NHS numbers).",
                  [ns.event_codesystem, ns.change_type_codesystem, ns.person_event_codesystem]),
        _codesystem(ns, "s117-reconciliation-difference", "S117 reconciliation difference",
                    "Kinds of difference between a body's own s117 list and the hub's register "
                    "(hub.domain.reconciliation.Kind; Extension-S117-DriftCount kind).", _DIFFERENCE_KINDS),
        _valueset(ns, "s117-reconciliation-difference", "S117 reconciliation differences", "Every kind.",
                  [ns.canonical("CodeSystem", "s117-reconciliation-difference")]),
        _valueset(ns, "s117-determination-aspect", "S117 determination aspects", "Every aspect.",
                  [ns.canonical("CodeSystem", "s117-determination-aspect")]),
        _valueset(ns, "s117-review-kind", "S117 review kinds", "Every review kind.",
                  [ns.canonical("CodeSystem", "s117-review-kind")]),
        _codesystem(ns, "s117-child-notice", "S117 child notice",
                    "Why a child's notice was sent and why the council is told (Extension-S117-ChildNotice).",
                    CHILD_NOTICE_CODES),
        _valueset(ns, "s117-child-notice", "S117 child notice codes", "Every code.",
                  [ns.canonical("CodeSystem", "s117-child-notice")]),
    ]


# --- messaging -------------------------------------------------------------------
# Field groups a data-sharing agreement may grant, and what each adds to a message
# (hub.fhir.messages.FIELD_GROUPS; a test keeps the two equal).
FIELD_GROUP_CONTENT: Final = {
    "identity": "Patient.identifier (NHS number)",
    "demographics": "Patient.name, Patient.birthDate",
    "address": "Patient.address.postalCode",
    "legal-status": "the detention Encounter (UK Core legal status, period, hospital) in MessageHeader.focus",
    "responsibility": "EpisodeOfCare.managingOrganization (responsible council), the ResponsibleCommissioner "
                      "and CoordinatingCouncil extensions; a body owed and not determined as the "
                      "ResponsibilityUndetermined extension (and the position's responsibilityUndetermined)",
    "explanations": "the Determination extensions (explanations and policy citations)",
    "workflow": "the transfer or dispute Task (S117-Task: state, owner, clock, interim split) in MessageHeader.focus",
}


def _field_group_text() -> str:
    rows = "\n".join(f"* `{g}`: {what}" for g, what in FIELD_GROUP_CONTENT.items())
    return ("Always present: MessageHeader, the Patient (hub person id), the EpisodeOfCare (status, period, "
            "next review) and the recipient's position (S117-Position Parameters: roles, entitlement, pending "
            "reviews, open disputes, version). Each field group below appears only when the recipient's data-sharing agreement "
            "grants it:\n\n" + rows)


def _message_definitions(ns: Namespaces) -> list[dict[str, Any]]:
    from hub.fhir.messages import EVENT_DISPLAYS  # noqa: PLC0415 (messages imports this module)

    out = []
    for event, display in EVENT_DISPLAYS.items():
        if event in BODY_EVENT_TYPES:
            out.append(_drift_message_definition(ns, event, display))
            continue
        out.append({
            "resourceType": "MessageDefinition", "id": event.value,
            "url": ns.canonical("MessageDefinition", event.value), "version": PACKAGE_VERSION,
            "name": event.value.replace("-", "").upper(), "title": display, "status": "draft",
            "date": "2026-11-30", "publisher": PUBLISHER,
            "description": (f"{display}: sent by the hub to the one council the notice is for (the council "
                            f"responsible for the child, or the council maintaining the EHC plan; a leaving notice "
                            f"a withdrawal or a correction: the council the notice it follows went to), within what its "
                            f"data-sharing agreement allows: the Patient, the detention Encounter, the event's "
                            f"explanation and Extension-S117-ChildNotice only (no position, responsibility, "
                            f"address or workflow)." if event in CHILD_EVENT_TYPES else
                            f"{display}: sent by the hub to every council and ICB that must hear of it, "
                            f"within what each one's data-sharing agreement allows."),
            "purpose": _field_group_text(),
            "eventCoding": {"system": ns.event_codesystem, "code": event.value, "display": display},
            "category": "notification",
            "focus": [
                {"code": "EpisodeOfCare", "profile": ns.profile("S117-EpisodeOfCare"), "min": 1, "max": "1"},
                {"code": "Encounter", "profile": ns.profile("S117-Encounter"), "min": 0, "max": "1"},
                {"code": "Parameters", "profile": ns.profile("S117-Position"), "min": 0, "max": "1"},
                {"code": "Task", "profile": ns.profile("S117-Task"), "min": 0, "max": "1"},
            ],
            "responseRequired": "never",
        })
    codes = [c.value for c in ChangeType]
    out.append({
        "resourceType": "MessageDefinition", "id": "s117-register-change",
        "url": ns.canonical("MessageDefinition", "s117-register-change"), "version": PACKAGE_VERSION,
        "name": "S117REGISTERCHANGE", "title": "S117 register change (inbound)", "status": "draft",
        "date": "2026-11-30", "publisher": PUBLISHER,
        "description": "A trust reports one register change to POST /v1/fhir/$process-message. "
                       "MessageHeader.eventCoding is a code of the register change types ("
                       + ", ".join(codes) + "); focus the detention Encounter and the Patient. "
                       "The hub answers with a response message (code ok) or a 422 OperationOutcome.",
        "eventCoding": {"system": ns.change_type_codesystem, "code": ChangeType.DETAINED.value},
        "category": "consequence",
        "focus": [
            {"code": "Encounter", "profile": ns.profile("S117-Encounter"), "min": 0, "max": "1"},
            {"code": "Patient", "profile": ns.profile("S117-Patient"), "min": 0, "max": "1"},
        ],
        "responseRequired": "always",
        "allowedResponse": [{"message": ns.canonical("MessageDefinition", "s117-register-change-response"),
                             "situation": "The change was accepted (or is a duplicate: the first answer)."}],
    })
    out.append({
        "resourceType": "MessageDefinition", "id": "s117-register-change-response",
        "url": ns.canonical("MessageDefinition", "s117-register-change-response"), "version": PACKAGE_VERSION,
        "name": "S117REGISTERCHANGERESPONSE", "title": "S117 register change accepted", "status": "draft",
        "date": "2026-11-30", "publisher": PUBLISHER,
        "description": "The hub's response message to an accepted register change: MessageHeader.response.code "
                       "ok, identifying the change and the person.",
        "eventCoding": {"system": ns.change_type_codesystem, "code": ChangeType.DETAINED.value},
        "category": "notification",
        "responseRequired": "never",
    })
    out.append({
        "resourceType": "MessageDefinition", "id": "s117-person-merge",
        "url": ns.canonical("MessageDefinition", "s117-person-merge"), "version": PACKAGE_VERSION,
        "name": "S117PERSONMERGE", "title": "S117 NHS numbers merged (inbound)", "status": "draft",
        "date": "2026-12-05", "publisher": PUBLISHER,
        "description": "A trust reports that PDS merged two NHS numbers of one patient to POST "
                       "/v1/fhir/$process-message. MessageHeader.eventCoding is nhs-numbers-merged of the person "
                       "events; focus the Patient: identifier the retained NHS number, one link of type replaces "
                       "whose other.identifier is the superseded NHS number. Merged as HL7 A40 and POST "
                       "/v1/persons/merge merge (one access policy); the hub answers with a response message "
                       "(code ok; the same merge again: the first answer) or an OperationOutcome.",
        "eventCoding": {"system": ns.person_event_codesystem, "code": "nhs-numbers-merged"},
        "category": "consequence",
        "focus": [{"code": "Patient", "profile": ns.profile("S117-Patient"), "min": 1, "max": "1"}],
        "responseRequired": "always",
        "allowedResponse": [{"message": ns.canonical("MessageDefinition", "s117-register-change-response"),
                             "situation": "The numbers were merged (or merged before: the first answer)."}],
    })
    return out


def _drift_message_definition(ns: Namespaces, event: EventType, display: str) -> dict[str, Any]:
    return {
        "resourceType": "MessageDefinition", "id": event.value,
        "url": ns.canonical("MessageDefinition", event.value), "version": PACKAGE_VERSION,
        "name": event.value.replace("-", "").upper(), "title": display, "status": "draft",
        "date": "2026-11-30", "publisher": PUBLISHER,
        "description": f"{display}: sent to a body (council, ICB or trust) when the open differences between its "
                       "own s117 list and the hub's register reach the threshold its data-sharing agreement sets "
                       "(recipients[].reconciliation: drift_alert_open_items and/or drift_alert_percent), once "
                       "per crossing; the agreement must grant the event type. Idempotent: the event id derives "
                       "from the body and the snapshot.",
        "purpose": "About the body, not a person: the focus (S117-ReconciliationDrift, a Basic) carries counts "
                   "only (open differences per kind, the total, the people on the body's list, the threshold, the "
                   "snapshot id and the report's URL). No Patient, no person id, no NHS number; field groups do "
                   "not apply.",
        "eventCoding": {"system": ns.event_codesystem, "code": event.value, "display": display},
        "category": "notification",
        "focus": [{"code": "Basic", "profile": ns.profile("S117-ReconciliationDrift"), "min": 1, "max": "1"}],
        "responseRequired": "never",
    }


REST_ENDPOINTS: Final = (
    ("POST /v1/register-changes", "a trust's register change as canonical JSON"),
    ("POST /v1/fhir/$process-message", "a trust's register change as a FHIR message (this CapabilityStatement)"),
    ("POST /v1/council-files", "a council case system's nightly export"),
    ("POST /v1/subscriptions", "a council's or ICB's subscription: webhook, feed, Kafka topic or file"),
    ("GET /v1/feeds/{id}", "the pull feed of FHIR messages"),
    ("GET /v1/persons/{person_id}/s117", "a person's s117 status with explanations"),
    ("GET /v1/reports/register-summary", "the anonymised register summary"),
    ("POST /v1/reconciliations", "a body's whole s117 list, compared with the register"),
    ("GET /v1/reconciliations/{id}", "the drift report of one snapshot (the s117-reconciliation-drift link)"),
)


# The FHIR R5 Subscriptions Backport IG's operations on a Subscription (served as in that IG).
BACKPORT_OPERATIONS: Final = (
    ("status", "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status"),
    ("events", "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events"),
)


def _rest_resources(ns: Namespaces) -> list[dict[str, Any]]:
    """The FHIR resources the hub serves under /v1/fhir (hub/api/fhir_tasks.py, fhir_subscriptions.py), with
    the interactions it really answers. SubscriptionTopic (GET /v1/fhir/SubscriptionTopic, R4B shape) is no
    R4 resource type: the server's statement (hub/fhir/capability.py) names the topics in the Subscription's
    documentation."""
    return [
        {"type": "Task", "profile": ns.profile("S117-Task"),
         "documentation": "A transfer case (id = the case id) or a dispute stage (id = the case id, then -stage- and the stage number), read by "
                          "its parties; the incoming body may set a transfer Task's status to accepted or rejected "
                          "(with statusReason.text) by update or a JSON Patch (application/json-patch+json).",
         "interaction": [{"code": "read"}, {"code": "update"}, {"code": "patch"}],
         "versioning": "no-version", "updateCreate": False},
        {"type": "Subscription",
         "documentation": "Topic-based subscriptions (FHIR R5 Subscriptions Backport IG): criteria is one of the "
                          "hub's SubscriptionTopic urls, one per S117 event type (GET SubscriptionTopic lists "
                          "them); channel rest-hook; payload id-only or full-resource.",
         "interaction": [{"code": "create"}, {"code": "read"}, {"code": "delete"}],
         "versioning": "no-version",
         "operation": [{"name": name, "definition": url} for name, url in BACKPORT_OPERATIONS]},
    ]


def _capability_statement(ns: Namespaces, endpoint: str) -> dict[str, Any]:
    from hub.fhir.messages import EVENT_DISPLAYS  # noqa: PLC0415

    docs = "The hub's other (non-FHIR) REST endpoints, authenticated by API key:\n\n" + "\n".join(
        f"* `{ep}`: {what}" for ep, what in REST_ENDPOINTS)
    return {
        "resourceType": "CapabilityStatement", "id": "s117-hub",
        "url": ns.canonical("CapabilityStatement", "s117-hub"), "version": PACKAGE_VERSION,
        "name": "S117Hub", "title": "S117 Hub", "status": "draft", "date": "2026-11-30",
        "publisher": PUBLISHER,
        "description": "The S117 Hub: receives trusts' register changes as FHIR messages and sends FHIR R4 "
                       "(UK Core) event messages about Section 117 aftercare to councils and ICBs.",
        "kind": "instance",
        "software": {"name": "S117 Hub", "version": PACKAGE_VERSION},
        "implementation": {"description": "S117 Hub", "url": endpoint},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "documentation": docs,
            "security": {"description": "An API key per client (X-API-Key); only its SHA-256 is stored."},
            "resource": _rest_resources(ns),
            "operation": [{"name": "process-message",
                           "definition": "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message",
                           "documentation": "A trust's register change (or a merge of two NHS numbers by PDS: "
                                            "event nhs-numbers-merged) as a FHIR message Bundle "
                                            "(application/fhir+json, FHIR 4.0), processed synchronously: the "
                                            "answer is the response message (200) or an OperationOutcome. "
                                            "async=true is refused (not-supported)."}],
        }],
        "messaging": [{
            "endpoint": [{"protocol": {"system": "http://terminology.hl7.org/CodeSystem/message-transport",
                                       "code": "http"}, "address": endpoint}],
            "documentation": "Outbound messages are POSTed to each subscriber's webhook (signed), or pulled "
                             "from its feed, or written to its Kafka topic or file.",
            "supportedMessage": [
                *({"mode": "sender", "definition": ns.canonical("MessageDefinition", e.value)} for e in EVENT_DISPLAYS),
                {"mode": "receiver", "definition": ns.canonical("MessageDefinition", "s117-register-change")},
                {"mode": "receiver", "definition": ns.canonical("MessageDefinition", "s117-person-merge")},
            ],
        }],
    }


# --- examples ----------------------------------------------------------------------
_GOLDEN = Path(__file__).resolve().parents[2] / "tests" / "golden"


def _examples(ns: Namespaces) -> dict[str, dict[str, Any]]:
    """Examples: a generated message Bundle per golden case, each of its
    resources on its own, and an Organization per kind."""
    from hub.fhir.examples import BOB_ICB, BUCKS_COUNCIL, golden_cases  # noqa: PLC0415
    from hub.fhir.messages import build_event_message  # noqa: PLC0415

    out: dict[str, dict[str, Any]] = {}
    for name, kwargs in golden_cases().items():
        bundle = build_event_message(**{**kwargs, "source_endpoint": f"{ns.fhir_base}/messages"}, ns=ns)
        out[f"Bundle-{name}"] = bundle
        for entry in bundle["entry"]:
            res = entry["resource"]
            out.setdefault(f"{res['resourceType']}-{name}", res)
    # A transfer message as the workflows send it: the Task joins the Bundle (field group "workflow").
    from hub.workflows.fhir_task import add_task  # noqa: PLC0415

    transfer = copy.deepcopy(out["Bundle-responsibility-transferred"])
    add_task(transfer, {"task": orjson.dumps({
        "resourceType": "Task", "id": "example", "status": "requested", "businessStatus": {"text": "awaiting"},
        "intent": "order", "code": {"text": "S117 transfer of council responsibility"},
        "description": "council responsibility moves from E06000060 to E10000034 (re-detention in another area)",
        "authoredOn": "2025-06-02", "requester": {"identifier": {"system": GSS_CODE_SYSTEM, "value": "E06000060"}},
        "owner": {"identifier": {"system": GSS_CODE_SYSTEM, "value": "E10000034"}},
        "restriction": {"period": {"start": "2025-06-02", "end": "2025-06-16"}},
    }).decode()}, frozenset({"workflow"}), ns=ns)
    out["Bundle-transfer-with-task"] = transfer
    out["Task-transfer"] = transfer["entry"][-1]["resource"]
    from hub.fhir.drift import build_drift_message, drift_example  # noqa: PLC0415

    drift = build_drift_message(**{**drift_example(), "source_endpoint": f"{ns.fhir_base}/messages"}, ns=ns)
    out["Bundle-reconciliation-drift"] = drift
    out["Basic-reconciliation-drift"] = drift["entry"][1]["resource"]
    for org, system in ((BUCKS_COUNCIL, GSS_CODE_SYSTEM), (BOB_ICB, ODS_ORGANIZATION_SYSTEM)):
        out[f"Organization-{org.code}"] = {
            "resourceType": "Organization", "id": org.code,
            "meta": {"profile": [ns.profile("S117-Organization")]},
            "identifier": [{"system": system, "value": org.code}], "name": org.name,
        }
    return out


# --- the package ------------------------------------------------------------------
def _file_name(res: dict[str, Any]) -> str:
    return f"{res['resourceType']}-{res['id']}.json"


def _dump(res: dict[str, Any]) -> str:
    return json.dumps(res, indent=2, ensure_ascii=False) + "\n"


def _index(files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    entries = []
    for name, res in sorted(files.items()):
        item = {"filename": name, "resourceType": res["resourceType"], "id": res["id"]}
        for key in ("url", "version", "kind", "type"):
            if isinstance(res.get(key), str):
                item[key] = res[key]
        entries.append(item)
    return {"index-version": 1, "files": entries}


def conformance_resources(ns: Namespaces = DEFAULT_NAMESPACES, endpoint: str | None = None) -> list[dict[str, Any]]:
    return [
        *(_profile_sd(p, ns) for p in _profiles(ns)),
        *(_extension_sd(x, ns) for x in EXTENSIONS),
        *_terminology(ns),
        *_message_definitions(ns),
        _capability_statement(ns, endpoint or f"{ns.fhir_base}"),
    ]


def build_package(ns: Namespaces = DEFAULT_NAMESPACES, endpoint: str | None = None) -> dict[str, str]:
    """Every file of the FHIR NPM package: relative path -> text."""
    resources = {_file_name(r): r for r in conformance_resources(ns, endpoint)}
    examples = {f"{stem}.json": res for stem, res in _examples(ns).items()}
    manifest = {
        "name": PACKAGE_NAME,
        "version": PACKAGE_VERSION,
        "description": "S117 Hub: FHIR R4 (UK Core) messaging for Section 117 (Mental Health Act 1983) aftercare: "
                       "profiles, extensions, terminology, message definitions and the hub's CapabilityStatement.",
        "canonical": ns.fhir_base,
        "url": ns.fhir_base,
        "fhirVersions": [FHIR_VERSION],
        "type": "fhir.ig",
        "license": "Apache-2.0",
        "author": PUBLISHER,
        "dependencies": {"hl7.fhir.r4.core": FHIR_VERSION, UKCORE_PACKAGE[0]: UKCORE_PACKAGE[1]},
    }
    files = {f"package/{n}": _dump(r) for n, r in resources.items()}
    files["package/package.json"] = json.dumps(manifest, indent=2) + "\n"
    files["package/.index.json"] = json.dumps(_index(resources), indent=2) + "\n"
    files.update({f"package/examples/{n}": _dump(r) for n, r in examples.items()})
    files["package/examples/.index.json"] = json.dumps(_index(examples), indent=2) + "\n"
    return files

