"""Outbound FHIR R4 (UK Core) event messages, built as plain dicts.

This is the delivery hot path, so the Bundle is assembled as dicts ready for
``orjson.dumps`` rather than through the fhir.resources models (which cost
~100x more). ``hub.fhir.validate.validate_message`` checks the same shape at
the edge and in tests; the golden files in tests/golden pin it.

Message shape (Bundle type "message", one entry per resource, urn:uuid
fullUrls, references are those fullUrls; organisations are logical references
by national identifier with a display name, not entries):

* MessageHeader: eventCoding from the hub's s117-event CodeSystem; focus ->
  EpisodeOfCare (and the detention Encounter when shared); destination names
  the recipient by GSS (councils) or ODS, endpoint a stable urn:uuid.
* Every resource declares its hub profile in meta.profile
  (hub/fhir/conformance.py); every hub URL is under the configured canonical
  base (``ns``, hub.fhir.namespaces.Namespaces).
* Patient: the hub person id always; NHS number, name/birthDate and postcode
  only when the recipient's agreement includes the matching field group.
* Encounter (group "legal-status"): the detention, with the UK Core legal
  status extension and the hospital (ODS) as serviceProvider.
* EpisodeOfCare: the s117 entitlement (always: it is what the message is
  about); responsible council as managingOrganization and the commissioner
  as a hub extension (group "responsibility"), and a body owed that the hub
  could not determine as Extension-S117-ResponsibilityUndetermined (role,
  data-absent-reason code, reason in words: hub/domain/views.py
  `undetermined_bodies`), never an absent element alone, which also means
  "not disclosed" (hazard H-03); the determinations' reasons as hub
  extensions (group "explanations").
"""

from __future__ import annotations

from binascii import hexlify
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from datetime import date, datetime
import uuid
from hashlib import blake2b
from typing import Any, Final

from hub.ids import uuid5
from hub.domain.model import (
    Determination,
    DomainEvent,
    EventType,
    Org,
    RegisterChange,
    S117Status,
)
from hub.domain.views import undetermined_bodies
from hub.fhir.namespaces import (
    ACT_CODE_SYSTEM,
    DEFAULT_NAMESPACES,
    LEGAL_STATUS_CONTEXT_SYSTEM,
    LEGAL_STATUS_ENGLAND_SYSTEM,
    LEGAL_STATUS_EXTENSION_URL,
    NHS_NUMBER_SYSTEM,
    ODS_ORGANIZATION_SYSTEM,
    Namespaces,
    org_identifier_system,
)

__all__ = [
    "ADDRESS",
    "DEMOGRAPHICS",
    "EVENT_DISPLAYS",
    "EXPLANATIONS",
    "FIELD_GROUPS",
    "HUB_SENDER_ID",
    "IDENTITY",
    "LEGAL_STATUS",
    "RESPONSIBILITY",
    "WORKFLOW",
    "PatientDetails",
    "build_event_message",
]

# The hub profile of each resource type it emits (hub/fhir/conformance.py
# defines them; a test keeps the two equal).
PROFILES: Final[dict[str, str]] = {
    "Bundle": "S117-MessageBundle",
    "MessageHeader": "S117-MessageHeader",
    "Patient": "S117-Patient",
    "Encounter": "S117-Encounter",
    "EpisodeOfCare": "S117-EpisodeOfCare",
    "Parameters": "S117-Position",
    "Task": "S117-Task",
    "Basic": "S117-ReconciliationDrift",  # the drift message's counts (hub/fhir/drift.py)
}

# --- field groups a data-sharing agreement may allow ------------------------
IDENTITY: Final = "identity"  # NHS number
DEMOGRAPHICS: Final = "demographics"  # name, birthDate
ADDRESS: Final = "address"  # postcode
LEGAL_STATUS: Final = "legal-status"  # detention Encounter + legal status extension
RESPONSIBILITY: Final = "responsibility"  # council / commissioner on the EpisodeOfCare
EXPLANATIONS: Final = "explanations"  # why: determinations' explanation texts and citations
WORKFLOW: Final = "workflow"  # transfer / dispute Task: state, bodies, clock, interim split, reasons
FIELD_GROUPS: Final = frozenset(
    {IDENTITY, DEMOGRAPHICS, ADDRESS, LEGAL_STATUS, RESPONSIBILITY, EXPLANATIONS, WORKFLOW}
)

