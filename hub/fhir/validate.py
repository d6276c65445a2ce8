"""Validate an outbound FHIR message Bundle: structure, then what the model misses.

``fhir.resources.R4B`` checks types, cardinality of required fields, primitive
formats and unknown elements. It does **not** check required code bindings
(it accepts ``Bundle.type = "messagex"`` or ``EpisodeOfCare.status = "zzz"``),
the ext-1 invariant (value[x] xor extension), that references resolve, or
any value-set binding. Those checks are here, against terminology shipped in
schemas/ (never read from outside the repository at run time).

Meant for the edge and for tests, not the delivery hot path (~100x the cost
of building the dict).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hub.fhir.namespaces import (
    ACT_CODE_SYSTEM,
    EVENT_CODESYSTEM_URL,
    GSS_CODE_SYSTEM,
    DEFAULT_NAMESPACES,
    HUB_PERSON_ID_SYSTEM,
    HUB_SYSTEM_ID_SYSTEM,
    LEGAL_STATUS_CONTEXT_SYSTEM,
    LEGAL_STATUS_ENGLAND_SYSTEM,
    LEGAL_STATUS_EXTENSION_URL,
    NHS_NUMBER_SYSTEM,
    ODS_ORGANIZATION_SYSTEM,
)

__all__ = [
    "SCHEMAS_DIR",
    "FhirMessageInvalid",
    "codesystem_codes",
    "is_valid_nhs_number",
    "validate_message",
]

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
_CODESYSTEM_FILES = {
    EVENT_CODESYSTEM_URL: "CodeSystem-s117-event.json",
    LEGAL_STATUS_ENGLAND_SYSTEM: "CodeSystem-UKCore-LegalStatusClassificationEngland.json",
    LEGAL_STATUS_CONTEXT_SYSTEM: "CodeSystem-UKCore-LegalStatusContext.json",
}

# Required bindings in R4 that fhir.resources does not enforce.
_BUNDLE_TYPES = frozenset({"message"})
_EPISODE_STATUSES = frozenset(
    {"planned", "waitlist", "active", "onhold", "finished", "cancelled", "entered-in-error"}
)
_ENCOUNTER_STATUSES = frozenset(
    {
        "planned",
        "arrived",
        "triaged",
        "in-progress",
        "onleave",
        "finished",
        "cancelled",
        "entered-in-error",
        "unknown",
    }
)
_PATIENT_ID_SYSTEMS = frozenset({NHS_NUMBER_SYSTEM, HUB_PERSON_ID_SYSTEM})
_ORG_ID_SYSTEMS = frozenset({ODS_ORGANIZATION_SYSTEM, GSS_CODE_SYSTEM, HUB_SYSTEM_ID_SYSTEM})
_REFERENCE_KEYS = frozenset({"id", "extension", "reference", "type", "identifier", "display"})
_UUID_URN = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@cache
def _known_extensions() -> frozenset[str]:
    """The hub's extensions (defined in one place: hub/fhir/conformance.py) and UK Core's legal status."""
    from hub.fhir.conformance import EXTENSIONS  # noqa: PLC0415

    return frozenset({DEFAULT_NAMESPACES.extension(x.name) for x in EXTENSIONS} | {LEGAL_STATUS_EXTENSION_URL})


class FhirMessageInvalid(ValueError):
    """The Bundle is not a valid hub message; ``problems`` lists every finding."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"invalid FHIR message ({len(problems)} problem(s)):\n  - " + "\n  - ".join(problems)
        )


@cache
def _codesystem(url: str) -> dict[str, str]:
    doc = json.loads((SCHEMAS_DIR / _CODESYSTEM_FILES[url]).read_text(encoding="utf-8"))
    if doc.get("url") != url:
        raise RuntimeError(f"{_CODESYSTEM_FILES[url]} has url {doc.get('url')!r}, expected {url!r}")
    return {c["code"]: c.get("display", "") for c in doc["concept"]}


def codesystem_codes(url: str) -> dict[str, str]:
    """code -> display for a CodeSystem the hub ships in schemas/."""
    return dict(_codesystem(url))


