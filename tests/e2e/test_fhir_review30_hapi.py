"""Outside review 30: what the hub's FHIR endpoint says and sends, checked by the HAPI FHIR 8.8.1 validator
(scripts/fhir-validator, UK Core and the hub's package loaded, unknown extensions errors), over real HTTP
against a real hub process:

* the server's CapabilityStatement from `GET /v1/fhir/metadata` (a FHIR client's first call; it was a 404);
* `$process-message`'s response message, and its OperationOutcomes (422, 415, 406);
* an event message from the builder for every event type, to a council, a second council and an ICB,
  with no field group and with all, and each field group alone for one of them in turn, each with the
  recipient's position (UKCore-Patient NHS
  number, UKCore-Encounter legal status, MessageHeader eventCoding / source / destination / focus, Bundle
  type message, urn:uuid fullUrls, references resolving in the Bundle, meta.profile).

No error; the only warning allowed is dom-6 (no narrative: messages between systems carry none).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest

from hub.domain.model import PERSON_EVENT_TYPES
from hub.domain.views import roles_of, view_of
from hub.fhir import examples
from hub.fhir.examples import BOB_ICB, BUCKS_COUNCIL, OXON_COUNCIL
from hub.fhir.messages import FIELD_GROUPS, build_event_message
from tests.e2e.conftest import make_clients
from tests.servers import one_at_a_time, unavailable
from tests.support import HubProcess

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
FETCH = REPO / "scripts" / "fhir-validator" / "fetch.sh"
DEFS = [REPO / "schemas" / "ukcore",
        REPO / "schemas" / "CodeSystem-UKCore-LegalStatusClassificationEngland.json",
        REPO / "schemas" / "CodeSystem-UKCore-LegalStatusContext.json",
        REPO / "schemas" / "fhir-package" / "package"]
ALLOWED_WARNINGS = {"http://hl7.org/fhir/StructureDefinition/DomainResource#dom-6"}


def _validator() -> Path:
    if shutil.which("java") is None:
        unavailable("FHIR validator", "no `java` on PATH (Java 17)")
    with one_at_a_time():
        fetched = subprocess.run(["bash", str(FETCH)], capture_output=True, text=True, timeout=900,
                                 check=False)
    if fetched.returncode != 0:
        unavailable("FHIR validator", f"fetch.sh exited {fetched.returncode}: {fetched.stderr.strip()[-500:]}")
    return Path(fetched.stdout.strip().splitlines()[-1])


def _messages(out: Path) -> list[Path]:
    """Every event type x recipient with no field group and with all, each with the recipient's position,
    and each field group alone for one recipient in turn (the three recipients differ in their position,
    which none and all cover; a group renders alike for each: a third of the files, the same coverage)."""
    cases = examples.golden_cases()
    paths = []
    recipients = (BUCKS_COUNCIL, OXON_COUNCIL, BOB_ICB)
    alone = [frozenset({g}) for g in sorted(FIELD_GROUPS)]
    for base_name in ("entitlement-started-all-groups", "responsibility-transferred"):
        base = cases[base_name]
        roles = roles_of(base["status"])
        for event_type in PERSON_EVENT_TYPES:
            event = dataclasses.replace(base["event"], event_type=event_type)
            for turn, recipient in enumerate(recipients):
                own = [g for i, g in enumerate(alone) if i % len(recipients) == turn]
                for groups in (*own, frozenset(), FIELD_GROUPS):
                    n = len(paths)
                    bundle = build_event_message(**{
                        **base, "event": event, "recipient": recipient, "include": groups,
                        "message_id": f"{base['message_id'][:-4]}{n:04d}",
                        "position": view_of(base["status"], roles.get(recipient.code, set()), groups),
                        "version": 1})
                    path = out / f"msg-{n:04d}-{event_type.value}-{recipient.code}-{'+'.join(sorted(groups))}.json"
                    path.write_text(json.dumps(bundle), encoding="utf-8")
                    paths.append(path)
    return paths


async def test_the_metadata_answers_and_messages_validate_against_uk_core_and_the_hubs_profiles(
        tmp_path: Path, sharing_file: Path) -> None:
    home = _validator()
    out = tmp_path / "fhir"
    out.mkdir()
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    await hub.start()
    fixture = json.loads((REPO / "tests" / "fixtures" / "fhir_inbound" / "detained.json").read_text())
    bad = json.loads(json.dumps(fixture))
    bad["identifier"]["value"] = "review30-bad"
    bad["entry"][2]["resource"]["modifierExtension"] = [{"url": "https://example.org/x", "valueBoolean": True}]
    answers = {}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}", timeout=30) as http:
            fhir = {"Content-Type": "application/fhir+json", "X-API-Key": keys["trust"]}
            answers["metadata"] = await http.get("/v1/fhir/metadata", headers={"X-API-Key": keys["QU9"]})
            answers["response"] = await http.post("/v1/fhir/$process-message", json=fixture, headers=fhir)
            answers["oo-422"] = await http.post("/v1/fhir/$process-message", json=bad, headers=fhir)
            answers["oo-415"] = await http.post("/v1/fhir/$process-message", content=b"<Bundle/>",
                                                headers={**fhir, "Content-Type": "application/fhir+xml"})
            answers["oo-406"] = await http.post("/v1/fhir/$process-message", json=fixture,
                                                headers={**fhir, "Accept": "application/fhir+xml"})
    finally:
        hub.stop()
    expected = {"metadata": 200, "response": 200, "oo-422": 422, "oo-415": 415, "oo-406": 406}
    assert {k: r.status_code for k, r in answers.items()} == expected, {k: r.text[:300] for k, r in answers.items()}
    cs = answers["metadata"].json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["implementation"]["url"] == \
        f"http://127.0.0.1:{hub.port}/v1/fhir"
    files = []
    for name, r in answers.items():
        path = out / f"{name}.json"
        path.write_bytes(r.content)
        files.append(path)
    files += _messages(out)
    listing = out / "files.txt"
    listing.write_text("\n".join(str(f) for f in files), encoding="utf-8")
    cmd = ["java", "-Xmx768m", "-cp", f"{home / 'libs'}/*:{home / 'classes'}", "S117Validate"]
    for d in DEFS:
        cmd += ["--defs", str(d)]
    run = subprocess.run([*cmd, f"@{listing}"], capture_output=True, text=True, timeout=900, check=False)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines and "summary" in lines[-1], run.stderr[-2000:]
    findings = lines[:-1]
    assert lines[-1]["files"] == len(files)
    errors = [f"{Path(f['file']).name} {f['location']}: {f['message']}" for f in findings
              if f["severity"] in ("error", "fatal")]
    assert not errors, "\n".join(errors[:30])
    warnings = Counter(f["messageId"] for f in findings if f["severity"] == "warning")
    print(f"\nHAPI 8.8.1 over {len(files)} files: 0 errors, warnings {dict(warnings)}")
    assert set(warnings) <= ALLOWED_WARNINGS, {f"{Path(f['file']).name} {f['location']}: {f['message']}"
                                               for f in findings if f["severity"] == "warning"
                                               and f["messageId"] not in ALLOWED_WARNINGS}