# Displays of the s117-event CodeSystem; a test pins them to
# schemas/CodeSystem-s117-event.json so the two cannot drift.
EVENT_DISPLAYS: Final[dict[EventType, str]] = {
    EventType.REGISTER_CHANGE_RECORDED: "S117 register change recorded",
    EventType.ENTITLEMENT_STARTED: "S117 aftercare entitlement started",
    EventType.ENTITLEMENT_ENDED: "S117 aftercare entitlement ended",
    EventType.RESPONSIBILITY_TRANSFERRED: "S117 responsibility transferred",
    EventType.DISCHARGE_REFUSED: "S117 discharge refused",
    EventType.DISPUTE_RAISED: "S117 responsibility dispute raised",
    EventType.DISPUTE_RESOLVED: "S117 responsibility dispute resolved",
    EventType.REVIEW_DUE: "S117 aftercare review due",
    EventType.MOVED_OUT_OF_AREA: "S117 person moved out of area",
    EventType.TRANSFER_UPDATED: "S117 transfer of responsibility updated",
    EventType.DISPUTE_UPDATED: "S117 responsibility dispute updated",
    EventType.WORKFLOW_DEADLINE: "S117 workflow deadline reminder or breach",
    EventType.NOTIFICATION_CORRECTED: "S117 notification corrected",
    EventType.RECONCILIATION_DRIFT: "S117 reconciliation drift past the agreed threshold",
    EventType.CHILD_LONG_STAY_NOTICE: "Child in hospital 12 weeks or more (Children Act 1989 s85)",
    EventType.CHILD_EHC_PLAN_NOTICE: "Child or young person with an EHC plan admitted to hospital",
    EventType.CHILD_LEFT_HOSPITAL_NOTICE: "Child's stay in hospital ended (Children Act 1989 s85(4))",
    EventType.CHILD_NOTICE_WITHDRAWN: "Child in hospital notice withdrawn",
    EventType.CHILD_NOTICE_CORRECTED: "Child in hospital notice corrected",
}

HUB_SENDER_ID: Final = "s117-hub"
_CONTEXT_DISPLAY: Final = {"admission": "Admission", "discharge": "Discharge"}
_EOC_TYPE_TEXT: Final = "Section 117 Mental Health Act 1983 aftercare"
# No dict is shared between messages or between two places in one message:
# callers (redaction, tests) may mutate the result.


@dataclass(frozen=True, slots=True)
class PatientDetails:
    """The personal details the store holds; never part of the domain model."""

    nhs_number: str
    given_name: str
    family_name: str
    birth_date: date | None = None
    postcode: str | None = None


def _entry_uuids(message_id: str) -> tuple[str, str, str, str]:
    """Four stable, distinct UUID strings for the message's entries.

    Derived from the message id so a re-sent message is byte-identical (and
    golden files are stable). One hash instead of four uuid5 calls: this is
    the hot path. The version nibble is set to 4 and the variant to RFC 4122
    so the strings are well-formed UUIDs.
    """
    d = bytearray(blake2b(message_id.encode(), digest_size=64).digest())
    for i in (6, 22, 38, 54):  # each 16 bytes' version nibble: 4 (the digest's own nibble dropped)
        d[i] = (d[i] & 0x0F) | 0x40
    for i in (8, 24, 40, 56):  # and variant: 10xx, the digest's low two bits kept ("89ab"[n & 3])
        d[i] = (d[i] & 0x3F) | 0x80
    h = d.hex()
    return (f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}",
            f"{h[32:40]}-{h[40:44]}-{h[44:48]}-{h[48:52]}-{h[52:64]}",
            f"{h[64:72]}-{h[72:76]}-{h[76:80]}-{h[80:84]}-{h[84:96]}",
            f"{h[96:104]}-{h[104:108]}-{h[108:112]}-{h[112:116]}-{h[116:128]}")