def is_valid_nhs_number(value: str) -> bool:
    """Ten ASCII digits (no spaces in a FHIR identifier) with a valid modulus-11
    check digit: the one rule in hub.ingest.nhs_number."""
    from hub.ingest.nhs_number import nhs_number_problem

    return isinstance(value, str) and " " not in value and nhs_number_problem(value) is None


def validate_message(bundle: dict[str, Any]) -> None:
    """Raise FhirMessageInvalid unless ``bundle`` is a valid hub message."""
    from fhir.resources.R4B.bundle import Bundle  # heavy import: only when validating

    try:
        Bundle.model_validate(bundle)
    except ValidationError as exc:
        raise FhirMessageInvalid(
            [
                f"R4B: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                for err in exc.errors(include_url=False)
            ]
        ) from exc

    problems: list[str] = []
    _check_bundle(bundle, problems)
    if problems:
        raise FhirMessageInvalid(problems)


def _check_bundle(bundle: dict[str, Any], problems: list[str]) -> None:
    if bundle.get("type") not in _BUNDLE_TYPES:
        problems.append(f"Bundle.type is {bundle.get('type')!r}, expected 'message'")
    for field in ("id", "timestamp"):
        if not bundle.get(field):
            problems.append(f"Bundle.{field} is required for a hub message")
    entries = bundle.get("entry") or []
    if not entries or entries[0].get("resource", {}).get("resourceType") != "MessageHeader":
        problems.append("the first entry must be the MessageHeader (bdl-3/bdl-4 for messages)")

    full_urls: set[str] = set()
    for i, entry in enumerate(entries):
        url = entry.get("fullUrl")
        res = entry.get("resource") or {}
        where = f"entry[{i}] ({res.get('resourceType')})"
        if not url:
            problems.append(f"{where}: fullUrl missing")
            continue
        if url in full_urls:
            problems.append(f"{where}: duplicate fullUrl {url}")
        full_urls.add(url)
        if not _UUID_URN.match(url):
            problems.append(f"{where}: fullUrl {url!r} is not a lower-case urn:uuid")
        elif "id" in res and res["id"] != url[len("urn:uuid:") :]:
            problems.append(f"{where}: id {res['id']!r} disagrees with fullUrl {url}")

    for path, ref in _references(bundle, "Bundle"):
        if "reference" in ref and ref["reference"] not in full_urls:
            problems.append(f"{path}: reference {ref['reference']!r} does not resolve in the bundle")
        ident = ref.get("identifier")
        if ident is not None and "reference" not in ref and ident.get("system") not in _ORG_ID_SYSTEMS:
            problems.append(
                f"{path}: logical reference uses identifier system {ident.get('system')!r}; "
                f"expected one of {sorted(_ORG_ID_SYSTEMS)}"
            )

    for path, ext in _extensions(bundle, "Bundle"):
        has_value = any(k.startswith("value") for k in ext)
        if has_value == ("extension" in ext):
            problems.append(f"{path}: ext-1: an extension has either a value or extensions, not both/neither")
        url = ext.get("url", "")
        if url.startswith("http") and url not in _known_extensions():
            problems.append(f"{path}: unknown extension {url!r}")

    by_type: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for i, entry in enumerate(entries):
        res = entry.get("resource") or {}
        by_type.setdefault(res.get("resourceType", ""), []).append((i, res))

    for i, res in by_type.get("MessageHeader", []):
        _check_header(f"entry[{i}].MessageHeader", res, problems)
    for i, res in by_type.get("Patient", []):
        _check_patient(f"entry[{i}].Patient", res, problems)
    for i, res in by_type.get("Encounter", []):
        _check_encounter(f"entry[{i}].Encounter", res, problems)
    for i, res in by_type.get("EpisodeOfCare", []):
        status = res.get("status")
        if status not in _EPISODE_STATUSES:
            problems.append(f"entry[{i}].EpisodeOfCare.status {status!r} is not an EpisodeOfCare status")


def _check_header(where: str, header: dict[str, Any], problems: list[str]) -> None:
    coding = header.get("eventCoding") or {}
    if coding.get("system") != EVENT_CODESYSTEM_URL:
        problems.append(
            f"{where}.eventCoding.system {coding.get('system')!r} is not {EVENT_CODESYSTEM_URL}"
        )
    else:
        _check_coding(f"{where}.eventCoding", coding, EVENT_CODESYSTEM_URL, problems)
    if not header.get("focus"):
        problems.append(f"{where}.focus: a hub message names its focus (the EpisodeOfCare)")


