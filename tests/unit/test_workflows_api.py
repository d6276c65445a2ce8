"""Transfers and disputes through the API, in process on SQLite: the event-log
consumer opens cases, parties act, illegal transitions are named problems,
non-parties get 404, the clock scanner escalates on injected time, the
resolution goes through ingest, changes are held while a dispute is open,
and the Task in each message validates as FHIR R4."""

from __future__ import annotations

import random
from datetime import date, timedelta

import orjson
import pytest
from sqlalchemy import select

from hub.clients import add_client
from hub.fhir.validate import validate_message
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import deliveries, deliveries_with_messages, delivery_messages, quarantine, subscriptions, workflow_transitions
from hub.workflows.consumer import WorkflowConsumer

BUCKS, WORCS = "E06000060", "E10000034"
START = date(2025, 1, 6)


async def drain(app_hub) -> None:  # noqa: ANN001
    consumer = WorkflowConsumer(app_hub.hub.workflows, app_hub.hub.bus, app_hub.hub.engine)
    while (await app_hub.hub.dispatcher.run_once()) + (await consumer.run_once()):
        pass


def redetention_in_worcs(run_id: str) -> tuple[list[dict], dict]:
    changes = detention_to_move_scenario(random.Random(7), run_id, START)
    base = {k: changes[0][k] for k in ("source_system", "person")}
    again = {**base, "source_message_id": f"{run_id}-5", "change_type": "detained",
             "effective_date": (START + timedelta(days=200)).isoformat(), "legal_status_code": "03",
             "hospital_ods": "R1A", "residence_la_gss": WORCS}
    return changes, again


@pytest.fixture
async def workflow_hub(app_hub):  # noqa: ANN001
    hub = app_hub.hub
    for org, kind in ((BUCKS, "council"), (WORCS, "council"), ("QU9", "icb")):
        app_hub.keys[f"wf-{org}"] = (await add_client(hub.engine, org, org, kind,
                                                      ["s117:read", "workflows:write", "subscriptions:write"]))[1]
    app_hub.keys["admin"] = (await add_client(hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]
    # The re-detention in Worcestershire is reported by the trust that runs that hospital (the access policy).
    app_hub.keys["R1A"] = (await add_client(hub.engine, "HW Health and Care", "R1A", "trust", ["register:write"]))[1]
    for org in (BUCKS, WORCS):
        r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[f"wf-{org}"]},
                                    json={"channel": "feed"})
        assert r.status_code == 201, r.text
    changes, again = redetention_in_worcs("wf")
    for c in [*changes, again]:
        key = app_hub.keys["R1A" if c is again else "trust"]
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": key}, json=c)
        assert r.status_code == 202, r.text
    await drain(app_hub)
    app_hub.person_id = r.json()["person_id"]
    app_hub.person = changes[0]["person"]
    return app_hub


def h(app_hub, org: str) -> dict:  # noqa: ANN001
    return {"X-API-Key": app_hub.keys[f"wf-{org}"]}