def _entry_uuids_ascii(message_id: str) -> tuple[bytes, bytes, bytes, bytes]:
    """`_entry_uuids` as ASCII bytes, for a message rendered as bytes
    (hub/fhir/message_json.py): the same digest, hex-encoded straight to bytes
    (`hexlify`) and joined by `%`, not four strings encoded one by one (four
    calls a message fewer; tests/unit/test_fhir_messages.py holds the two equal)."""
    d = bytearray(blake2b(message_id.encode(), digest_size=64).digest())
    for i in (6, 22, 38, 54):
        d[i] = (d[i] & 0x0F) | 0x40
    for i in (8, 24, 40, 56):
        d[i] = (d[i] & 0x3F) | 0x80
    h = hexlify(d)
    return (b"%b-%b-%b-%b-%b" % (h[0:8], h[8:12], h[12:16], h[16:20], h[20:32]),
            b"%b-%b-%b-%b-%b" % (h[32:40], h[40:44], h[44:48], h[48:52], h[52:64]),
            b"%b-%b-%b-%b-%b" % (h[64:72], h[72:76], h[76:80], h[80:84], h[84:96]),
            b"%b-%b-%b-%b-%b" % (h[96:104], h[104:108], h[108:112], h[112:116], h[116:128]))


def _org_ref(org: Org) -> dict[str, Any]:
    return {
        "identifier": {"system": org_identifier_system(org.kind), "value": org.code},
        "display": org.name,
    }


_ORG_ENDPOINT_NS: Final = uuid.UUID("5d0c6a52-4b7e-5a3c-9a57-117000000001")


def _org_endpoint(org: Org) -> str:
    # R4 makes destination.endpoint mandatory; the delivery channel's real
    # address is not the message's business, so the default is a stable
    # urn:uuid per organisation (UUIDv5 of its identifier system and code).
    return _endpoint_of(org_identifier_system(org.kind), org.code)


@lru_cache(maxsize=4096)
def _endpoint_of(system: str, code: str) -> str:
    return f"urn:uuid:{uuid5(_ORG_ENDPOINT_NS, system + '|' + code)}"


@dataclass(frozen=True, slots=True)
class _Urls:
    """The hub URLs a message names, formatted once per canonical base (not a few times a message)."""

    profiles: dict[str, str]  # resource type -> its hub profile
    event_occurred: str
    commissioner: str
    coordinating: str
    next_review: str
    determination: str
    undetermined: str


@lru_cache(maxsize=64)  # a hub has one base; tests make many
def _urls(ns: Namespaces) -> _Urls:
    return _Urls(
        profiles={t: ns.profile(name) for t, name in PROFILES.items()},
        event_occurred=ns.extension("S117-EventOccurred"),
        commissioner=ns.extension("S117-ResponsibleCommissioner"),
        coordinating=ns.extension("S117-CoordinatingCouncil"),
        next_review=ns.extension("S117-NextReview"),
        determination=ns.extension("S117-Determination"),
        undetermined=ns.extension("S117-ResponsibilityUndetermined"))


def _determination_ext(aspect: str, det: Determination, url: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"url": "aspect", "valueCode": aspect},
        {"url": "explanation", "valueString": det.explanation},
    ]
    if det.citation:
        parts.append({"url": "citation", "valueString": det.citation})
    if det.rule:
        parts.append({"url": "rule", "valueCode": det.rule})
    return {"url": url, "extension": parts}


def _episode_status(status: S117Status) -> str:
    if status.entitlement_end is not None or status.discharged_from_s117 or status.died:
        return "finished"
    if status.entitled:
        return "active"
    if status.qualifying_section_code is not None and status.detained:
        # On the register from admission under a qualifying section (Worcs
        # 19.2); the entitlement starts when the person leaves hospital.
        return "planned"
    return "cancelled"


def _period(start: date | None, end: date | None) -> dict[str, str] | None:
    if start is None and end is None:
        return None
    p: dict[str, str] = {}
    if start is not None:
        p["start"] = start.isoformat()
    if end is not None:
        p["end"] = end.isoformat()
    return p


def _patient_fields(status: S117Status, patient: PatientDetails, include: frozenset[str], ns: Namespaces,
                    profiles: dict[str, str]) -> dict[str, Any]:
    """The Patient's fields after its id: the hub person id always, the rest by field group."""
    identifiers: list[dict[str, str]] = [
        {"system": ns.person_id_system, "value": status.person_id}
    ]
    if IDENTITY in include:
        identifiers.append({"system": NHS_NUMBER_SYSTEM, "value": patient.nhs_number})
    out: dict[str, Any] = {"meta": {"profile": [profiles["Patient"]]}, "identifier": identifiers}
    if DEMOGRAPHICS in include:
        # FHIR strings may not be empty (ele-1): a name the source never sent is left out, not sent as "".
        name: dict[str, Any] = {"use": "official"}
        if patient.family_name:
            name["family"] = patient.family_name
        if patient.given_name:
            name["given"] = [patient.given_name]
        if len(name) > 1:
            out["name"] = [name]
        if patient.birth_date is not None:
            out["birthDate"] = patient.birth_date.isoformat()
    if ADDRESS in include and patient.postcode:
        out["address"] = [{"postalCode": patient.postcode}]
    return out


