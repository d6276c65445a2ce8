"""The hub's FHIR package: checked in equal to its generator, complete, consistent."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from hub.cli import write_fhir_package
from hub.domain.model import BODY_EVENT_TYPES, PERSON_EVENT_TYPES, EventType
from hub.fhir import conformance, messages
from hub.fhir.drift import build_drift_message, drift_example
from hub.fhir.examples import golden_cases
from hub.fhir.messages import build_event_message
from hub.fhir.namespaces import DEFAULT_NAMESPACES, Namespaces
from hub.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "schemas" / "fhir-package" / "package"


def _load(rel: str) -> dict[str, Any]:
    return json.loads((PACKAGE / rel).read_text(encoding="utf-8"))


def _emitted_types() -> set[str]:
    types = set()
    for bundle in [*(build_event_message(**kwargs) for kwargs in golden_cases().values()),
                   build_drift_message(**drift_example())]:
        types.add(bundle["resourceType"])
        types.update(e["resource"]["resourceType"] for e in bundle["entry"])
    return types


def test_checked_in_package_equals_the_generator() -> None:
    """schemas/fhir-package is `s117hub fhir-package` output: regenerate it after a change."""
    files = conformance.build_package(DEFAULT_NAMESPACES)
    on_disk = {str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*") if p.is_file()}
    assert on_disk == set(files), "run `s117hub fhir-package`"
    for rel, text in files.items():
        assert (PACKAGE.parent / rel).read_text(encoding="utf-8") == text, f"{rel}: run `s117hub fhir-package`"


def test_every_emitted_resource_type_has_a_profile_and_every_profile_an_example() -> None:
    profiles = {sd["type"]: sd for sd in (_load(f) for f in
                                          (p.name for p in PACKAGE.glob("StructureDefinition-*.json")))
                if sd["kind"] == "resource"}
    emitted = _emitted_types()
    assert emitted <= set(profiles), emitted - set(profiles)
    assert messages.PROFILES == {t: conformance.PROFILES[t] for t in messages.PROFILES}
    example_profiles = set()
    for path in (PACKAGE / "examples").glob("[!.]*.json"):
        res = json.loads(path.read_text(encoding="utf-8"))
        example_profiles.update(res.get("meta", {}).get("profile", []))
    for sd in profiles.values():
        assert sd["url"] in example_profiles, f"{sd['id']} has no example"


def test_every_extension_the_hub_uses_is_defined_in_one_place() -> None:
    defined = {x.id for x in conformance.EXTENSIONS}
    for path in PACKAGE.glob("StructureDefinition-Extension-*.json"):
        assert _load(path.name)["id"] in defined
    used: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            url = node.get("url")
            if isinstance(url, str) and "/StructureDefinition/Extension-S117-" in url:
                used.add(url.rsplit("/", 1)[1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for kwargs in golden_cases().values():
        walk(build_event_message(**kwargs))
    walk(build_drift_message(**drift_example()))
    for fixture in (ROOT / "tests" / "fixtures" / "fhir_inbound").glob("*.json"):
        walk(json.loads(fixture.read_text(encoding="utf-8")))
    assert used and used <= defined, used - defined


def test_an_extension_def_yields_its_definition_and_a_slice_in_each_profile_of_its_context() -> None:
    resources = conformance.conformance_resources(DEFAULT_NAMESPACES)
    episode = next(r for r in resources if r["id"] == "S117-EpisodeOfCare")
    slices = {e.get("sliceName"): e for e in episode["differential"]["element"] if e["path"] == "EpisodeOfCare.extension"}
    for ext in conformance.EXTENSIONS:
        if "EpisodeOfCare" in ext.contexts:
            assert slices[ext.slice_name]["type"][0]["profile"] == [DEFAULT_NAMESPACES.extension(ext.name)]
            assert slices[ext.slice_name]["max"] == ext.max


def test_a_message_definition_per_event_type_and_the_capability_statement_names_them() -> None:
    for event in PERSON_EVENT_TYPES:
        md = _load(f"MessageDefinition-{event.value}.json")
        assert md["eventCoding"]["code"] == event.value
        assert {f["code"] for f in md["focus"]} == {"EpisodeOfCare", "Encounter", "Parameters", "Task"}
        for group in messages.FIELD_GROUPS:
            assert f"`{group}`" in md["purpose"]
    for event in BODY_EVENT_TYPES:  # about a body: counts only, no person, field groups do not apply
        md = _load(f"MessageDefinition-{event.value}.json")
        assert md["eventCoding"]["code"] == event.value
        assert [(f["code"], f["profile"]) for f in md["focus"]] == [
            ("Basic", DEFAULT_NAMESPACES.profile("S117-ReconciliationDrift"))]
    assert set(conformance.FIELD_GROUP_CONTENT) == set(messages.FIELD_GROUPS)
    cs = _load("CapabilityStatement-s117-hub.json")
    sent = {m["definition"] for m in cs["messaging"][0]["supportedMessage"] if m["mode"] == "sender"}
    assert sent == {DEFAULT_NAMESPACES.canonical("MessageDefinition", e.value) for e in EventType}
    assert cs["rest"][0]["operation"][0]["name"] == "process-message"


def test_package_index_and_manifest() -> None:
    manifest = _load("package.json")
    assert manifest["name"] == conformance.PACKAGE_NAME and manifest["fhirVersions"] == ["4.0.1"]
    assert manifest["canonical"] == DEFAULT_NAMESPACES.fhir_base
    index = _load(".index.json")
    names = {f["filename"] for f in index["files"]}
    assert names == {p.name for p in PACKAGE.glob("[!.]*.json")} - {"package.json"}


def test_cli_writes_the_package_under_another_base_and_a_tgz(tmp_path: Path) -> None:
    tgz = tmp_path / "s117.tgz"
    write_fhir_package(tmp_path / "out", "https://s117.example.nhs.uk", None, tgz)
    sd = json.loads((tmp_path / "out" / "package" / "StructureDefinition-S117-Patient.json").read_text())
    assert sd["url"] == "https://s117.example.nhs.uk/fhir/StructureDefinition/S117-Patient"
    text = "".join(p.read_text() for p in (tmp_path / "out" / "package").rglob("*.json"))
    assert "s117-hub.localhost" not in text
    with tarfile.open(tgz) as tar:
        assert "package/package.json" in tar.getnames()


def test_canonical_base_is_required_in_production_and_local_by_default() -> None:
    assert Settings().canonical_base == "https://s117-hub.localhost"
    with pytest.raises(ValueError, match="canonical_base"):
        Settings(database_url="postgresql+asyncpg://u@127.0.0.1/db")
    s = Settings(database_url="postgresql+asyncpg://u@127.0.0.1/db", canonical_base="https://s117.example.nhs.uk/")
    assert s.namespaces() == Namespaces.for_base("https://s117.example.nhs.uk")
    assert s.hub_endpoint == "https://s117.example.nhs.uk/fhir"
    with pytest.raises(ValueError, match="canonical_base"):
        Settings(canonical_base="s117.example.nhs.uk")


def test_ukcore_copies_match_their_provenance() -> None:
    import hashlib
    import re

    folder = ROOT / "schemas" / "ukcore"
    listed = dict((name, digest) for digest, name in
                  re.findall(r"^([0-9a-f]{64})  (\S+)$", (folder / "PROVENANCE.md").read_text(), re.M))
    files = {p.name for p in folder.iterdir() if p.suffix in (".json", ".xml")}
    assert files == set(listed)
    for name in files:
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == listed[name], name
