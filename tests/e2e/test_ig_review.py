"""An information governance lead's checks, from the outside: the hub served as
a real process over a real socket, its SQLite store, and `s117hub audit
person` run as the IG lead runs it (the NHS number on standard input).
Each test is one finding of the thirty-second session's IG review: a person's
data reached someone, and the subject access answer did not show it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
import yaml

from hub.clients import add_client
from hub.store.db import create_engine
from hub.domain.dates import england_day
from tests.e2e.conftest import SHARING, make_clients
from tests.support import REPO, HubProcess, put_on_register

pytestmark = pytest.mark.e2e

PERSON = {"nhs_number": "9991100016", "given_name": "Alex", "family_name": "Testpatient",
          "birth_date": "1971-03-14", "postcode": "HP20 1AA"}


def audit_person(hub: HubProcess, nhs_number: str) -> dict:
    """`s117hub audit person` against the hub's store: what the IG lead answers a subject access request with."""
    env = {k: v for k, v in hub.env.items() if k != "S117_PORT"}
    done = subprocess.run([sys.executable, "-m", "hub.cli", "audit", "person"], input=nhs_number + "\n",
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


async def _entitled(http: httpx.AsyncClient, trust_key: str) -> str:
    return await put_on_register(http, trust_key, PERSON, "ig")


async def test_a_recharge_statement_is_a_disclosure_of_each_person_it_lists(tmp_path):
    """A statement gives the ICB each listed person's package lines (provider, costs, shares): the
    subject access answer names the ICB's statement read. Failed before: the read was one row naming
    no one, so `audit person` showed the person's pushes only, never that the ICB saw their costs."""
    doc = yaml.safe_load(yaml.safe_dump(SHARING))
    for recipient in doc["agreements"][0]["recipients"]:
        recipient["field_groups"] = [*recipient["field_groups"], "funding"]
    sharing = tmp_path / "sharing.yaml"
    sharing.write_text(yaml.safe_dump(doc))
    hub = HubProcess(tmp_path, sharing_path=sharing)
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    _, finance = await add_client(engine, "Bucks finance", "E06000060", "council", ["packages:write"])
    await engine.dispose()
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            pid = await _entitled(http, keys["trust"])
            r = await http.post("/v1/packages", headers={"X-API-Key": finance}, json={
                "source_message_id": "ig-pk-1", "action": "start", "package_id": "L1", "person_id": pid,
                "effective_date": "2026-09-20", "service_type": "supported accommodation",
                "provider": {"kind": "council", "code": "BCC-PRV-00123"}, "need": "social-care",
                "weekly_cost_pence": 70_000})
            assert r.status_code == 201, r.text
            q = "/v1/statements?month=2026-10&council=E06000060&icb=QU9"
            s = await http.get(q, headers={"X-API-Key": keys["QU9"]})
            assert s.status_code == 200 and [p["person_id"] for p in s.json()["persons"]] == [pid], s.text
            refused = await http.get(q, headers={"X-API-Key": keys["E10000034"]})
            assert refused.status_code == 404
            empty = await http.get("/v1/statements?month=2024-01&council=E06000060&icb=QU9",
                                   headers={"X-API-Key": keys["QU9"]})
            assert empty.status_code == 200 and empty.json()["persons"] == []
    finally:
        hub.stop()

    got = audit_person(hub, PERSON["nhs_number"])
    assert got["person_id"] == pid
    statements = [e for e in got["disclosures"] if e["channel"] == "statement"]
    assert [(e["recipient"], e["decision"], e["field_groups"], e["as_of"]) for e in statements] == [
        ("QU9", "allowed", ["funding"], "2026-10-01")], got["disclosures"]


async def test_the_operator_reading_a_quarantined_input_is_an_audited_operator_action(tmp_path, sharing_file):
    """A quarantined input holds what the source sent (an NHS number, a name) in full. Its own
    source reading it back is not a disclosure; the hub operator reading it is, and is recorded
    (operator action `read-quarantined-input`, the entry and the source, chained like every other).
    Failed before: the operator's read left no record."""
    import sqlite3

    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    ops_id, ops = await add_client(engine, "ops", "HUB", "hub-operator", ["hub:admin"])
    await engine.dispose()
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            bad = {"source_system": "RiO", "source_message_id": "ig-bad", "change_type": "detained",
                   "effective_date": "2025-01-10", "legal_status_code": "03", "hospital_ods": "RNU",
                   "residence_la_gss": "E06000060",
                   "person": {**PERSON, "nhs_number": "9991100017"}}  # a wrong check digit: held
            r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=bad)
            assert r.status_code == 422, r.text
            (item,) = (await http.get("/v1/quarantine", headers={"X-API-Key": keys["trust"]})).json()["items"]
            qid = item["quarantine_id"]
            mine = await http.get(f"/v1/quarantine/{qid}", headers={"X-API-Key": keys["trust"]})
            assert mine.status_code == 200 and "9991100017" in mine.json()["raw"]
            seen = await http.get(f"/v1/quarantine/{qid}", headers={"X-API-Key": ops})
            assert seen.status_code == 200 and PERSON["family_name"] in seen.json()["raw"]
            verify = (await http.get("/v1/ops/audit/verify", headers={"X-API-Key": ops})).json()
            assert verify["ok"] is True, verify
    finally:
        hub.stop()
    with sqlite3.connect(tmp_path / "hub.db") as db:
        actions = db.execute("SELECT action_id, client_id, action, target, detail FROM operator_actions "
                             "WHERE action = 'read-quarantined-input'").fetchall()
        assert [(a[1], a[3], json.loads(a[4])["channel"]) for a in actions] == [(ops_id, qid, "rest")]
        chained = db.execute("SELECT count(*) FROM audit_chain WHERE source = 'operator_actions' AND source_id = ?",
                             (actions[0][0],)).fetchone()[0]
    assert chained == 1


