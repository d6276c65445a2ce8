"""A message over MLLP that maps but does not validate is answered AE naming the HL7 field (`PID-3`), and
its quarantine entry names the same field, the canonical one kept in the reason, so the engineer triaging
it looks where the trust's ACK pointed (hub/ingest/service.py `_in_source`); before, the entry named
`person.nhs_number` while the ACK named `PID-3`. A message that did not map at all was already held under
the HL7 field's name; a REST change's entry still names the contract's field."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from hub.ingest.nhs_number import nhs_number_problem
from hub.mllp import MllpServer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7v2"


def _a01(nhs: str, control_id: str) -> bytes:
    text = (FIXTURES / "ADT_A01_s3_detained.hl7").read_bytes().decode().replace("9990001006", nhs)
    return re.sub(r"^(MSH(?:\|[^|\r]*){8}\|)[^|\r]*", lambda m: m.group(1) + control_id, text, count=1).encode()


def _bad_check_digit() -> str:
    good = next(n for n in (f"999{i:07d}" for i in range(3000, 3100)) if nhs_number_problem(n) is None)
    return good[:-1] + str((int(good[-1]) + 1) % 10)


async def _held(app_hub) -> list[dict]:  # noqa: ANN001
    r = await app_hub.http.get("/v1/quarantine", headers={"X-API-Key": app_hub.keys["trust"]})
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_the_quarantine_entry_names_the_hl7_field_its_ack_named(app_hub):
    server = MllpServer(app_hub.hub.engine, app_hub.hub.ingest, "127.0.0.1", 0)
    try:
        bad = _bad_check_digit()
        ack = await server.handle(_a01(bad, "QF-1"))
    finally:
        server._sock.close()
    assert "|AE|QF-1" in ack and "ERR|PID^1^3^" in ack, ack
    (entry,) = [q for q in await _held(app_hub) if q["source_message_id"] == "QF-1"]
    assert entry["channel"] == "mllp"
    (error,) = [e for e in entry["errors"] if "modulus-11" in e["reason"]]
    assert error["field"] == "PID-3", entry["errors"]
    assert error["reason"].startswith("(person.nhs_number) "), error
    assert bad not in orjson.dumps(entry["errors"]).decode()


async def test_a_rest_changes_entry_still_names_the_contracts_field(app_hub):
    body = {"source_system": "RiO (demo)", "source_message_id": "QF-REST", "change_type": "detained",
            "effective_date": "2025-01-10", "legal_status_code": "03", "hospital_ods": "RNU",
            "residence_la_gss": "E06000060",
            "person": {"nhs_number": _bad_check_digit(), "given_name": "Test", "family_name": "Fields"}}
    r = await app_hub.http.post("/v1/register-changes", json=body, headers={"X-API-Key": app_hub.keys["trust"]})
    assert r.status_code == 422, r.text
    (entry,) = [q for q in await _held(app_hub) if q["source_message_id"] == "QF-REST"]
    assert [e["field"] for e in entry["errors"]] == ["person.nhs_number"], entry
