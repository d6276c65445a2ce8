"""The independent FHIR validator over what the hub emits and accepts.

HAPI FHIR 8.8.1's validator (the HL7 InstanceValidator), fetched from Maven
Central by scripts/fhir-validator/fetch.sh into var/fhir-validator, runs once
(one JVM) over: the golden files, a message built by the hub's builder for
every person event type (all field groups, and none) and the body's drift message, the package's examples, and the
inbound fixtures (as sent, and declaring the hub's profiles), and the messages
the e2e tests' webhook receivers got earlier in the session (up to 60), with UK Core (schemas/ukcore and the legal status
CodeSystems) and the hub's package (schemas/fhir-package/package) loaded
offline. Unknown extensions are errors. Any error fails; the warning count (over
the fixed inputs) is printed and may not exceed tests/fhir_validator_baseline.json (lower it when it
goes down). A deliberately broken message in the same run must be caught.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from decimal import Decimal

from hub.domain.drift import DriftThreshold
from hub.domain.model import PERSON_EVENT_TYPES
from hub.fhir import conformance, examples
from hub.fhir.drift import build_drift_message, drift_example
from hub.fhir.messages import FIELD_GROUPS, build_event_message
from hub.fhir.namespaces import HUB_BASE
from tests.servers import one_at_a_time, unavailable

REPO = Path(__file__).resolve().parents[2]
FETCH = REPO / "scripts" / "fhir-validator" / "fetch.sh"
BASELINE = REPO / "tests" / "fhir_validator_baseline.json"
DEFS = [
    REPO / "schemas" / "ukcore",
    REPO / "schemas" / "CodeSystem-UKCore-LegalStatusClassificationEngland.json",
    REPO / "schemas" / "CodeSystem-UKCore-LegalStatusContext.json",
    REPO / "schemas" / "fhir-package" / "package",
]
BROKEN = "broken-message.json"
BROKEN_DRIFT = "broken-drift-message.json"


def _generated_messages(out: Path) -> list[Path]:
    """A message per event type from the hub's builder: all groups, and none."""
    cases = examples.golden_cases()
    paths = []
    for base_name in ("entitlement-started-all-groups", "responsibility-transferred"):
        base = cases[base_name]
        for event_type in PERSON_EVENT_TYPES:
            for groups, tag in ((FIELD_GROUPS, "all"), (frozenset(), "none")):
                event = dataclasses.replace(base["event"], event_type=event_type)
                bundle = build_event_message(**{**base, "event": event, "include": groups,
                                                "message_id": f"{base['message_id'][:-4]}{len(paths):04d}"})
                path = out / f"{base_name}-{event_type.value}-{tag}.json"
                path.write_text(json.dumps(bundle), encoding="utf-8")
                paths.append(path)
    # The body's drift message (hub/fhir/drift.py): either threshold measure alone, and zero counts.
    example = drift_example()
    for tag, threshold in (("items", DriftThreshold(open_items=1)),
                           ("percent", DriftThreshold(percent_of_list=Decimal("12.5")))):
        counts = dataclasses.replace(example["counts"], threshold=threshold,
                                     open_by_kind={"missing-on-body-list": 1})
        bundle = build_drift_message(**{**example, "counts": counts,
                                        "message_id": f"{example['message_id'][:-4]}{len(paths):04d}"})
        path = out / f"reconciliation-drift-{tag}.json"
        path.write_text(json.dumps(bundle), encoding="utf-8")
        paths.append(path)
    return paths


def _captured(out: Path) -> list[Path]:
    """The messages the e2e tests' webhook receivers got in this session."""
    from tests.support import CAPTURED_MESSAGES

    paths = []
    for message_id, body in sorted(CAPTURED_MESSAGES.items()):
        path = out / f"captured-{message_id}.json"
        path.write_bytes(body)
        paths.append(path)
    return paths


def _profiled_inbound(out: Path) -> list[Path]:
    """The inbound fixtures with every resource declaring its hub profile, so
    what trusts send is checked against the same profiles."""
    paths = []
    for fixture in sorted((REPO / "tests" / "fixtures" / "fhir_inbound").glob("*.json")):
        bundle = json.loads(fixture.read_text(encoding="utf-8"))
        for res in [bundle, *(e["resource"] for e in bundle["entry"])]:
            if res["resourceType"] in conformance.PROFILES:
                res["meta"] = {"profile": [conformance.profile_url(res["resourceType"])]}
        path = out / f"inbound-profiled-{fixture.name}"
        path.write_text(json.dumps(bundle), encoding="utf-8")
        paths.append(path)
    return paths


def _broken(out: Path) -> Path:
    bundle = copy.deepcopy(build_event_message(**examples.golden_cases()["entitlement-started-all-groups"]))
    episode = bundle["entry"][-1]["resource"]
    episode["extension"].append({"url": f"{HUB_BASE}/fhir/StructureDefinition/Extension-S117-Undefined",
                                 "valueString": "x"})
    det = next(e for e in episode["extension"] if e["url"].endswith("Extension-S117-Determination"))
    det["extension"] = [{"url": "aspect", "valueCode": "not-an-aspect"}]  # and no explanation
    patient = bundle["entry"][1]["resource"]
    patient["maritalStatus"] = {"coding": [{"system": f"{HUB_BASE}/fhir/CodeSystem/s117-undefined", "code": "x"}]}
    path = out / BROKEN
    path.write_text(json.dumps(bundle), encoding="utf-8")
    return path