def _encounter_parts(status: S117Status, change: RegisterChange, legal_status_display: str | None,
                     hospital_ods: str | None, profiles: dict[str, str]
                     ) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The detention Encounter's fields after its id and before its references
    (subject, episodeOfCare), and those after them; None if there is none to tell."""
    # While detained: the current section; after leaving hospital: the
    # qualifying detention the aftercare duty flows from.
    legal_code = status.qualifying_section_code or status.entitling_section_code or change.legal_status_code
    detention_start = status.detention_start or status.entitling_detention_start
    if legal_code is None and detention_start is None:
        return None
    head: dict[str, Any] = {"meta": {"profile": [profiles["Encounter"]]}}
    if legal_code is not None:
        # Still in hospital: the status as admitted/held; otherwise
        # the qualifying status the person left hospital under.
        context = "admission" if status.in_hospital or status.detained else "discharge"
        classification: dict[str, str] = {
            "system": LEGAL_STATUS_ENGLAND_SYSTEM,
            "code": legal_code,
        }
        if legal_status_display:
            classification["display"] = legal_status_display
        head["extension"] = [
            {
                "extension": [
                    {
                        "url": "legalStatusContext",
                        "valueCodeableConcept": {
                            "coding": [
                                {
                                    "system": LEGAL_STATUS_CONTEXT_SYSTEM,
                                    "code": context,
                                    "display": _CONTEXT_DISPLAY[context],
                                }
                            ]
                        },
                    },
                    {
                        "url": "legalStatusClassification",
                        "valueCodeableConcept": {"coding": [classification]},
                    },
                ],
                "url": LEGAL_STATUS_EXTENSION_URL,
            }
        ]
    head["status"] = "in-progress" if status.in_hospital or status.detained else "finished"
    head["class"] = {
        "system": ACT_CODE_SYSTEM,
        "code": "IMP",
        "display": "inpatient encounter",
    }
    tail: dict[str, Any] = {}
    if detention_start is not None:
        tail["period"] = {"start": detention_start.isoformat()}
    hospital = hospital_ods or change.hospital_ods or status.entitling_hospital_ods
    if hospital:
        tail["serviceProvider"] = {
            "identifier": {"system": ODS_ORGANIZATION_SYSTEM, "value": hospital}
        }
    return head, tail


def _episode_extensions(status: S117Status, include: frozenset[str], urls: _Urls) -> list[dict[str, Any]]:
    """The EpisodeOfCare's extensions before the explanations: the responsible
    bodies (group "responsibility") and the next review."""
    extensions: list[dict[str, Any]] = []
    if RESPONSIBILITY in include:
        commissioner = status.responsible_commissioner
        if commissioner is not None and commissioner.org is not None:
            extensions.append(
                {"url": urls.commissioner, "valueReference": _org_ref(commissioner.org)}
            )
        coordinating = status.coordinating_council
        if coordinating is not None and coordinating.org is not None:
            extensions.append(
                {"url": urls.coordinating, "valueReference": _org_ref(coordinating.org)}
            )
        # A body owed and not determined (H-03): said, never left to an absent element,
        # which also means "not disclosed".
        for item in undetermined_bodies(status):
            extensions.append({"url": urls.undetermined, "extension": [
                {"url": "role", "valueCode": item["role"]},
                {"url": "absentReason", "valueCode": item["absent_reason"]},
                {"url": "reason", "valueString": item["reason"]},
            ]})
    review = status.next_review
    if review is not None:
        extensions.append(
            {
                "url": urls.next_review,
                "extension": [
                    {"url": "dueDate", "valueDate": review.due_on.isoformat()},
                    {"url": "kind", "valueCode": review.kind},
                ],
            }
        )
    return extensions


def _episode_middle(status: S117Status) -> dict[str, Any]:
    """The EpisodeOfCare's fields between its extensions and its patient."""
    return {"status": _episode_status(status), "type": [{"text": _EOC_TYPE_TEXT}]}