async def test_redetention_elsewhere_opens_a_transfer_the_incoming_council_must_answer(workflow_hub):
    http = workflow_hub.http
    listed = (await http.get("/v1/transfers", headers=h(workflow_hub, WORCS))).json()["items"]
    assert len(listed) == 1
    t = listed[0]
    assert (t["outgoing"], t["incoming"], t["state"], t["role"]) == (BUCKS, WORCS, "awaiting-acknowledgement", "council")
    assert t["clock"]["owner"] == WORCS and "Worcs 4.3.3" in t["basis"]
    # The outgoing council sees it too; the ICB (not a party) does not, and gets 404 for the id.
    assert len((await http.get("/v1/transfers", headers=h(workflow_hub, BUCKS))).json()["items"]) == 1
    assert (await http.get("/v1/transfers", headers=h(workflow_hub, "QU9"))).json()["items"] == []
    r = await http.post(f"/v1/transfers/{t['case_id']}/accept", headers=h(workflow_hub, "QU9"))
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert (await http.get(f"/v1/transfers/{t['case_id']}", headers=h(workflow_hub, "QU9"))).status_code == 404
    # The outgoing body cannot accept for the incoming one.
    r = await http.post(f"/v1/transfers/{t['case_id']}/accept", headers=h(workflow_hub, BUCKS))
    assert r.status_code == 403 and r.json()["rule"] == "incoming-only"
    r = await http.post(f"/v1/transfers/{t['case_id']}/accept", headers=h(workflow_hub, WORCS))
    assert r.status_code == 200 and r.json()["state"] == "accepted"
    r = await http.post(f"/v1/transfers/{t['case_id']}/accept", headers=h(workflow_hub, WORCS))
    assert r.status_code == 409 and r.json()["rule"] == "already-accepted" and "Worcs 17.2" in r.json()["citation"]
    r = await http.get("/v1/transfers?org=E10000034", headers=h(workflow_hub, BUCKS))
    assert r.status_code == 403


