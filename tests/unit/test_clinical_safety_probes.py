"""Clinical safety probes (docs/clinical-safety/hazard-log.yaml): each reproduces a hazard through a real
entry point (the app in-process, real SQLite) and checks the control the log cites holds.

- H-01 (b): an NHS number that fails the modulus-11 check digit is refused on every channel (REST, FHIR,
  MLLP, council files, look-up) and never makes a person: a number keyed wrongly usually fails it.
- H-03 (c): when no responsible council can be determined (no place of residence before the detention),
  recipients are told there is none, never a default body: the hospital's council is named coordinating,
  the person query's `responsible_council` is null and the pushed position names no responsible council.
- H-04 (d): a council file's `S117_END` row saying both bodies agreed is the council's agreement only: the
  person stays entitled until the NHS commissioner (or the care trust acting for it) records its own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sqlalchemy import func, select

from hub.clients import add_client
from hub.fhir.messages import read_position
from hub.ingest.nhs_number import nhs_number_problem
from hub.mllp import MllpServer
from hub.store.schema import persons
from tests.support import council_file_done, detention

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BAD = "9990001007"  # 9990001006 with its last digit off by one: fails the check digit


async def _people(app_hub) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(persons))).scalar_one()


async def test_h01_a_bad_check_digit_is_refused_on_every_channel_and_makes_no_person(app_hub):
    assert nhs_number_problem(BAD) == "fails the modulus-11 check digit"
    trust = {"X-API-Key": app_hub.keys["trust"]}
    # REST
    detained, _ = detention(BAD, "cd")
    r = await app_hub.http.post("/v1/register-changes", headers=trust, json=detained)
    assert r.status_code == 422, r.text
    assert {"field": "person.nhs_number", "reason": "fails the modulus-11 check digit"} in r.json()["errors"]
    # FHIR $process-message
    text = (FIXTURES / "fhir_inbound" / "detained.json").read_text().replace('"9990000018"', f'"{BAD}"')
    r = await app_hub.http.post("/v1/fhir/$process-message", content=text.encode(),
                                headers={**trust, "Content-Type": "application/fhir+json"})
    assert r.status_code == 422, r.text
    assert any("modulus-11" in i.get("diagnostics", "") for i in r.json()["issue"]), r.text
    # MLLP
    hl7 = (FIXTURES / "hl7v2" / "ADT_A01_s3_detained.hl7").read_text().replace("\n", "\r")
    hl7 = hl7.replace("9990001006", BAD).replace("RNU-A01-0001", "CD-MLLP-1")
    server = MllpServer(app_hub.hub.engine, app_hub.hub.ingest, "127.0.0.1", 0)
    try:
        ack = await server.handle(hl7.encode())
    finally:
        server._sock.close()
    assert "MSA|AE|CD-MLLP-1" in ack and re.search(r"ERR\|PID\^1\^3\^", ack), ack
    # Council files
    _, key = await add_client(app_hub.hub.engine, "Bucks SWIFT", "E06000060", "council", ["register:write"])
    data = f"RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO\nCD-1,REVIEW_DONE,01/07/2025,{BAD}\n".encode()
    r = await app_hub.http.post("/v1/council-files?format=swift_csv", content=data,
                                headers={"X-API-Key": key, "Content-Type": "text/csv"})
    r = await council_file_done(app_hub.http, r, {"X-API-Key": key})
    (row,) = r.json()["report"]
    assert row["status"] == "rejected" and any("NHS_NO" in e["field"] for e in row["errors"]), row
    # Look-up
    r = await app_hub.http.post("/v1/persons/lookup", headers=trust, json={"nhs_number": BAD})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "nhs_number", r.text
    assert await _people(app_hub) == 0


async def test_h03_no_responsible_council_known_is_told_as_none_never_a_default_body(app_hub):
    hub = app_hub.hub
    detained, left = detention("9434765919", "nfa")
    del detained["residence_la_gss"], detained["gp_practice_ods"]
    detained["no_fixed_abode"] = True  # no place of residence before the detention, no GP
    for change in (detained, left):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                    json=change)
        assert r.status_code == 202, r.text
    _, admin = await add_client(hub.engine, "ops", "HUB", "hub-operator", ["hub:admin", "s117:read"])
    r = await app_hub.http.post("/v1/persons/lookup", headers={"X-API-Key": admin}, json={"nhs_number": "9434765919"})
    person_id = r.json()["person_id"]
    status = (await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": admin})).json()
    assert status["entitled"] is True
    assert status["responsible_council"] is None  # stated as none, not a guess
    # The hospital's council (RNU: Oxfordshire) coordinates, by the rule named, and is not made responsible.
    assert status["coordinating_council"]["org"]["code"] == "E10000025"
    assert "no place of residence" in status["coordinating_council"]["explanation"]
    # The NHS commissioner is determined by its own rule (no GP: where present, Worcs 4.4.1), with its reason.
    assert status["responsible_commissioner"]["org"]["code"] == "QU9"
    assert "not registered with a GP" in status["responsible_commissioner"]["explanation"]
    # What the ICB is pushed: its role, the coordinating council, and no responsible council at all.
    _, icb_key = await add_client(hub.engine, "BOB ICB", "QU9", "icb", ["subscriptions:write", "s117:read"])
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": icb_key}, json={"channel": "feed"})
    assert r.status_code == 201, r.text
    while await hub.dispatcher.run_once():
        pass
    feed = await app_hub.http.get(f"/v1/feeds/{r.json()['subscription_id']}", headers={"X-API-Key": icb_key})
    positions = [read_position(i["message"]) for i in feed.json()["items"]]
    latest = max((p for p in positions if p is not None), key=lambda p: p.version)
    assert latest.view["roles"] == ["responsible-commissioner"]
    assert latest.view["responsible_commissioner"] == "QU9"
    assert latest.view["coordinating_council"] == "E10000025"
    assert "responsible_council" not in latest.view
    assert all("responsible_council" not in p.view for p in positions if p is not None)
    # Granted `explanations`, the ICB is also told why in words: none known until the discharge area is.
    assert "coordinates until the discharge area is known" in json.dumps(feed.json()["items"][-1]["message"])


async def test_h04_a_council_files_end_row_claiming_both_agreed_waits_for_the_commissioner(app_hub):
    hub = app_hub.hub
    for change in detention("9434765919", "end"):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                    json=change)
        assert r.status_code == 202, r.text
    _, key = await add_client(hub.engine, "Bucks SWIFT", "E06000060", "council", ["register:write", "s117:read"])
    data = ("RECORD_ID,EVENT,EFFECTIVE_DATE,NHS_NO,LA_AGREES,NHS_AGREES,PERSON_INVOLVED,END_REASONS,PARTICIPANTS\n"
            "END-1,S117_END,01/09/2025,9434765919,Y,Y,Y,NO_NEED,care coordinator;AMHP\n").encode()
    r = await app_hub.http.post("/v1/council-files?format=swift_csv", content=data,
                                headers={"X-API-Key": key, "Content-Type": "text/csv"})
    r = await council_file_done(app_hub.http, r, {"X-API-Key": key})
    (row,) = r.json()["report"]
    assert row["status"] == "accepted", row
    _, admin = await add_client(hub.engine, "ops", "HUB", "hub-operator", ["hub:admin", "s117:read"])
    person_id = (await app_hub.http.post("/v1/persons/lookup", headers={"X-API-Key": admin},
                                         json={"nhs_number": "9434765919"})).json()["person_id"]

    async def status() -> dict:
        return (await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers={"X-API-Key": admin})).json()

    held = await status()
    assert held["entitled"] is True and held["entitlement_end"] is None  # the council's word alone ends nothing
    assert "NHS commissioner's own agreement" in held["pending_discharge"]["explanation"]
    # The ICB records its own agreement: now the aftercare ends, on the decision's day.
    _, icb = await add_client(hub.engine, "BOB ICB", "QU9", "icb", ["register:write", "s117:read"])
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": icb}, json={
        "source_system": "ICB", "source_message_id": "icb-end", "change_type": "s117-discharge-decided",
        "effective_date": "2025-09-02", "person": {"nhs_number": "9434765919"},
        "discharge": {"council_agrees": False, "commissioner_agrees": True, "reasons": ["no-longer-needs-services"],
                      "participants": ["ICB s117 lead"], "person_involved": True}})
    assert r.status_code == 202, r.text
    ended = await status()
    assert ended["entitled"] is False and ended["entitlement_end"] == "2025-09-02"
    assert ended["discharged_from_s117"] is True