def _episode_tail(status: S117Status, include: frozenset[str]) -> dict[str, Any]:
    """The EpisodeOfCare's fields after its patient."""
    tail: dict[str, Any] = {}
    if RESPONSIBILITY in include:
        council = status.responsible_council
        if council is not None and council.org is not None:
            tail["managingOrganization"] = _org_ref(council.org)
    period = _period(status.entitlement_start, status.entitlement_end)
    if period is not None:
        tail["period"] = period
    return tail


def build_event_message(
    *,
    event: DomainEvent,
    status: S117Status,
    change: RegisterChange,
    patient: PatientDetails,
    message_id: str,
    sent_at: datetime,
    source_endpoint: str,
    recipient: Org,
    include: frozenset[str],
    legal_status_display: str | None,
    sender: Org | None = None,
    destination_endpoint: str | None = None,
    hospital_ods: str | None = None,
    position: dict[str, Any] | None = None,
    version: int | None = None,
    supersedes: str | None = None,
    reason: str | None = None,
    ns: Namespaces = DEFAULT_NAMESPACES,
) -> dict[str, Any]:
    """Build the FHIR R4 message Bundle telling ``recipient`` of ``event``.

    ``position`` (a recipient view, hub/domain/views.py) with its
    per-(person, recipient) ``version`` adds a ``Parameters`` entry, a focus
    of the MessageHeader: the person's whole current position for this
    recipient; ``supersedes`` names the event id a correction replaces and
    ``reason`` says, in plain words, what changed for the recipient.

    ``include`` is the set of FIELD_GROUPS the recipient's data-sharing
    agreement allows; anything outside it is left out of the message.
    Extra keywords (not on the domain model): ``sender`` (default: the hub
    itself), ``destination_endpoint`` (default ``urn:s117-hub:org:<code>``),
    ``hospital_ods`` (default ``change.hospital_ods``; S117Status does not
    keep the detaining hospital), ``ns`` (the hub's URLs under the configured
    canonical base; default the embedded one).
    """
    unknown = include - FIELD_GROUPS
    if unknown:
        raise ValueError(f"unknown field group(s) {sorted(unknown)}; known: {sorted(FIELD_GROUPS)}")
    if sent_at.tzinfo is None or sent_at.utcoffset() is None:
        raise ValueError("sent_at must be timezone-aware (FHIR instant)")

    urls = _urls(ns)
    profiles = urls.profiles
    header_id, patient_id, encounter_id, episode_id = _entry_uuids(message_id)
    patient_url = f"urn:uuid:{patient_id}"
    episode_url = f"urn:uuid:{episode_id}"

    # --- MessageHeader --------------------------------------------------
    event_type = event.event_type
    header: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "id": header_id,
        "meta": {"profile": [profiles["MessageHeader"]]},
        "extension": [{"url": urls.event_occurred, "valueDate": event.occurred_on.isoformat()}],
        "eventCoding": {
            "system": ns.event_codesystem,
            "code": event_type.value,
            "display": EVENT_DISPLAYS[event_type],
        },
        "destination": [
            {
                "name": recipient.name,
                "endpoint": destination_endpoint or _org_endpoint(recipient),
                "receiver": _org_ref(recipient),
            }
        ],
        "sender": _org_ref(sender)
        if sender is not None
        else {
            "identifier": {"system": ns.system_id_system, "value": HUB_SENDER_ID},
            "display": "S117 Hub",
        },
        "source": {"name": "S117 Hub", "endpoint": source_endpoint},
        "focus": [{"reference": episode_url}],
    }

    # --- Patient ----------------------------------------------------------
    patient_res: dict[str, Any] = {
        "resourceType": "Patient", "id": patient_id, **_patient_fields(status, patient, include, ns, profiles)}

    entries: list[dict[str, Any]] = [
        {"fullUrl": f"urn:uuid:{header_id}", "resource": header},
        {"fullUrl": patient_url, "resource": patient_res},
    ]

    # --- Encounter: the detention ------------------------------------------
    if LEGAL_STATUS in include:
        parts = _encounter_parts(status, change, legal_status_display, hospital_ods, profiles)
        if parts is not None:
            head, tail = parts
            encounter: dict[str, Any] = {
                "resourceType": "Encounter", "id": encounter_id, **head, "subject": {"reference": patient_url},
                "episodeOfCare": [{"reference": episode_url}], **tail}
            entries.append({"fullUrl": f"urn:uuid:{encounter_id}", "resource": encounter})
            header["focus"].append({"reference": f"urn:uuid:{encounter_id}"})

    # --- EpisodeOfCare: the s117 entitlement --------------------------------
    extensions = _episode_extensions(status, include, urls)
    if EXPLANATIONS in include:
        extensions.extend(_explanations(event, status, urls.determination))
    episode: dict[str, Any] = {
        "resourceType": "EpisodeOfCare", "id": episode_id, "meta": {"profile": [profiles["EpisodeOfCare"]]}}
    if extensions:
        episode["extension"] = extensions
    episode.update(_episode_middle(status))
    episode["patient"] = {"reference": patient_url}
    episode.update(_episode_tail(status, include))
    entries.append({"fullUrl": episode_url, "resource": episode})

    if position is not None:
        if version is None:
            raise ValueError("a position needs its version")
        params_id = _position_uuid(message_id)
        header["focus"].append({"reference": f"urn:uuid:{params_id}"})
        parameters = position_parameters(params_id, position, version, supersedes, reason)
        parameters["meta"] = {"profile": [profiles["Parameters"]]}
        entries.append({"fullUrl": f"urn:uuid:{params_id}", "resource": parameters})

    timestamp = sent_at.isoformat()
    if timestamp.endswith("+00:00"):  # the usual FHIR spelling of UTC, as R4B renders it
        timestamp = timestamp[:-6] + "Z"
    return {
        "resourceType": "Bundle",
        "id": message_id,
        "meta": {"profile": [profiles["Bundle"]]},
        "type": "message",
        "timestamp": timestamp,
        "entry": entries,
    }


