"""Transfers and disputes end to end over real HTTP: the hub as a uvicorn
process on SQLite, a real webhook receiver per body. A re-detention in another
area opens a transfer; the incoming council contests; the dispute between the
councils (the 2014 Disputes Regulations' procedure) escalates to the
Secretary of State once when local resolution's clock runs out (time injected through the test-only clock
endpoint, the real background scanner acting on it); it is resolved by both
councils agreeing the outcome; the
reimbursement statement names the payer; and each body received exactly the
messages its data-sharing agreement allows, with the FHIR Task valid R4."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from datetime import date, timedelta

import httpx
import orjson
import pytest
import yaml
from fhir.resources.R4B.task import Task
from sqlalchemy import select

from hub.clients import add_client
from hub.fhir.validate import validate_message
from hub.sample_data import detention_to_move_scenario
from hub.store.db import create_engine, create_schema
from hub.store.schema import bus_messages
from tests.e2e.conftest import SECRET
from tests.support import HubProcess, Receiver

pytestmark = pytest.mark.e2e

BUCKS, WORCS, BOB = "E06000060", "E10000034", "QU9"
WORKFLOW_EVENTS = ["s117-transfer-updated", "s117-dispute-updated", "s117-workflow-deadline"]
REGISTER_EVENTS = ["s117-register-change-recorded", "s117-entitlement-started", "s117-entitlement-ended",
                   "s117-responsibility-transferred", "s117-discharge-refused", "s117-dispute-raised",
                   "s117-dispute-resolved", "s117-review-due", "s117-moved-out-of-area"]
SHARING = {"version": 1, "agreements": [
    {"id": "DSA-WF-BUCKS", "valid_from": "2020-01-01", "recipients": [
        {"org_code": BUCKS, "events": ["*"], "field_groups": ["identity", "responsibility", "workflow"]},
        # The ICB hears of register events but its agreement grants no workflow events.
        {"org_code": BOB, "events": REGISTER_EVENTS, "field_groups": ["identity", "responsibility"]}]},
    {"id": "DSA-WF-WORCS", "valid_from": "2020-01-01", "recipients": [
        {"org_code": WORCS, "events": ["s117-responsibility-transferred", "s117-dispute-raised",
                                       "s117-dispute-resolved", *WORKFLOW_EVENTS],
         "field_groups": ["responsibility", "workflow"]}]},
]}
ALLOWED = {BUCKS: set(REGISTER_EVENTS) | set(WORKFLOW_EVENTS), BOB: set(REGISTER_EVENTS),
           WORCS: {"s117-responsibility-transferred", "s117-dispute-raised", "s117-dispute-resolved",
                   *WORKFLOW_EVENTS}}


def code(body: bytes) -> str:
    return orjson.loads(body)["entry"][0]["resource"]["eventCoding"]["code"]


async def poll(fetch, ok, timeout: float = 30.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last value {value!r}"[:2000])
        await asyncio.sleep(0.1)


async def test_transfer_contest_escalation_resolution_and_messages(tmp_path):
    sharing = tmp_path / "sharing.yaml"
    sharing.write_text(yaml.safe_dump(SHARING))
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing, S117_WORKFLOW_CLOCK_SETTABLE="true",
                     S117_WORKFLOW_SCAN_INTERVAL_SECONDS="0.2")
    engine = create_engine(hub.db_url)
    await create_schema(engine)
    keys = {"trust": (await add_client(engine, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"]))[1],
            "admin": (await add_client(engine, "Hub ops", "HUB", "hub-operator", ["hub:admin"]))[1],
            # The re-detention in Worcestershire: reported by the trust that runs that hospital.
            "R1A": (await add_client(engine, "HW Health and Care", "R1A", "trust", ["register:write"]))[1]}
    for org, kind in ((BUCKS, "council"), (WORCS, "council"), (BOB, "icb")):
        keys[org] = (await add_client(engine, org, org, kind,
                                      ["subscriptions:write", "s117:read", "workflows:write"]))[1]
    await engine.dispose()
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            def as_(org: str) -> dict:
                return {"X-API-Key": keys[org]}

            for org in (BUCKS, WORCS, BOB):
                r = await http.post("/v1/subscriptions", headers=as_(org), json={"url": receiver.url(org),
                                                                                   "secret": SECRET})
                assert r.status_code == 201, r.text

            # Entitled in Buckinghamshire, moves to Worcestershire, detained again there under s3.
            start = date(2025, 1, 6)
            changes = detention_to_move_scenario(random.Random(11), "e2e-wf", start)
            redetained = start + timedelta(days=200)
            changes.append({**{k: changes[0][k] for k in ("source_system", "person")},
                            "source_message_id": "e2e-wf-5", "change_type": "detained",
                            "effective_date": redetained.isoformat(), "legal_status_code": "03",
                            "hospital_ods": "R1A", "residence_la_gss": WORCS})
            for c in changes:
                reporter = "R1A" if c.get("hospital_ods") == "R1A" else "trust"  # the hospital's trust reports
                r = await http.post("/v1/register-changes", headers=as_(reporter), json=c)
                assert r.status_code == 202, r.text
            person_id = r.json()["person_id"]

            async def transfers() -> list[dict]:
                return (await http.get("/v1/transfers", headers=as_(WORCS))).json()["items"]

            transfer = (await poll(transfers, lambda items: len(items) == 1))[0]
            assert (transfer["outgoing"], transfer["incoming"], transfer["state"]) == (
                BUCKS, WORCS, "awaiting-acknowledgement")
            assert transfer["clock"]["owner"] == WORCS
            # Not a party: the same 404 as an unknown id.
            assert (await http.get(f"/v1/transfers/{transfer['case_id']}", headers=as_(BOB))).status_code == 404

            r = await http.post(f"/v1/transfers/{transfer['case_id']}/contest", headers=as_(WORCS),
                                json={"reason": "ordinarily resident in Buckinghamshire before the detention"})
            assert r.status_code == 200, r.text
            r = await http.post(f"/v1/transfers/{transfer['case_id']}/contest", headers=as_(WORCS),
                                json={"reason": "again"})
            assert r.status_code == 409 and r.json()["rule"] == "already-contested"

            disputes = (await http.get("/v1/disputes", headers=as_(BUCKS))).json()["items"]
            assert len(disputes) == 1 and disputes[0]["state"] == "open"
            dispute_id = disputes[0]["case_id"]
            # Between councils: the 2014 Disputes Regulations (Worcs 4.3.4, 15.4), local resolution led by
            # the lead authority, Bucks (meeting the needs meanwhile); not Bucks' NHS procedure (JMG -> ICET,
            # as this test expected before).
            clock = disputes[0]["clock"]
            assert clock["owner"] == BUCKS
            assert disputes[0]["stages"][0]["name"].startswith("local resolution between the councils")

            # The day after local resolution's 85 working days (the hub's default; time injected, not
            # slept): the background scanner escalates once, to the Secretary of State.
            days = (date.fromisoformat(clock["due_on"]) - date.fromisoformat(clock["started_on"])).days + 1
            r = await http.post("/v1/ops/workflows/clock", headers=as_("admin"), json={"advance_days": days})
            assert r.status_code == 200, r.text

            async def dispute() -> dict:
                return (await http.get(f"/v1/disputes/{dispute_id}", headers=as_(WORCS))).json()

            escalated = await poll(dispute, lambda d: d["state"] == "escalated")
            assert escalated["clock"]["owner"] == "Secretary of State"
            await asyncio.sleep(1.0)  # several more scans on the same day
            again = await dispute()
            assert again["stage_index"] == 1 and [h["action"] for h in again["history"]].count("escalate") == 1

            # Resolved by agreement (Worcs 15.5): Bucks proposes, Worcestershire's same terms resolve it.
            outcome = {"responsible": WORCS, "responsible_from": redetained.isoformat()}
            r = await http.post(f"/v1/disputes/{dispute_id}/resolve", headers=as_(BUCKS), json=outcome)
            assert r.status_code == 202 and r.json()["state"] == "escalated", r.text
            r = await http.post(f"/v1/disputes/{dispute_id}/resolve", headers=as_(WORCS), json=outcome)
            assert r.status_code == 200, r.text
            statement = r.json()["reimbursement"]
            assert statement["payer"] == WORCS and statement["payees"] == [BUCKS]
            assert statement["lines"] and all(line["carried_by"] == BUCKS for line in statement["lines"])
            assert (await http.get(f"/v1/disputes/{dispute_id}/reimbursement", headers=as_(BOB))).status_code == 404

            # The resolution went through ingest: the rules engine folds it.
            async def position() -> dict:
                return (await http.get(f"/v1/persons/{person_id}/s117", headers=as_("admin"))).json()  # all groups

            settled = await poll(position, lambda p: p["open_disputes"] == []
                                 and any("dispute resolved" in h["text"] for h in p["history"]))
            assert settled["responsible_council"]["org"]["code"] == WORCS

            # Every message the hub decided to send has arrived, and nothing else.
            db = sqlite3.connect(str(tmp_path / "hub.db"))

            def decisions() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
                rows = db.execute("SELECT event_id, event_type, recipient_org, decision FROM disclosures").fetchall()
                allowed: dict[str, set[str]] = {}
                for event_id, _type, org, decision in rows:
                    if decision == "allowed":
                        allowed.setdefault(org, set()).add(event_id)
                return allowed, [(t, o, d) for _e, t, o, d in rows]

            def drained() -> bool:
                last = db.execute("SELECT max(\"offset\") FROM bus_messages").fetchone()[0]
                groups = dict(db.execute("SELECT group_id, next_offset FROM consumer_offsets").fetchall())
                pending = db.execute("SELECT count(*) FROM deliveries WHERE status != 'delivered'").fetchone()[0]
                return groups.get("dispatcher") == groups.get("workflows") == last + 1 and pending == 0

            def complete() -> bool:
                if not drained():
                    return False
                allowed, rows = decisions()
                resolved_sent = any(t == "s117-dispute-updated" and o == WORCS for t, o, _ in rows) and any(
                    orjson.loads(x.body)["entry"][0]["resource"]["eventCoding"]["code"] == "s117-dispute-updated"
                    and b'"resolved"' in x.body for x in receiver.received if x.org == WORCS)
                return resolved_sent and all(set(receiver.event_ids(org)) >= ids for org, ids in allowed.items())

            await receiver.wait_for(complete, timeout=60)
            allowed, rows = decisions()
            for org in (BUCKS, WORCS, BOB):
                got = receiver.event_ids(org)
                assert len(got) == len(set(got)), f"{org} received a message twice"
                assert set(got) == allowed.get(org, set()), org
                assert {code(x.body) for x in receiver.received if x.org == org} <= ALLOWED[org]
            for event_type, org, decision in rows:
                if decision == "denied":
                    assert event_type not in ALLOWED[org]
            # The workflow events reached both parties; the ICB's agreement kept them from it.
            for org in (BUCKS, WORCS):
                codes = [code(x.body) for x in receiver.received if x.org == org]
                assert codes.count("s117-transfer-updated") == 2  # opened, contested
                assert codes.count("s117-dispute-updated") == 4  # raised, escalated, outcome proposed, resolved
                assert codes.count("s117-workflow-deadline") == 1  # local resolution ran out
            assert not {code(x.body) for x in receiver.received if x.org == BOB} & set(WORKFLOW_EVENTS)
            assert any(t in WORKFLOW_EVENTS and o == BOB and d == "denied" for t, o, d in rows)

            # Each workflow message carries its Task, valid FHIR R4, owner and clock included.
            statuses = []
            for x in receiver.received:
                if code(x.body) in WORKFLOW_EVENTS:
                    bundle = orjson.loads(x.body)
                    validate_message(bundle)
                    task = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")
                    Task.model_validate(task)
                    statuses.append(task["status"])
            assert {"requested", "rejected", "in-progress", "completed"} <= set(statuses)
            db.close()
    finally:
        hub.stop()
        await receiver.stop()


async def test_the_clock_set_through_the_front_moves_the_worker_process_scanner(tmp_path):
    """The hub in three processes (the front, the back workers with the clock
    scanner, the deliverers), the clock settable: the offset set through the
    front's endpoint is kept in the store, and the worker process's periodic
    scanner (nothing here asks for a scan) reminds on the deadline's day and
    records the breach the day after, each once. A restarted front keeps it."""
    hub = HubProcess(tmp_path, S117_WORKFLOW_CLOCK_SETTABLE="true", S117_WORKFLOW_SCAN_INTERVAL_SECONDS="0.2",
                     S117_SEPARATE_WORKERS="true", S117_SEPARATE_DELIVERY="true")
    engine = create_engine(hub.db_url)
    await create_schema(engine)
    keys = {"trust": (await add_client(engine, "Oxford Health", "RNU", "trust", ["register:write"]))[1],
            "admin": (await add_client(engine, "Hub ops", "HUB", "hub-operator", ["hub:admin"]))[1],
            "R1A": (await add_client(engine, "HW Health and Care", "R1A", "trust", ["register:write"]))[1],
            WORCS: (await add_client(engine, WORCS, WORCS, "council", ["s117:read", "workflows:write"]))[1]}

    async def deadlines() -> list[str]:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(bus_messages.c.payload).where(
                bus_messages.c.headers["event_type"].as_string() == "s117-workflow-deadline")
                .order_by(bus_messages.c.offset))).all()
            await conn.rollback()
        return [r.payload["event"]["details"]["deadline"] for r in rows]

    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            ready = (await http.get("/health/ready")).json()["checks"]
            assert ready["worker_process"] == ready["delivery_process"] == "ok"  # the scanner is not in the front
            start = date(2025, 1, 6)
            changes = detention_to_move_scenario(random.Random(13), "e2e-clock", start)
            changes.append({**{k: changes[0][k] for k in ("source_system", "person")},
                            "source_message_id": "e2e-clock-5", "change_type": "detained",
                            "effective_date": (start + timedelta(days=200)).isoformat(), "legal_status_code": "03",
                            "hospital_ods": "R1A", "residence_la_gss": WORCS})
            for c in changes:
                r = await http.post("/v1/register-changes", json=c,
                                    headers={"X-API-Key": keys["R1A" if c.get("hospital_ods") == "R1A" else "trust"]})
                assert r.status_code == 202, r.text

            async def transfers() -> list[dict]:
                return (await http.get("/v1/transfers", headers={"X-API-Key": keys[WORCS]})).json()["items"]

            [transfer] = await poll(transfers, lambda items: len(items) == 1)
            due = date.fromisoformat(transfer["clock"]["due_on"])
            today = date.fromisoformat((await http.get("/v1/transfers", headers={"X-API-Key": keys[WORCS]}))
                                       .json()["as_of"])
            await asyncio.sleep(0.5)  # a couple of scans at the real date: nothing due yet
            assert await deadlines() == []

            # The deadline's day: a reminder (the area reminds two working days ahead), from the worker's scanner.
            r = await http.post("/v1/ops/workflows/clock", headers={"X-API-Key": keys["admin"]},
                                json={"advance_days": (due - today).days})
            assert r.status_code == 200, r.text
            assert await poll(deadlines, lambda d: d == ["reminder"], timeout=20) == ["reminder"]

            # The day after: the transfer is overdue, once, however many scans follow.
            advance = (due - today).days + 1
            r = await http.post("/v1/ops/workflows/clock", headers={"X-API-Key": keys["admin"]},
                                json={"advance_days": advance})
            assert r.status_code == 200, r.text

            async def case() -> dict:
                return (await http.get(f"/v1/transfers/{transfer['case_id']}",
                                       headers={"X-API-Key": keys[WORCS]})).json()

            overdue = await poll(case, lambda c: c["state"] == "overdue", timeout=20)
            assert overdue["clock"]["breached"] is True
            await asyncio.sleep(1.0)  # several more scans on the same day
            assert await deadlines() == ["reminder", "breach"]
            assert [h["action"] for h in (await case())["history"]] == ["open", "breach"]
            assert "workflow-clock-elsewhere" not in hub.logs()

        hub.stop()
        await hub.start()  # a restarted front reads the offset from the store
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            as_of = (await http.get("/v1/transfers", headers={"X-API-Key": keys[WORCS]})).json()["as_of"]
            assert as_of == (today + timedelta(days=advance)).isoformat()
    finally:
        hub.stop()
        await engine.dispose()
