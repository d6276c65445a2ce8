"""A trust's register change reaches a council's webhook as a signed FHIR
message, end to end over real HTTP: the hub served by uvicorn in its own
process, a real webhook receiver, the embedded SQLite store and log."""

from __future__ import annotations

import asyncio

import random
from datetime import date

import httpx
import orjson
import pytest

from hub.fhir.validate import validate_message
from hub.observability.logging import allowlist_redactor
from hub.sample_data import detention_to_move_scenario
from tests.e2e.conftest import SECRET, make_clients
from tests.support import HubProcess, Receiver, assert_nothing_personal

pytestmark = pytest.mark.e2e


def event_code(body: bytes) -> str:
    return orjson.loads(body)["entry"][0]["resource"]["eventCoding"]["code"]


def as_logged(event_id: str) -> str:
    """`event_id` as the hub's log redactor writes it (hub/observability/logging.py)."""
    return allowlist_redactor(None, "info", {"event_id": event_id})["event_id"]


async def test_trust_change_reaches_council_webhook_signed_and_filtered(tmp_path, sharing_file):
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            for org in ("E06000060", "QU9", "E10000034"):
                r = await http.post("/v1/subscriptions", headers={"X-API-Key": keys[org]},
                                    json={"url": receiver.url(org), "secret": SECRET})
                assert r.status_code == 201, r.text

            changes = detention_to_move_scenario(random.Random(1), "e2e-1", date(2025, 1, 6))
            responses = []
            for change in changes:
                r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
                assert r.status_code == 202, r.text
                responses.append(r.json())
            all_events = {e["event_id"]: e["event_type"] for resp in responses for e in resp["events"]}
            assert "s117-entitlement-started" in all_events.values()
            assert "s117-moved-out-of-area" in all_events.values()

            def bucks_codes() -> list[str]:
                return [event_code(r.body) for r in receiver.received if r.org == "E06000060"]

            await receiver.wait_for(lambda: "s117-entitlement-started" in bucks_codes()
                                    and any(r.org == "E10000034" for r in receiver.received))
            # Give any wrongly routed message time to arrive before asserting its absence.
            moved_id = next(k for k, v in all_events.items() if v == "s117-moved-out-of-area")
            await receiver.wait_for(lambda: moved_id in receiver.event_ids("E10000034"))

            assert all(r.signature_ok for r in receiver.received), "every delivery carries a valid HMAC signature"
            # The forbidden event type never reaches Buckinghamshire; the host council gets it.
            assert "s117-moved-out-of-area" not in bucks_codes()
            # Once (delivery is at least once: a redelivery under load repeats the event id, which the
            # receiver de-duplicates by; two event ids would be two messages for one fact).
            worcs = {r.headers["s117-event-id"]: event_code(r.body) for r in receiver.received if r.org == "E10000034"}
            assert list(worcs.values()) == ["s117-moved-out-of-area"], worcs

            started = next(r for r in receiver.received
                           if r.org == "E06000060" and event_code(r.body) == "s117-entitlement-started")
            # One correlation id follows the change from the trust's POST to the council's webhook.
            left_hospital = responses[2]
            assert started.headers["s117-event-id"] in {e["event_id"] for e in left_hospital["events"]}
            assert started.headers["x-correlation-id"] == left_hospital["correlation_id"]
            bundle = orjson.loads(started.body)
            validate_message(bundle)  # R4B shape + bindings the library does not check
            assert bundle["type"] == "message"
            text = started.body.decode()
            nhs = changes[0]["person"]["nhs_number"]
            assert nhs in text  # Bucks may see identity
            patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
            assert {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs} in [
                {"system": i["system"], "value": i["value"]} for i in patient["identifier"]]
            encounter = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter")
            assert "Extension-UKCore-LegalStatus" in orjson.dumps(encounter).decode()
            assert "03" in orjson.dumps(encounter).decode()

            # Worcestershire's agreement gives it responsibility only: no NHS number, no name.
            host = next(r for r in receiver.received if r.org == "E10000034")
            assert nhs not in host.body.decode()
            assert changes[0]["person"]["family_name"] not in host.body.decode()

            # The council can read its delivery log through the API.
            # (Outcomes are recorded once the subscription's batch is sent: poll briefly.)
            subs = (await http.get("/v1/subscriptions", headers={"X-API-Key": keys["E06000060"]})).json()["items"]
            for _ in range(100):
                log = (await http.get(f"/v1/subscriptions/{subs[0]['subscription_id']}/deliveries",
                                      headers={"X-API-Key": keys["E06000060"]})).json()["items"]
                if any(d["status"] == "delivered" and d["event_type"] == "s117-entitlement-started" for d in log):
                    break
                await asyncio.sleep(0.1)
            assert any(d["status"] == "delivered" and d["event_type"] == "s117-entitlement-started" for d in log)
    finally:
        hub.stop()
        await receiver.stop()

    # No NHS number (or any ten-digit run), name or date of birth in the hub's logs.
    logs = hub.logs()
    assert logs, "the hub logged nothing"
    person = changes[0]["person"]
    assert_nothing_personal(logs, person["nhs_number"], person["family_name"], person["birth_date"], person["postcode"])
    # ...and the change's correlation id is on its ingest, dispatch and delivery log lines (an
    # "event dispatched" line names each message of its batch, a "webhook delivered" line each
    # delivery it reports, in parallel lists).
    lines = [orjson.loads(line) for line in logs.splitlines() if line.startswith("{")]
    cid = left_hospital["correlation_id"]
    mine = {line["event"] for line in lines
            if line.get("correlation_id") == cid or cid in line.get("correlation_ids", ())}
    assert {"register change accepted", "event dispatched", "webhook delivered"} <= mine
    # Each delivery the line reports for it is one the council's receiver got, with its event id.
    logged = {d: e for line in lines if line["event"] == "webhook delivered"
              for d, e, c in zip(line["delivery_ids"], line["event_ids"], line["correlation_ids"], strict=True)
              if c == cid}
    # An event id is name-based (derived from the change: the same on a replay), so the redactor masks the
    # one in about 60 that holds a run of ten digits (README, "Nothing personal in logs"): compared as logged.
    got = {r.headers["s117-delivery-id"]: as_logged(r.headers["s117-event-id"]) for r in receiver.received
           if r.headers.get("x-correlation-id") == cid}
    assert started.headers["s117-delivery-id"] in logged
    assert logged.items() <= got.items()
    # One dispatch line a batch, each message's recipients counted (each one's decision is in
    # `disclosures`, and at DEBUG): the council was told of the entitlement, by the change's message.
    dispatched = [dict(zip(("event_id", "correlation_id", "event_type", "allowed", "queued"), row, strict=True))
                  for line in lines if line["event"] == "event dispatched"
                  for row in zip(line["event_ids"], line["correlation_ids"], line["event_types"], line["allowed"],
                                 line["queued"], strict=True)]
    started_lines = [d for d in dispatched if d["event_type"] == "s117-entitlement-started"]
    assert started_lines and all(d["allowed"] >= 1 and d["queued"] >= 1 for d in started_lines)
    assert as_logged(started.headers["s117-event-id"]) in {d["event_id"] for d in dispatched if d["correlation_id"] == cid}
    assert not any(line["event"] == "event queued for recipient" for line in lines)