def _explanations(event: DomainEvent, status: S117Status, url: str) -> Iterable[dict[str, Any]]:
    # FHIR strings may not be empty, so a blank explanation is left out.
    out = _event_explanation(event, url)
    out.extend(_status_explanations(status, url))
    return out


def _event_explanation(event: DomainEvent, url: str) -> list[dict[str, Any]]:
    """The event's own explanation (its summary), first of the explanations."""
    if not event.summary:
        return []
    return [{"url": url, "extension": [{"url": "aspect", "valueCode": "event"},
                                       {"url": "explanation", "valueString": event.summary}]}]


def _status_explanations(status: S117Status, url: str) -> list[dict[str, Any]]:
    """The determinations' explanations, after the event's."""
    out = []
    pairs: list[tuple[str, Determination | None]] = [
        ("entitlement", status.entitlement),
        ("responsible-council", status.responsible_council),
        ("responsible-commissioner", status.responsible_commissioner),
        ("coordinating-council", status.coordinating_council),
    ]
    review = status.next_review
    if review is not None:
        pairs.append(("next-review", Determination(None, review.explanation, review.citation)))
    pairs.extend(("discharge-refused", refused) for refused in status.refused_discharges)
    for aspect, det in pairs:
        if det is not None and det.explanation:
            out.append(_determination_ext(aspect, det, url))
    return out


# --- the person's position for the recipient (hub/domain/views.py) ----------
# Parameters names <-> view keys. Every message carries the whole position and
# its version: a receiver keeps, per person, the position of the highest
# version it has seen (read_position below shows how to read it back).
_SCALARS: Final = (
    ("entitled", "entitled", "valueBoolean"),
    ("entitlementStart", "entitlement_start", "valueDate"),
    ("entitlementEnd", "entitlement_end", "valueDate"),
    ("endedBy", "ended_by", "valueCode"),
    ("responsibleCouncil", "responsible_council", "valueCode"),
    ("responsibleCommissioner", "responsible_commissioner", "valueCode"),
    ("coordinatingCouncil", "coordinating_council", "valueCode"),
)
_REVIEW_PARTS: Final = (
    ("kind", "kind", "valueCode"),
    ("dueDate", "due_on", "valueDate"),
    ("trigger", "trigger", "valueCode"),
    ("triggeredOn", "triggered_on", "valueDate"),
    ("citation", "citation", "valueString"),
)
_DISPUTE_PARTS: Final = (("disputeId", "dispute_id", "valueString"), ("kind", "kind", "valueCode"))
# A responsible body owed and not determined (view key `responsibility_undetermined`).
_UNDETERMINED_PARTS: Final = (
    ("role", "role", "valueCode"),
    ("absentReason", "absent_reason", "valueCode"),
    ("reason", "reason", "valueString"),
)