def _check_patient(where: str, patient: dict[str, Any], problems: list[str]) -> None:
    for j, ident in enumerate(patient.get("identifier") or []):
        system, value = ident.get("system"), ident.get("value", "")
        if system not in _PATIENT_ID_SYSTEMS:
            problems.append(f"{where}.identifier[{j}].system {system!r} is not an allowed patient identifier system")
            # A bare ten-digit number under another system is probably a misfiled NHS number.
            if is_valid_nhs_number(value.replace(" ", "")):
                problems.append(f"{where}.identifier[{j}]: looks like an NHS number; use {NHS_NUMBER_SYSTEM}")
        elif system == NHS_NUMBER_SYSTEM and not is_valid_nhs_number(value):
            problems.append(f"{where}.identifier[{j}]: NHS number is not 10 digits with a valid check digit")
    if not any(i.get("system") == HUB_PERSON_ID_SYSTEM for i in patient.get("identifier") or []):
        problems.append(f"{where}: the hub person id identifier is missing")


def _check_encounter(where: str, encounter: dict[str, Any], problems: list[str]) -> None:
    if encounter.get("status") not in _ENCOUNTER_STATUSES:
        problems.append(f"{where}.status {encounter.get('status')!r} is not an Encounter status")
    cls = encounter.get("class") or {}
    if cls.get("system") != ACT_CODE_SYSTEM or cls.get("code") != "IMP":
        problems.append(f"{where}.class must be {ACT_CODE_SYSTEM}#IMP for a detention")
    for k, ext in enumerate(encounter.get("extension") or []):
        if ext.get("url") != LEGAL_STATUS_EXTENSION_URL:
            continue
        parts: dict[str, list[dict[str, Any]]] = {}
        for sub in ext.get("extension") or []:
            parts.setdefault(sub.get("url", ""), []).append(sub)
        unknown = set(parts) - {"legalStatusContext", "legalStatusClassification"}
        if unknown:
            problems.append(f"{where}.extension[{k}]: unknown legal status part(s) {sorted(unknown)}")
        for name, system in (
            ("legalStatusContext", LEGAL_STATUS_CONTEXT_SYSTEM),
            ("legalStatusClassification", LEGAL_STATUS_ENGLAND_SYSTEM),
        ):
            found = parts.get(name, [])
            if len(found) != 1:
                problems.append(f"{where}.extension[{k}].{name}: expected exactly 1, found {len(found)}")
                continue
            codings = (found[0].get("valueCodeableConcept") or {}).get("coding") or []
            ours = [c for c in codings if c.get("system") == system]
            if not ours:
                problems.append(f"{where}.extension[{k}].{name}: no coding from {system}")
            for c in ours:
                _check_coding(f"{where}.extension[{k}].{name}", c, system, problems)


def _check_coding(where: str, coding: dict[str, Any], system: str, problems: list[str]) -> None:
    concepts = _codesystem(system)
    code = coding.get("code")
    if code not in concepts:
        problems.append(f"{where}: code {code!r} is not in {system}")
    elif "display" in coding and coding["display"] != concepts[code]:
        problems.append(
            f"{where}: display {coding['display']!r} does not match {system}#{code} {concepts[code]!r}"
        )


def _references(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Reference-shaped dict: a literal 'reference', or a logical reference
    (a single 'identifier' and nothing a Reference could not hold)."""
    if isinstance(node, dict):
        if "reference" in node and isinstance(node["reference"], str):
            yield path, node
        elif isinstance(node.get("identifier"), dict) and set(node) <= _REFERENCE_KEYS:
            yield path, node
        for key, value in node.items():
            yield from _references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _references(value, f"{path}[{i}]")


def _extensions(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("extension", "modifierExtension") and isinstance(value, list):
                for i, ext in enumerate(value):
                    if isinstance(ext, dict):
                        yield f"{path}.{key}[{i}]", ext
            yield from _extensions(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _extensions(value, f"{path}[{i}]")