async def test_bad_input_is_named_and_quarantined_never_a_500(tmp_path, sharing_file):
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    await hub.start()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            h = {"X-API-Key": keys["trust"]}
            bad = {"source_system": "RiO", "source_message_id": "bad-1", "change_type": "detained",
                   "effective_date": "2024-02-30", "legal_status_code": "11", "hospital_ods": "ZZZ99",
                   "gp_practice_ods": "Q99999", "residence_la_gss": "E99999999",
                   "person": {"nhs_number": "9990000010"}}
            r = await http.post("/v1/register-changes", headers=h, json=bad)
            assert r.status_code == 422
            assert r.headers["content-type"].startswith("application/problem+json")
            fields = {e["field"] for e in r.json()["errors"]}
            assert "effective_date" in fields  # 30 February
            bad["effective_date"] = "2024-02-28"
            r = await http.post("/v1/register-changes", headers=h, json=bad)
            problem = r.json()
            fields = {e["field"]: e["reason"] for e in problem["errors"]}
            assert set(fields) >= {"person.nhs_number", "legal_status_code", "hospital_ods",
                                   "gp_practice_ods", "residence_la_gss"}
            assert "modulus-11" in fields["person.nhs_number"]
            assert "9990000010" not in r.text  # the error never echoes the value

            r = await http.post("/v1/register-changes", headers=h, content=b"{not json")
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "(body)"

            listed = (await http.get("/v1/quarantine", headers=h)).json()["items"]
            assert len(listed) == 3
            one = (await http.get(f"/v1/quarantine/{problem['quarantine_id']}", headers=h)).json()
            assert '"bad-1"' in one["raw"]  # the raw input is kept for the source to correct

            # Unauthenticated, wrong key, wrong scope: problem details, not bare errors.
            assert (await http.post("/v1/register-changes", json=bad)).status_code == 401
            assert (await http.post("/v1/register-changes", headers={"X-API-Key": "nope"}, json=bad)).status_code == 401
            r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["E06000060"]}, json=bad)
            assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    finally:
        hub.stop()