def _position_uuid(message_id: str) -> str:
    s = blake2b(f"{message_id}/position".encode(), digest_size=16).hexdigest()
    return f"{s[0:8]}-{s[8:12]}-4{s[13:16]}-{'89ab'[int(s[16], 16) & 3]}{s[17:20]}-{s[20:32]}"


def position_parameters(
    params_id: str, position: dict[str, Any], version: int, supersedes: str | None = None, reason: str | None = None,
) -> dict[str, Any]:
    params: list[dict[str, Any]] = [{"name": "version", "valueInteger": version}]
    if supersedes:
        params.append({"name": "supersedes", "valueString": supersedes})
    if reason:
        params.append({"name": "reason", "valueString": reason})
    params.extend(_position_params(position))
    return {"resourceType": "Parameters", "id": params_id, "parameter": params}


def _position_params(position: dict[str, Any]) -> list[dict[str, Any]]:
    """The position's parameters after its version, supersedes and reason.

    Made for every view the dispatcher sends (once a status and recipient): the
    lists grown with `+=` and read with `in` (no call), not `append` and `get`."""
    params: list[dict[str, Any]] = (
        [{"name": "role", "valueCode": role} for role in position["roles"]] if "roles" in position else [])
    for name, key, kind in _SCALARS:
        if key in position:
            params += ({"name": name, kind: position[key]},)
    if "reviews" in position:
        for review in position["reviews"]:
            params += ({"name": "review", "part": [
                {"name": name, kind: review[key]} for name, key, kind in _REVIEW_PARTS if key in review
            ]},)
    if "disputes" in position:
        for dispute in position["disputes"]:
            params += ({"name": "dispute", "part": [
                {"name": name, kind: dispute[key]} for name, key, kind in _DISPUTE_PARTS if key in dispute
            ]},)
    if "responsibility_undetermined" in position:
        for item in position["responsibility_undetermined"]:
            params += ({"name": "responsibilityUndetermined", "part": [
                {"name": name, kind: item[key]} for name, key, kind in _UNDETERMINED_PARTS if key in item
            ]},)
    return params


# The position's repeated parameters: name -> (its parts, the view's key).
_LISTS: Final = {
    "review": (_REVIEW_PARTS, "reviews"),
    "dispute": (_DISPUTE_PARTS, "disputes"),
    "responsibilityUndetermined": (_UNDETERMINED_PARTS, "responsibility_undetermined"),
}


@dataclass(frozen=True, slots=True)
class Position:
    person_id: str
    version: int
    view: dict[str, Any]
    supersedes: str | None
    reason: str | None


def read_position(bundle: dict[str, Any]) -> Position | None:
    """The position a message carries, as a receiver reads it (None if none)."""
    resources = [e["resource"] for e in bundle.get("entry", [])]
    params = next((r for r in resources if r.get("resourceType") == "Parameters"), None)
    patient = next((r for r in resources if r.get("resourceType") == "Patient"), None)
    if params is None or patient is None:
        return None
    # The hub's person id, under whatever canonical base the hub was given.
    person_id = next(i["value"] for i in patient["identifier"] if i["system"].endswith("/Id/person-id"))
    version = 0
    supersedes = reason = None
    view: dict[str, Any] = {"roles": []}
    scalars = {name: (key, kind) for name, key, kind in _SCALARS}
    for p in params["parameter"]:
        name = p["name"]
        if name == "version":
            version = p["valueInteger"]
        elif name == "supersedes":
            supersedes = p["valueString"]
        elif name == "reason":
            reason = p["valueString"]
        elif name == "role":
            view["roles"].append(p["valueCode"])
        elif name in scalars:
            key, kind = scalars[name]
            view[key] = p[kind]
        elif name in _LISTS:
            table, key = _LISTS[name]
            by_name = {n: (k, t) for n, k, t in table}
            item = {by_name[part["name"]][0]: part[by_name[part["name"]][1]] for part in p["part"]}
            view.setdefault(key, []).append(item)
    if view["roles"]:
        view.setdefault("reviews", [])
        view.setdefault("disputes", [])
    return Position(person_id, version, view, supersedes, reason)