def _broken_drift(out: Path) -> Path:
    """A drift message with a kind outside the hub's CodeSystem and no subject (the body)."""
    bundle = copy.deepcopy(build_drift_message(**drift_example()))
    basic = bundle["entry"][1]["resource"]
    basic["extension"][0]["extension"][0]["valueCode"] = "not-a-kind"
    del basic["subject"]
    path = out / BROKEN_DRIFT
    path.write_text(json.dumps(bundle), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def validation(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if shutil.which("java") is None:
        unavailable("FHIR validator", "no `java` on PATH (Java 17)")
    with one_at_a_time():
        fetched = subprocess.run(["bash", str(FETCH)], capture_output=True, text=True, timeout=900,
                                 check=False)
    if fetched.returncode != 0:
        unavailable("FHIR validator", f"fetch.sh exited {fetched.returncode}: {fetched.stderr.strip()[-500:]}")
    home = Path(fetched.stdout.strip().splitlines()[-1])
    out = tmp_path_factory.mktemp("fhir-messages")
    files = [
        *sorted((REPO / "tests" / "golden").glob("*.json")),
        *_generated_messages(out),
        *sorted((REPO / "schemas" / "fhir-package" / "package" / "examples").glob("[!.]*.json")),
        *sorted((REPO / "tests" / "fixtures" / "fhir_inbound").glob("*.json")),
        *_profiled_inbound(out),
        *_captured(out),
        _broken(out),
        _broken_drift(out),
    ]
    listing = out / "files.txt"
    listing.write_text("\n".join(str(f) for f in files), encoding="utf-8")
    cmd = ["java", "-Xmx768m", "-cp", f"{home / 'libs'}/*:{home / 'classes'}", "S117Validate"]
    for d in DEFS:
        cmd += ["--defs", str(d)]
    run = subprocess.run([*cmd, f"@{listing}"], capture_output=True, text=True, timeout=600, check=False)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    if not lines or "summary" not in lines[-1]:
        pytest.fail(f"the validator gave no summary (exit {run.returncode}): {run.stderr[-2000:]}")
    findings = lines[:-1]
    captured = sum(1 for f in files if f.name.startswith("captured-"))
    return {
        "captured": captured,
        "files": files,
        "summary": lines[-1],
        "stderr": run.stderr,
        "ours": [f for f in findings if not f["file"].endswith((BROKEN, BROKEN_DRIFT))],
        "broken": [f for f in findings if f["file"].endswith(BROKEN)],
        "broken_drift": [f for f in findings if f["file"].endswith(BROKEN_DRIFT)],
    }


def test_no_errors_over_every_message(validation: dict[str, Any]) -> None:
    ours = validation["ours"]
    counts = Counter(f["severity"] for f in ours)
    print(f"\nFHIR validator (HAPI 8.8.1): {len(validation['files']) - 2} files "
          f"({validation['captured']} captured by the e2e tests), "
          f"{counts['error'] + counts['fatal']} errors, {counts['warning']} warnings, "
          f"{counts['information']} information")
    errors = [f"{f['file']} {f['location']}: {f['message']}" for f in ours if f["severity"] in ("error", "fatal")]
    assert not errors, "\n".join(errors[:30])


def test_warnings_do_not_exceed_the_baseline(validation: dict[str, Any]) -> None:
    # Over the fixed inputs only: how many messages the e2e tests captured
    # depends on what ran before (their errors count in the test above).
    warnings = [f for f in validation["ours"] if f["severity"] == "warning"
                and not Path(f["file"]).name.startswith("captured-")]
    baseline = json.loads(BASELINE.read_text(encoding="utf-8"))["warnings"]
    by_kind = Counter(f["messageId"] for f in warnings)
    print(f"\nFHIR validator warnings: {len(warnings)} (baseline {baseline}): {dict(by_kind)}")
    assert len(warnings) <= baseline, (
        f"{len(warnings)} validator warnings, more than the baseline {baseline}: {dict(by_kind)}")


def _unknown_hub_definitions(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Findings of an extension, profile, code system or value set under the
    hub's canonical base that the validator does not know."""
    return [f for f in findings if HUB_BASE in f["message"] and any(
        k in f["message"].lower() for k in ("could not be found", "unknown", "not found", "unable to"))]


def test_the_hubs_own_definitions_are_all_known(validation: dict[str, Any]) -> None:
    unknown = _unknown_hub_definitions(validation["ours"])
    assert not unknown, "\n".join(f"{f['location']}: {f['message']}" for f in unknown[:20])


def test_profiles_are_applied_and_can_fail(validation: dict[str, Any]) -> None:
    """The broken message: an undefined hub extension, a Determination with a
    code outside its ValueSet and no explanation, and a code of an undefined
    hub code system are each caught."""
    errors = [f["message"] for f in validation["broken"] if f["severity"] in ("error", "fatal")]
    text = "\n".join(errors)
    assert "Extension-S117-Undefined" in text, text
    assert "not-an-aspect" in text, text
    assert "explanation" in text, text
    # The undefined hub extension and code system are what the check above looks for.
    unknown = " ".join(f["message"] for f in _unknown_hub_definitions(validation["broken"]))
    assert "Extension-S117-Undefined" in unknown and "CodeSystem/s117-undefined" in unknown, unknown


def test_the_drift_profile_is_applied_and_can_fail(validation: dict[str, Any]) -> None:
    """The body's drift message is checked against S117-ReconciliationDrift: a kind of difference
    outside the hub's CodeSystem and a missing subject are each caught."""
    text = "\n".join(f"{f['location']}: {f['message']}" for f in validation["broken_drift"]
                     if f["severity"] in ("error", "fatal"))
    assert "not-a-kind" in text, text
    assert "Basic.subject" in text, text