async def test_the_subject_access_answer_names_the_operators_looks_at_the_person(tmp_path, sharing_file):
    """A trace of the person (the console's Trace by NHS number: every change, event and recipient)
    shows the hub operator the record: `audit person` names it (channel `operator`, the action,
    the operator's key), as JSON and as FHIR AuditEvents. Failed before: only the pushes and the
    bodies' reads were listed, so an IG incident could not tell that hub staff had looked."""
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    ops_id, ops = await add_client(engine, "ops", "HUB", "hub-operator", ["hub:admin"])
    await engine.dispose()
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            pid = await _entitled(http, keys["trust"])
            r = await http.post("/v1/ops/trace/person", headers={"X-API-Key": ops},
                                json={"nhs_number": PERSON["nhs_number"]})
            assert r.status_code == 200 and r.json()["changes"] == 2, r.text
    finally:
        hub.stop()
    got = audit_person(hub, PERSON["nhs_number"])
    looks = [(e["channel"], e["recipient"], e["operator_action"], e["client_id"]) for e in got["disclosures"]
             if e["channel"] == "operator"]
    assert looks == [("operator", "HUB", "trace-person", ops_id)], got["disclosures"]
    env = {k: v for k, v in hub.env.items() if k != "S117_PORT"}
    done = subprocess.run([sys.executable, "-m", "hub.cli", "audit", "person", "--fhir"],
                          input=PERSON["nhs_number"] + "\n", capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    events = [e["resource"] for e in json.loads(done.stdout)["entry"]]
    (look,) = [e for e in events if e.get("outcomeDesc") == "trace-person"]
    assert look["action"] == "R" and look["agent"][0]["who"]["identifier"]["value"] == "HUB"
    assert PERSON["nhs_number"] not in done.stdout


async def test_a_retracted_change_is_corrected_to_every_body_told_of_it_whose_position_does_not_move(
        tmp_path, sharing_file):
    """A trust records a wrong section (37 for a patient on a section 3) and retracts it. The ICB was
    sent the change (`s117-register-change-recorded`: the section, its date, the hospital); the
    retraction leaves its position (entitled, responsible commissioner) as it was. It is still told,
    once: `s117-notification-corrected` superseding the message of the wrong change, its position
    unchanged (UK GDPR Art. 19: each recipient is told of a rectification). Failed before: a body
    whose position did not move heard nothing, and kept the wrong section on its record."""
    import asyncio

    from hub.fhir.messages import read_position
    from tests.e2e.conftest import SECRET
    from tests.support import Receiver

    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    await hub.start()

    def messages() -> list[dict]:
        return [json.loads(r.body) for r in receiver.received if r.org == "QU9"]

    def code(m: dict) -> str:
        return m["entry"][0]["resource"]["eventCoding"]["code"]

    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys["QU9"]},
                                json={"url": receiver.url("QU9"), "secret": SECRET})
            assert r.status_code == 201, r.text
            await _entitled(http, keys["trust"])
            wrong = {"source_system": "RiO", "person": PERSON, "source_message_id": "ig-wrong",
                     "change_type": "section-changed", "effective_date": "2025-02-10", "legal_status_code": "37",
                     "hospital_ods": "RNU"}
            r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=wrong)
            assert r.status_code == 202, r.text
            wrong_event = r.json()["events"][0]["event_id"]
            await receiver.wait_for(lambda: wrong_event in receiver.event_ids("QU9"))
            before = messages()
            held = read_position(before[-1])
            r = await http.post(f"/v1/register-changes/{r.json()['change_id']}/retraction",
                                headers={"X-API-Key": keys["trust"]}, json={"reason": "wrong section"})
            assert r.status_code == 200, r.text
            await receiver.wait_for(lambda: len(messages()) > len(before))
            await asyncio.sleep(1.0)  # time for a second message, were one sent
    finally:
        hub.stop()
        await receiver.stop()
    new = messages()[len(before):]
    assert [code(m) for m in new] == ["s117-notification-corrected"], [code(m) for m in new]
    position = read_position(new[0])
    assert position.supersedes == wrong_event
    assert position.view == held.view and position.version == held.version + 1
    assert "recorded in error and retracted" in position.reason and "unchanged" in position.reason
    told = [e for e in audit_person(hub, PERSON["nhs_number"])["disclosures"]
            if e["event_type"] == "s117-notification-corrected"]
    assert [(e["recipient"], e["decision"]) for e in told] == [("QU9", "allowed")], told