async def test_contest_escalate_on_the_clock_resolve_and_reimburse(workflow_hub):
    http, hub = workflow_hub.http, workflow_hub.hub
    t = (await http.get("/v1/transfers", headers=h(workflow_hub, WORCS))).json()["items"][0]
    r = await http.post(f"/v1/transfers/{t['case_id']}/contest", headers=h(workflow_hub, WORCS), json={"reason": ""})
    assert r.status_code == 422
    r = await http.post(f"/v1/transfers/{t['case_id']}/contest", headers=h(workflow_hub, WORCS),
                        json={"reason": "not ordinarily resident in Worcestershire before the detention"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "contested" and r.json()["register_change"]["status"] == "accepted"
    await drain(workflow_hub)
    disputes = (await http.get("/v1/disputes", headers=h(workflow_hub, BUCKS))).json()["items"]
    assert len(disputes) == 1
    d = disputes[0]
    assert d["state"] == "open" and d["transfer_case_id"] == t["case_id"]
    # A dispute between councils follows the 2014 Disputes Regulations (Worcs 4.3.4, 15.4), not Bucks'
    # NHS procedure (JMG -> ICET, as this test asserted before): local resolution led by the lead
    # authority, Bucks, which meets the needs meanwhile (Worcs 4.3.4).
    assert d["clock"]["owner"] == BUCKS and d["interims"][-1]["lead_body"] == BUCKS
    assert d["stages"][0]["name"].startswith("local resolution between the councils")

    # While the dispute is open, a discharge that would end funding is held (Worcs 8.5). A discharge is
    # joint: the responsible council's own decision awaits the NHS side's (accepted, ends nothing), and
    # the care trust's, acting for the NHS commissioner, would end entitlement: that one is held.
    discharge = {"source_system": "RiO", "source_message_id": "wf-discharge", "change_type": "s117-discharge-decided",
                 "effective_date": (START + timedelta(days=260)).isoformat(), "person": workflow_hub.person,
                 "discharge": {"council_agrees": True, "commissioner_agrees": True,
                               "reasons": ["no-longer-needs-services"], "participants": ["RC", "AMHP"],
                               "person_involved": True}}
    council = (await http.get(f"/v1/persons/{workflow_hub.person_id}/s117",
                              headers={"X-API-Key": workflow_hub.keys["admin"]})).json()["council_basis_code"]
    council_key = (await add_client(hub.engine, council, council, "council", ["register:write"]))[1]
    r = await http.post("/v1/register-changes", headers={"X-API-Key": council_key},
                        json={**discharge, "source_message_id": "wf-discharge-council"})
    assert r.status_code == 202, r.text
    r = await http.post("/v1/register-changes", headers={"X-API-Key": workflow_hub.keys["trust"]}, json=discharge)
    assert r.status_code == 409 and r.json()["rule"] == "held-open-dispute" and "Worcs 8.5" in r.json()["detail"]
    async with hub.engine.connect() as conn:
        held = (await conn.execute(select(quarantine.c.status).where(
            quarantine.c.quarantine_id == r.json()["quarantine_id"]))).scalar_one()
    assert held == "held"

    # Time is injected: the day after local resolution's clock ran out (85 working days, the hub's
    # default); one scan escalates once, to the Secretary of State (was: 35 days, JMG -> ICET).
    due = date.fromisoformat(d["clock"]["due_on"])
    hub.workflows.clock.offset_days = (due - hub.workflows.clock.today()).days + 1
    first = await hub.workflows.scan()
    second = await hub.workflows.scan()
    assert first["breaches"] >= 1 and second["breaches"] == 0
    d = (await http.get(f"/v1/disputes/{d['case_id']}", headers=h(workflow_hub, WORCS))).json()
    assert d["state"] == "escalated" and d["clock"]["owner"] == "Secretary of State"
    assert [s["outcome"] for s in d["stage_history"]] == ["escalated", None]
    r = await http.post(f"/v1/disputes/{d['case_id']}/escalate", headers=h(workflow_hub, WORCS))
    assert r.status_code == 409 and r.json()["rule"] == "no-further-stage"

    r = await http.post(f"/v1/disputes/{d['case_id']}/resolve", headers=h(workflow_hub, "QU9"),
                        json={"responsible": WORCS, "responsible_from": "2025-07-25"})
    assert r.status_code == 404  # not a party
    redetained = (START + timedelta(days=200)).isoformat()
    outcome = {"responsible": WORCS, "responsible_from": redetained}
    # Bucks proposes; alone that resolves nothing (Worcs 15.5): Worcestershire's same terms do.
    r = await http.post(f"/v1/disputes/{d['case_id']}/resolve", headers=h(workflow_hub, BUCKS), json=outcome)
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "escalated" and r.json()["resolution"]["awaiting"] == [WORCS]
    r = await http.post(f"/v1/disputes/{d['case_id']}/resolve", headers=h(workflow_hub, WORCS), json=outcome)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "resolved" and body["register_change"]["status"] == "accepted"
    statement = body["reimbursement"]
    assert statement["payer"] == WORCS and statement["payees"] == [BUCKS]
    assert statement["lines"][0]["share_bp"] == 10_000 and statement["lines"][0]["amount_pence"] is None
    await drain(workflow_hub)
    position = (await http.get(f"/v1/persons/{workflow_hub.person_id}/s117",
                               headers={"X-API-Key": workflow_hub.keys["trust"]})).json()
    assert position["open_disputes"] == [] and position["responsible_council"]["org"]["code"] == WORCS
    assert "resolved" in position["responsible_council"]["explanation"]

    # Every transition is in the append-only history with a citation.
    async with hub.engine.connect() as conn:
        steps = (await conn.execute(select(workflow_transitions.c.action, workflow_transitions.c.citation))).all()
        payloads = (await conn.execute(select(delivery_messages.c.payload, deliveries.c.event_type)
                                       .select_from(deliveries_with_messages))).all()
    assert {s.action for s in steps} >= {"open", "contest", "raise", "escalate", "agree-resolution", "resolve"}
    assert all(s.citation for s in steps)
    tasks = 0
    for p in payloads:
        if p.event_type in ("s117-transfer-updated", "s117-dispute-updated", "s117-workflow-deadline"):
            bundle = orjson.loads(hub.protector.decrypt(p.payload))
            validate_message(bundle)
            for entry in bundle["entry"]:
                if entry["resource"]["resourceType"] == "Task":
                    from fhir.resources.R4B.task import Task

                    Task.model_validate(entry["resource"])
                    tasks += 1
    assert tasks >= 4


async def test_disputes_recorded_on_the_register_open_and_close_cases_once(workflow_hub):
    http, hub = workflow_hub.http, workflow_hub.hub
    base = {"source_system": "Mosaic", "person": {"nhs_number": workflow_hub.person["nhs_number"]}}
    raised = {**base, "source_message_id": "reg-d-1", "change_type": "dispute-raised",
              "effective_date": "2025-09-01",
              "dispute": {"dispute_id": "REG-77", "kind": "commissioner", "parties": ["QU9", "QGH"]}}
    r = await http.post("/v1/register-changes", headers={"X-API-Key": workflow_hub.keys["trust"]}, json=raised)
    assert r.status_code == 202, r.text
    await drain(workflow_hub)
    items = (await http.get("/v1/disputes", headers=h(workflow_hub, "QU9"))).json()["items"]
    assert len(items) == 1 and items[0]["dispute_id"] == "REG-77" and items[0]["raised_by"] == "hub:register"
    # Commissioners fund jointly until they agree (Worcs 4.4.8); the default procedure's first stage.
    assert {s for _, s in items[0]["interims"][-1]["shares"]} == {5000}
    assert items[0]["clock"]["owner"] == "QU9"  # the lead body convenes local resolution at director level

    # Replaying the whole log through the workflows' group opens nothing twice.
    await hub.bus.rewind("workflows", "s117.events", 0)
    await drain(workflow_hub)
    assert len((await http.get("/v1/disputes", headers=h(workflow_hub, "QU9"))).json()["items"]) == 1
    assert len((await http.get("/v1/transfers", headers=h(workflow_hub, WORCS))).json()["items"]) == 1

    resolved = {**base, "source_message_id": "reg-d-2", "change_type": "dispute-resolved",
                "effective_date": "2025-10-01",
                "dispute": {"dispute_id": "REG-77", "kind": "commissioner", "parties": ["QU9", "QGH"],
                            "resolved_responsible": "QU9"}}
    # A register-recorded outcome stands once every party has recorded it: the first leaves the case open.
    for party in ("QU9", "QGH"):
        key = (await add_client(hub.engine, party, party, "icb", ["register:write"]))[1]
        r = await http.post("/v1/register-changes", headers={"X-API-Key": key},
                            json={**resolved, "source_message_id": f"reg-d-2-{party}"})
        assert r.status_code == 202, r.text
        await drain(workflow_hub)
        case = (await http.get(f"/v1/disputes/{items[0]['case_id']}", headers=h(workflow_hub, "QU9"))).json()
        if party == "QU9":
            assert case["state"] == "open"
    assert case["state"] == "resolved" and case["history"][-1]["actor"] == "hub:register"
    assert case["reimbursement"]["payer"] == "QU9"


async def test_raising_a_dispute_needs_a_party_and_a_known_person(workflow_hub):
    http = workflow_hub.http
    body = {"person_id": workflow_hub.person_id, "kind": "council", "parties": [WORCS, "E09000015"],
            "reason": "residence"}
    r = await http.post("/v1/disputes", headers=h(workflow_hub, BUCKS), json=body)
    assert r.status_code == 403 and r.json()["rule"] == "not-a-party"
    r = await http.post("/v1/disputes", headers=h(workflow_hub, WORCS), json={**body, "person_id": "nobody"})
    assert r.status_code == 404
    # An organisation with no part in the person's aftercare gets the same 404 as for an unknown person.
    harrow = (await add_client(workflow_hub.hub.engine, "Harrow", "E09000015", "council",
                               ["s117:read", "workflows:write"]))[1]
    r = await http.post("/v1/disputes", headers={"X-API-Key": harrow}, json=body)
    assert r.status_code == 404
    r = await http.post("/v1/disputes", headers=h(workflow_hub, WORCS), json={**body, "parties": [WORCS, "bad"]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith("parties")
    r = await http.post("/v1/disputes", headers=h(workflow_hub, WORCS), json=body)
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "open" and r.json()["register_change"]["status"] == "accepted"
    case_id = r.json()["case_id"]
    # Interim terms: a proposal, then the same terms from the other party.
    terms = {"lead_body": WORCS, "shares": {WORCS: "100", "E09000015": "0"}}
    r = await http.post(f"/v1/disputes/{case_id}/interim", headers=h(workflow_hub, WORCS), json=terms)
    assert r.status_code == 200 and r.json()["proposal"]["lead_body"] == WORCS
    r = await http.post(f"/v1/disputes/{case_id}/interim", headers=h(workflow_hub, WORCS),
                        json={**terms, "shares": {WORCS: "60.5", "E09000015": "39.495"}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "shares.E09000015"
    r = await http.post(f"/v1/disputes/{case_id}/resolve",
                        headers=h(workflow_hub, WORCS), json={"responsible": BUCKS, "responsible_from": "2025-08-01"})
    assert r.status_code == 422 and r.json()["rule"] == "responsible-not-a-party"


async def test_fhir_task_read_and_updated_by_put_and_patch(workflow_hub):
    from fhir.resources.R4B.task import Task

    http = workflow_hub.http
    t = (await http.get("/v1/transfers", headers=h(workflow_hub, WORCS))).json()["items"][0]
    url = f"/v1/fhir/Task/{t['fhir_task_id']}"
    r = await http.get(url, headers=h(workflow_hub, WORCS))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    task = r.json()
    Task.model_validate(task)
    assert task["status"] == "requested" and task["owner"]["identifier"]["value"] == WORCS
    assert task["restriction"]["period"]["end"] == t["clock"]["due_on"]
    r = await http.get(url, headers=h(workflow_hub, "QU9"))
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"

    patch = [{"op": "replace", "path": "/status", "value": "rejected"}]
    r = await http.patch(url, headers=h(workflow_hub, BUCKS), json=patch)
    assert r.status_code == 403 and "incoming-only" in r.json()["issue"][0]["diagnostics"]
    r = await http.patch(url, headers=h(workflow_hub, WORCS), json=patch)
    assert r.status_code == 422 and "reason-required" in r.json()["issue"][0]["diagnostics"]
    r = await http.patch(url, headers=h(workflow_hub, WORCS), json=[{"op": "remove", "path": "/owner"}])
    assert r.status_code == 422
    r = await http.put(url, headers=h(workflow_hub, WORCS), json={**task, "status": "completed"})
    assert r.status_code == 422 and r.json()["issue"][0]["expression"] == ["Task.status"]
    r = await http.put(url, headers=h(workflow_hub, WORCS), json={**task, "status": "accepted"})
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    Task.model_validate(r.json())
    r = await http.patch(url, headers=h(workflow_hub, WORCS),
                         json=[*patch, {"op": "add", "path": "/statusReason", "value": {"text": "changed our mind"}}])
    assert r.status_code == 409 and "already-accepted" in r.json()["issue"][0]["diagnostics"]
    assert (await http.get("/v1/transfers?state=accepted", headers=h(workflow_hub, BUCKS))).json()["items"]


async def test_outgoing_body_stays_on_the_distribution_until_the_transfer_is_accepted(workflow_hub):
    http, hub = workflow_hub.http, workflow_hub.hub

    async def bucks_gets_next_change(message_id: str, on: str) -> bool:
        change = {"source_system": "RiO", "source_message_id": message_id, "change_type": "review-requested",
                  "effective_date": on, "person": {"nhs_number": workflow_hub.person["nhs_number"]}}
        r = await http.post("/v1/register-changes", headers={"X-API-Key": workflow_hub.keys["trust"]}, json=change)
        assert r.status_code == 202, r.text
        await drain(workflow_hub)
        event_ids = {e["event_id"] for e in r.json()["events"]}
        async with hub.engine.connect() as conn:
            rows = (await conn.execute(select(deliveries.c.event_id, deliveries.c.subscription_id))).all()
            subs = (await conn.execute(select(subscriptions.c.subscription_id)
                                       .where(subscriptions.c.org_code == BUCKS))).scalars().all()
        return any(r.event_id in event_ids and r.subscription_id in subs for r in rows)

    # The position shows the transfer to its two bodies (here the incoming council), not to the trust.
    position = (await http.get(f"/v1/persons/{workflow_hub.person_id}/s117",
                               headers=h(workflow_hub, WORCS))).json()
    [pending] = position["transfers"]
    assert pending["state"] == "awaiting-acknowledgement" and "transfer pending" in pending["text"]
    assert BUCKS in pending["text"] and WORCS in pending["text"]
    assert await bucks_gets_next_change("dist-1", "2025-08-01")  # not responsible, still told

    r = await http.post(f"/v1/transfers/{pending['case_id']}/accept", headers=h(workflow_hub, WORCS))
    assert r.status_code == 200
    assert not await bucks_gets_next_change("dist-2", "2025-08-02")
    position = (await http.get(f"/v1/persons/{workflow_hub.person_id}/s117",
                               headers=h(workflow_hub, WORCS))).json()
    assert position["transfers"][0]["text"].startswith(f"transfer accepted by {WORCS} on ")
    trust_view = (await http.get(f"/v1/persons/{workflow_hub.person_id}/s117",
                                 headers={"X-API-Key": workflow_hub.keys["trust"]})).json()
    assert trust_view["transfers"] == []  # not a party to the transfer


async def test_a_contest_reason_is_encrypted_at_rest_and_kept_out_of_the_event_log(workflow_hub):
    http, hub = workflow_hub.http, workflow_hub.hub
    t = (await http.get("/v1/transfers", headers=h(workflow_hub, WORCS))).json()["items"][0]
    reason = "Dr Example says the person lived at 1 Sample Street"
    r = await http.post(f"/v1/transfers/{t['case_id']}/contest", headers=h(workflow_hub, WORCS), json={"reason": reason})
    assert r.status_code == 200 and r.json()["reason"] == reason  # the parties read it
    from hub.store.schema import bus_messages, workflow_cases

    async with hub.engine.connect() as conn:
        stored = [orjson.dumps(row.data).decode() for row in (await conn.execute(select(workflow_cases.c.data))).all()]
        logged = [orjson.dumps(row.payload).decode() for row in (await conn.execute(select(bus_messages.c.payload))).all()]
    assert stored and not any("Sample Street" in text for text in stored + logged)
    listed = (await http.get("/v1/disputes", headers=h(workflow_hub, BUCKS))).json()["items"]
    assert listed[0]["reason"] == reason


async def test_a_case_read_is_recorded_allowed_or_refused_as_a_persons_read_is(workflow_hub):
    """The README's audit: every read decision. A transfer's view names the
    person and both bodies; a party's read and a non-party's refusal are in
    access_decisions (channel `case`), with the case's person, nothing else personal."""
    from sqlalchemy import select

    from hub.store.schema import access_decisions

    http = workflow_hub.http
    t = (await http.get("/v1/transfers", headers=h(workflow_hub, WORCS))).json()["items"][0]
    assert (await http.get(f"/v1/transfers/{t['case_id']}", headers=h(workflow_hub, WORCS))).status_code == 200
    assert (await http.get(f"/v1/transfers/{t['case_id']}", headers=h(workflow_hub, "QU9"))).status_code == 404
    async with workflow_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(access_decisions).where(access_decisions.c.channel == "case",
                                                                  access_decisions.c.action == "read"))).all()
    assert {(r.org_code, r.decision, r.rule, r.change_type, r.person_id) for r in rows} == {
        (WORCS, "allowed", "allowed", "transfer", workflow_hub.person_id),
        ("QU9", "denied", "no-relationship", "transfer", workflow_hub.person_id)}