async def test_a_message_sent_under_a_renewed_agreement_is_audited_under_it(tmp_path):
    """Messages queued under DSA-TEST-BUCKS wait (the ICB's endpoint down, the council's feed not
    read) while that agreement ends and its renewal (a new id) comes into force. They go out under
    the renewal, and the audit says so: one `allowed` disclosure each naming the renewal and the
    agreement it was queued under (once, however often the webhook is retried). Failed before: the
    only record named the ended agreement, so "under which agreement was this sent" was answered
    wrongly."""
    import asyncio
    import sqlite3
    from datetime import UTC, datetime, timedelta

    from tests.e2e.conftest import SECRET
    from tests.support import Receiver

    doc = yaml.safe_load(yaml.safe_dump(SHARING))
    sharing = tmp_path / "sharing.yaml"
    sharing.write_text(yaml.safe_dump(doc))
    receiver = Receiver(secret=SECRET, fail_with=503)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing)
    keys = await make_clients(hub.db_url)
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys["QU9"]},
                                json={"url": receiver.url("QU9"), "secret": SECRET})
            assert r.status_code == 201, r.text
            r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys["E06000060"]},
                                json={"channel": "feed"})
            feed = r.json()["subscription_id"]
            await _entitled(http, keys["trust"])
            await receiver.wait_for(lambda: len(receiver.received) >= 3)  # each tried, none accepted
    finally:
        hub.stop()
    # Ten days later (the messages still queued): the agreement ended five days ago, renewed the day after.
    with sqlite3.connect(tmp_path / "hub.db") as db:
        db.execute("UPDATE deliveries SET created_at = datetime(created_at, '-10 days')")
    today = england_day()
    renewed = {**doc["agreements"][0], "id": "DSA-TEST-BUCKS-RENEWED",
               "valid_from": (today - timedelta(days=4)).isoformat()}
    doc["agreements"][0]["valid_to"] = (today - timedelta(days=5)).isoformat()
    doc["agreements"].append(renewed)
    sharing.write_text(yaml.safe_dump(doc))
    receiver.fail_with = 500  # tried again at least once more, then accepted
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            before = len(receiver.received)
            await receiver.wait_for(lambda: len(receiver.received) > before)
            receiver.fail_with = None
            r = await http.get(f"/v1/feeds/{feed}", headers={"X-API-Key": keys["E06000060"]})
            assert r.status_code == 200, r.text
            handed = {i["event_id"] for i in r.json()["items"]}
            r = await http.get(f"/v1/feeds/{feed}", headers={"X-API-Key": keys["E06000060"]})  # read again
            assert {i["event_id"] for i in r.json()["items"]} == handed
            sent: set[str] = set()
            for _ in range(200):
                sent = {x.headers["s117-event-id"] for x in receiver.received if x.status == 204}
                if len(sent) >= len(handed):
                    break
                await asyncio.sleep(0.1)
    finally:
        hub.stop()
        await receiver.stop()
    assert handed and sent, (handed, sent)
    told = audit_person(hub, PERSON["nhs_number"])["disclosures"]
    for org, channel, events in (("E06000060", "feed", handed), ("QU9", "webhook", sent)):
        renewal = [e for e in told if e["recipient"] == org and e["channel"] == channel
                   and e["agreement"] == "DSA-TEST-BUCKS-RENEWED"]
        assert sorted(e["event_id"] for e in renewal) == sorted(events), (org, told)
        assert all(e["decision"] == "allowed" and "queued under DSA-TEST-BUCKS" in e["reason"] for e in renewal)


async def test_messages_written_to_disk_are_kept_no_longer_than_the_delivered_payloads(tmp_path, sharing_file):
    """The README keeps a delivered message 30 days (`S117_RETAIN_DELIVERED_PAYLOAD_DAYS`). A `file`
    channel's day file and a council file are the same messages on disk, in clear: past the cutoff
    the purge removes a day file and an acknowledged council file (in `outbound/` and `ack/`, with
    its manifest), keeps today's day file and a council file not yet acknowledged, and follows no
    symbolic link. Failed before: the database's copy was emptied, the files on disk kept for ever."""
    import asyncio
    import sqlite3

    export_dir = tmp_path / "exports"
    hub = HubProcess(tmp_path, sharing_path=sharing_file, S117_EXPORT_DIR=str(export_dir))
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    _, ops = await add_client(engine, "ops", "HUB", "hub-operator", ["hub:admin"])
    await engine.dispose()
    await hub.start()
    bucks = {"X-API-Key": keys["E06000060"]}
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            assert (await http.post("/v1/subscriptions", headers=bucks, json={"channel": "file"})).status_code == 201
            r = await http.post("/v1/subscriptions", headers=bucks, json={
                "channel": "council-file", "layout": "swift_csv", "schedule": "daily 02:00", "mode": "delta"})
            council_file = r.json()["subscription_id"]
            await _entitled(http, keys["trust"])
            exports = []
            for _ in range(2):  # two files: one the council acknowledges, one it has not collected yet
                r = await http.post(f"/v1/ops/subscriptions/{council_file}/council-file/run", headers={"X-API-Key": ops})
                assert r.status_code == 202, r.text
                for _ in range(200):
                    e = (await http.get(f"/v1/exports/{r.json()['export_id']}/status", headers=bucks)).json()
                    if e["state"] == "ready":
                        break
                    await asyncio.sleep(0.1)
                assert e["state"] == "ready", e
                exports.append(e)
            assert (await http.post(f"/v1/exports/{exports[0]['export_id']}/ack", headers=bucks)).status_code == 200
    finally:
        hub.stop()
    org = export_dir / "E06000060"
    (today_file,) = org.glob("*.ndjson")
    assert PERSON["nhs_number"] in today_file.read_text()
    old_day = org / "2020-01-01.ndjson"
    old_day.write_text(today_file.read_text())
    other = tmp_path / "not-the-hubs.ndjson"
    other.write_text("kept")
    (org / "2020-01-02.ndjson").symlink_to(other)
    acked, waiting = (org / "outbound" / e["file_name"] for e in exports)
    (org / "outbound" / "ack").mkdir(mode=0o700, exist_ok=True)
    (org / "outbound" / "ack" / acked.name).write_bytes(acked.read_bytes())  # the council's copy
    with sqlite3.connect(tmp_path / "hub.db") as db:  # forty days on
        db.execute("UPDATE council_exports SET acknowledged_at = datetime(acknowledged_at, '-40 days')")
        db.execute("UPDATE council_exports SET ready_at = datetime(ready_at, '-40 days')")
    hub.env["S117_RETENTION_PURGE_SECONDS"] = "1"
    await hub.start()
    try:
        for _ in range(100):
            if not old_day.exists() and not acked.exists():
                break
            await asyncio.sleep(0.1)
    finally:
        hub.stop()
    assert not old_day.exists() and today_file.exists()
    assert (org / "2020-01-02.ndjson").is_symlink() and other.read_text() == "kept"
    assert not acked.exists() and not acked.with_name(acked.name + ".sha256").exists()
    assert not (org / "outbound" / "ack" / acked.name).exists()
    assert waiting.exists() and waiting.with_name(waiting.name + ".sha256").exists()
