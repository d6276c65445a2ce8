"""Children in hospital, end to end (hub/children.py): a trust's detentions of two children over real
HTTP to `s117hub serve`; the child notice scanner in the hub's own loop; real webhook receivers.

The council responsible for the child (Children Act 1989 s85) and the council maintaining the EHC plan
(Worcs 6.4) each receive their notice as a signed FHIR message, once; a council whose agreement in force
does not list the notices (Worcestershire) and the ICB (every event type granted: the notices are for the
council named only) receive none. Nothing personal in the hub's logs."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from sqlalchemy import select

from hub.clients import add_client
from hub.domain.dates import england_day
from hub.fhir.validate import validate_message
from hub.mllp import Frame, MllpFramer, frame
from hub.store.db import create_engine
from hub.store.schema import disclosures
from tests.e2e.conftest import SECRET, make_clients, subscribe_webhook
from tests.support import HubProcess, Receiver, assert_nothing_personal, free_port

pytestmark = pytest.mark.e2e

HL7_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7v2"

BUCKS, OXON, WORCS, ICB = "E06000060", "E10000025", "E10000034", "QU9"
NOTICES = ("s117-child-long-stay-notice", "s117-child-ehc-plan-notice")
LEFT, WITHDRAWN = "s117-child-left-hospital-notice", "s117-child-notice-withdrawn"
CORRECTED = "s117-child-notice-corrected"
SHARING = {"version": 1, "agreements": [
    {"id": "DSA-TEST-CHILDREN", "valid_from": "2020-01-01", "recipients": [
        {"org_code": BUCKS, "events": ["s117-register-change-recorded", "s117-child-long-stay-notice", LEFT],
         "field_groups": ["identity", "demographics", "address", "legal-status", "responsibility", "explanations"]},
        # The EHC plan council: the EHC notice only, and no name or date of birth.
        {"org_code": OXON, "events": ["s117-child-ehc-plan-notice"], "field_groups": ["identity", "legal-status"]},
        {"org_code": ICB, "events": ["*"], "field_groups": ["identity", "legal-status", "responsibility"]},
        # An agreement in force, without the notices.
        {"org_code": WORCS, "events": ["s117-moved-out-of-area"], "field_groups": ["identity", "legal-status"]},
    ]}]}


def code(body: bytes) -> str:
    return orjson.loads(body)["entry"][0]["resource"]["eventCoding"]["code"]


def child(run: str, nhs: str, admitted_days_ago: int, council: str, **fields: object) -> dict:
    today = england_day()
    return {"source_system": "RiO", "source_message_id": run, "change_type": "detained",
            "effective_date": (today - timedelta(days=admitted_days_ago)).isoformat(), "legal_status_code": "03",
            "hospital_ods": "RNU", "gp_practice_ods": "K82001", "residence_la_gss": council,
            "person": {"nhs_number": nhs, "given_name": "Robin", "family_name": "Childtest",
                       "birth_date": today.replace(year=today.year - 15).isoformat(), "postcode": "OX4 4XN"},
            **fields}


async def _started(tmp_path: Path, agreements: dict | None = None, **env: str) -> tuple[HubProcess, Receiver,
                                                                                        dict[str, str]]:
    """A hub process under SHARING (or `agreements`; child notices scanned every 0.3 s unless `env` says
    otherwise), a signing receiver, and the keys of the usual clients and of Oxfordshire (a council of its
    own here: the EHC plan's)."""
    sharing = tmp_path / "sharing.yaml"
    sharing.write_text(yaml.safe_dump(agreements or SHARING))
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing, **{"S117_CHILD_NOTICE_SCAN_INTERVAL_SECONDS": "0.3", **env})
    keys = await make_clients(hub.db_url)
    engine = create_engine(hub.db_url)
    keys[OXON] = (await add_client(engine, "Oxon", OXON, "council", ["subscriptions:write", "s117:read"]))[1]
    await engine.dispose()
    await hub.start()
    return hub, receiver, keys


async def test_the_childs_council_and_the_ehc_plan_council_receive_their_notices_and_no_one_else(tmp_path: Path):
    hub, receiver, keys = await _started(tmp_path)
    first = child("kid-1", "9434765919", 3, BUCKS, expected_stay_weeks=20, ehc_plan_la_gss=OXON)
    # 90 days in hospital, living in Worcestershire, which also maintains the EHC plan: owed both notices,
    # its agreement lists neither.
    second = child("kid-2", "9434765870", 90, WORCS, ehc_plan_la_gss=WORCS)
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            for org in (BUCKS, OXON, ICB, WORCS):
                await subscribe_webhook(http, keys, receiver, org=org)
            people = []
            for change in (first, second):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
                assert r.status_code == 202, r.text
                people.append(r.json()["person_id"])

            def notices(org: str) -> list[bytes]:
                return [r.body for r in receiver.received if r.org == org and code(r.body) in NOTICES]

            await receiver.wait_for(lambda: notices(BUCKS) and notices(OXON))
            # The second child's notices decided (denied: audited) before asserting Worcestershire got nothing.
            engine = create_engine(hub.db_url)
            try:
                for _ in range(100):
                    async with engine.connect() as conn:
                        denied = (await conn.execute(select(disclosures.c.event_type).where(
                            disclosures.c.person_id == people[1], disclosures.c.recipient_org == WORCS,
                            disclosures.c.decision == "denied", disclosures.c.event_type.in_(NOTICES)))).scalars().all()
                    if len(denied) == 2:
                        break
                    await asyncio.sleep(0.1)
            finally:
                await engine.dispose()
            assert sorted(denied) == sorted(NOTICES)
            await asyncio.sleep(1.0)  # a few more scans: nothing is sent twice, nothing to anyone else

            assert all(r.signature_ok for r in receiver.received)
            assert [code(b) for b in notices(BUCKS)] == ["s117-child-long-stay-notice"]
            assert [code(b) for b in notices(OXON)] == ["s117-child-ehc-plan-notice"]
            assert notices(WORCS) == [] and notices(ICB) == []
            # Oxfordshire has no other role for the child: it is sent nothing else about them.
            assert {r.org for r in receiver.received if r.org == OXON and code(r.body) not in NOTICES} == set()

            bucks = orjson.loads(notices(BUCKS)[0])
            validate_message(bucks)
            resources = {e["resource"]["resourceType"]: e["resource"] for e in bucks["entry"]}
            assert resources["MessageHeader"]["destination"][0]["receiver"]["identifier"]["value"] == BUCKS
            assert resources["Patient"]["birthDate"] == first["person"]["birth_date"]
            assert resources["Encounter"]["period"]["start"] == first["effective_date"]
            assert "address" not in resources["Patient"] and "Parameters" not in resources
            # The child's fields as they came in, on the Encounter (Bucks is granted legal-status).
            child_fields = {x["url"].rsplit("/", 1)[1]: x for x in resources["Encounter"]["extension"]}
            assert child_fields["Extension-S117-ExpectedStayWeeks"]["valuePositiveInt"] == 20
            assert child_fields["Extension-S117-EhcPlanCouncil"]["valueIdentifier"] == {
                "system": "http://statistics.data.gov.uk/id/statistical-geography", "value": OXON}

            oxon = orjson.loads(notices(OXON)[0])
            validate_message(oxon)
            resources = {e["resource"]["resourceType"]: e["resource"] for e in oxon["entry"]}
            assert {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"} in [
                {"system": i["system"], "value": i["value"]} for i in resources["Patient"]["identifier"]]
            assert "birthDate" not in resources["Patient"] and "name" not in resources["Patient"]  # not granted
            assert resources["Encounter"]["serviceProvider"]["identifier"]["value"] == "RNU"
            ext = next(e for e in resources["MessageHeader"]["extension"]
                       if e["url"].endswith("/Extension-S117-ChildNotice"))
            assert {"url": "reason", "valueCode": "ehc-plan-admission"} in ext["extension"]
            assert {"url": "basis", "valueCode": "ehc-plan"} in ext["extension"]
    finally:
        hub.stop()
        await receiver.stop()

    logs = hub.logs()
    assert "child notice decided" in logs
    assert_nothing_personal(logs, "9434765919", "9434765870", "Childtest", first["person"]["birth_date"], "OX4 4XN")


def _parts(body: bytes) -> dict[str, object]:
    header = orjson.loads(body)["entry"][0]["resource"]
    ext = next(e for e in header["extension"] if e["url"].endswith("/Extension-S117-ChildNotice"))
    return {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in ext["extension"]}


async def test_a_discharge_tells_the_childs_council_the_stay_ended_and_retractions_withdraw_what_went(
        tmp_path: Path):
    """After the notices: the child leaves hospital, and only the council told the s85 notice (Bucks) is
    told the stay ended (s85(4)), not the EHC plan's council nor the ICB; the discharge is then retracted
    (the child is in hospital: Bucks told the leaving notice is withdrawn, the stay continues), and then
    the detention (each council told a notice is sent its withdrawal once, though Oxfordshire's agreement
    lists the EHC notice only: a rectification, UK GDPR Art. 19). Real HTTP, real receivers."""
    hub, receiver, keys = await _started(tmp_path)
    admission = child("kid-1", "9434765919", 10, BUCKS, expected_stay_weeks=20, ehc_plan_la_gss=OXON)
    today = england_day()
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            for org in (BUCKS, OXON, ICB, WORCS):
                await subscribe_webhook(http, keys, receiver, org=org)

            async def record(change: dict) -> str:
                r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
                assert r.status_code == 202, r.text
                return r.json()["change_id"]

            async def retract(change_id: str) -> None:
                r = await http.post(f"/v1/register-changes/{change_id}/retraction",
                                    headers={"X-API-Key": keys["trust"]}, json={"reason": "recorded in error"})
                assert r.status_code in (200, 202), r.text

            def told(org: str, *types: str) -> list[bytes]:
                return [r.body for r in receiver.received if r.org == org and code(r.body) in types]

            def event_id(org: str, event_type: str) -> str:
                return next(r.headers["s117-event-id"] for r in receiver.received
                            if r.org == org and code(r.body) == event_type)

            detention = await record(admission)
            await receiver.wait_for(lambda: told(BUCKS, *NOTICES) and told(OXON, *NOTICES))
            left_on = today - timedelta(days=1)
            discharge = await record({
                "source_system": "RiO", "source_message_id": "kid-1-left", "change_type": "left-hospital",
                "effective_date": left_on.isoformat(), "hospital_ods": "RNU",
                "person": {"nhs_number": "9434765919"}})
            await receiver.wait_for(lambda: told(BUCKS, LEFT))
            [leaving] = told(BUCKS, LEFT)
            validate_message(orjson.loads(leaving))
            assert _parts(leaving)["reason"] == "stay-ended"
            encounter = next(e["resource"] for e in orjson.loads(leaving)["entry"]
                             if e["resource"]["resourceType"] == "Encounter")
            assert encounter["period"] == {"start": admission["effective_date"], "end": left_on.isoformat()}

            await retract(discharge)
            await receiver.wait_for(lambda: told(BUCKS, WITHDRAWN))
            [continues] = told(BUCKS, WITHDRAWN)
            validate_message(orjson.loads(continues))
            assert _parts(continues)["reason"] == "stay-continues"
            assert _parts(continues)["supersedes"] == event_id(BUCKS, LEFT)

            await retract(detention)
            await receiver.wait_for(lambda: len(told(BUCKS, WITHDRAWN)) == 2 and told(OXON, WITHDRAWN))
            await asyncio.sleep(1.0)  # a few more scans: nothing is sent twice, nothing to anyone else

            assert all(r.signature_ok for r in receiver.received)
            in_error = [_parts(b) for b in told(BUCKS, WITHDRAWN)[1:]] + [_parts(b) for b in told(OXON, WITHDRAWN)]
            assert [(p["reason"], p["supersedes"]) for p in in_error] == [
                ("admission-recorded-in-error", event_id(BUCKS, NOTICES[0])),
                ("admission-recorded-in-error", event_id(OXON, NOTICES[1]))]
            for body in told(BUCKS, WITHDRAWN) + told(OXON, WITHDRAWN):
                validate_message(orjson.loads(body))
            assert [code(b) for b in told(BUCKS, *NOTICES, LEFT, WITHDRAWN)] == [NOTICES[0], LEFT, WITHDRAWN,
                                                                                   WITHDRAWN]
            assert [code(b) for b in told(OXON, *NOTICES, LEFT, WITHDRAWN)] == [NOTICES[1], WITHDRAWN]
            assert told(ICB, *NOTICES, LEFT, WITHDRAWN) == [] and told(WORCS, *NOTICES, LEFT, WITHDRAWN) == []
    finally:
        hub.stop()
        await receiver.stop()

    logs = hub.logs()
    assert_nothing_personal(logs, "9434765919", "Childtest", admission["person"]["birth_date"], "OX4 4XN")


async def test_an_earlier_detention_of_the_same_stay_arriving_late_brings_one_correction_not_a_second_notice(
        tmp_path: Path):
    """The s3 detention (expected 20 weeks, an EHC plan with Oxfordshire) is sent first and both notices go;
    the s2 detention that began the same stay 100 days ago comes late over real HTTP. Each council keeps its
    one notice of the stay and is sent one correction (though Oxfordshire's agreement lists the EHC notice
    only: a rectification, UK GDPR Art. 19), the Encounter starting on the earlier date, naming the notice
    it replaces. Nothing to the ICB or Worcestershire; nothing personal in the logs."""
    hub, receiver, keys = await _started(tmp_path)
    today = england_day()
    later = child("kid-late-2", "9434765919", 10, BUCKS, expected_stay_weeks=20, ehc_plan_la_gss=OXON)
    earlier = child("kid-late-1", "9434765919", 100, BUCKS, legal_status_code="02")
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            for org in (BUCKS, OXON, ICB, WORCS):
                await subscribe_webhook(http, keys, receiver, org=org)

            def told(org: str, *types: str) -> list[bytes]:
                return [r.body for r in receiver.received if r.org == org and code(r.body) in types]

            r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=later)
            assert r.status_code == 202, r.text
            await receiver.wait_for(lambda: told(BUCKS, *NOTICES) and told(OXON, *NOTICES))
            r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=earlier)
            assert r.status_code == 202, r.text
            await receiver.wait_for(lambda: told(BUCKS, CORRECTED) and told(OXON, CORRECTED))
            await asyncio.sleep(1.0)  # a few more scans: nothing is sent twice

            assert all(r.signature_ok for r in receiver.received)
            every = (*NOTICES, LEFT, WITHDRAWN, CORRECTED)
            assert [code(b) for b in told(BUCKS, *every)] == [NOTICES[0], CORRECTED]
            assert [code(b) for b in told(OXON, *every)] == [NOTICES[1], CORRECTED]
            assert told(ICB, *every) == [] and told(WORCS, *every) == []
            for org in (BUCKS, OXON):
                notice, correction = told(org, *every)
                bundle = orjson.loads(correction)
                validate_message(bundle)
                parts = _parts(correction)
                assert parts["reason"] == "admission-corrected"
                assert parts["supersedes"] == next(r.headers["s117-event-id"] for r in receiver.received
                                                   if r.body == notice)
                encounter = next(e["resource"] for e in bundle["entry"]
                                 if e["resource"]["resourceType"] == "Encounter")
                assert encounter["period"] == {"start": (today - timedelta(days=100)).isoformat()}
    finally:
        hub.stop()
        await receiver.stop()
    logs = hub.logs()
    assert_nothing_personal(logs, "9434765919", "Childtest", later["person"]["birth_date"], "OX4 4XN")


async def test_after_a_merge_of_two_nhs_numbers_the_stay_is_not_notified_again_and_its_end_is_told_once(
        tmp_path: Path):
    """The s85 notice went under one NHS number; POST /v1/persons/merge (real HTTP) merges it into another the
    register holds. Bucks gets no second notice of the stay, and its end, recorded under the retained number,
    once."""
    hub, receiver, keys = await _started(tmp_path)
    today = england_day()
    gone = child("kid-m-1", "9434765919", 5, BUCKS, expected_stay_weeks=20)
    kept = child("kid-m-2", "9434765870", 400, BUCKS)
    kept["person"]["birth_date"] = gone["person"]["birth_date"]
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            await subscribe_webhook(http, keys, receiver, org=BUCKS)

            async def record(change: dict) -> None:
                r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
                assert r.status_code == 202, r.text

            def told(*types: str) -> list[bytes]:
                return [r.body for r in receiver.received if r.org == BUCKS and code(r.body) in types]

            await record(kept)
            await record({"source_system": "RiO", "source_message_id": "kid-m-2-left", "change_type": "left-hospital",
                          "effective_date": (today - timedelta(days=390)).isoformat(), "hospital_ods": "RNU",
                          "person": {"nhs_number": "9434765870"}})
            await record(gone)
            await receiver.wait_for(lambda: told(*NOTICES))
            r = await http.post("/v1/persons/merge", headers={"X-API-Key": keys["trust"]},
                                json={"retained_nhs_number": "9434765870", "superseded_nhs_number": "9434765919"})
            assert r.status_code == 200, r.text
            await asyncio.sleep(1.0)  # a few scans after the merge
            await record({"source_system": "RiO", "source_message_id": "kid-m-left", "change_type": "left-hospital",
                          "effective_date": today.isoformat(), "hospital_ods": "RNU",
                          "person": {"nhs_number": "9434765870"}})
            await receiver.wait_for(lambda: told(LEFT))
            await asyncio.sleep(1.0)
            assert [code(b) for b in told(*NOTICES, LEFT, WITHDRAWN, CORRECTED)] == [NOTICES[0], LEFT]
            leaving = orjson.loads(told(LEFT)[0])
            validate_message(leaving)
            patient = next(e["resource"] for e in leaving["entry"] if e["resource"]["resourceType"] == "Patient")
            assert "9434765870" in {i["value"] for i in patient["identifier"]}
    finally:
        hub.stop()
        await receiver.stop()
    logs = hub.logs()
    for value in ("9434765919", "9434765870", "Childtest"):
        assert value not in logs


# Both councils take the s85 notice, its leaving notice and the EHC notice.
SWAPPED = {"version": 1, "agreements": [{"id": "DSA-TEST-CHILDREN-2", "valid_from": "2020-01-01", "recipients": [
    {"org_code": org, "events": [*NOTICES, LEFT], "field_groups": ["identity", "demographics", "legal-status"]}
    for org in (BUCKS, OXON)]}]}


async def test_a_late_detention_naming_other_councils_withdraws_the_notices_of_those_told_and_tells_the_new_ones(
        tmp_path: Path):
    """The s3 detention (Bucks the council of ordinary residence, Oxfordshire the EHC plan's) is told; the s2
    that began the same stay 100 days ago comes late over real HTTP naming them the other way round. Each
    council is sent a withdrawal of the notice it had (another-council-concerned: nothing of the stay as it
    now stands, nor the other council), and the notice it is now owed; no correction. The stay ends: its
    leaving notice goes to Oxfordshire alone. Nothing personal in the hub's logs."""
    hub, receiver, keys = await _started(tmp_path, SWAPPED)
    today = england_day()
    later = child("kid-sw-2", "9434765919", 10, BUCKS, expected_stay_weeks=20, ehc_plan_la_gss=OXON)
    earlier = child("kid-sw-1", "9434765919", 100, OXON, legal_status_code="02", ehc_plan_la_gss=BUCKS)
    every = (*NOTICES, LEFT, WITHDRAWN, CORRECTED)
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            for org in (BUCKS, OXON):
                await subscribe_webhook(http, keys, receiver, org=org)

            def told(org: str, *types: str) -> list[bytes]:
                return [r.body for r in receiver.received if r.org == org and code(r.body) in types]

            def event_id(body: bytes) -> str:
                return next(r.headers["s117-event-id"] for r in receiver.received if r.body == body)

            for change in (later, earlier):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
                assert r.status_code == 202, r.text
                if change is later:
                    await receiver.wait_for(lambda: told(BUCKS, *NOTICES) and told(OXON, *NOTICES))
            await receiver.wait_for(lambda: len(told(BUCKS, *every)) == 3 and len(told(OXON, *every)) == 3)
            await asyncio.sleep(1.0)  # a few more scans: nothing is sent twice
            # Each: the notice it had, then its withdrawal and its new notice (decided in one scan, in either order).
            for org, had, now_owed in ((BUCKS, NOTICES[0], NOTICES[1]), (OXON, NOTICES[1], NOTICES[0])):
                assert code(told(org, *every)[0]) == had
                assert sorted(code(b) for b in told(org, *every)[1:]) == sorted([WITHDRAWN, now_owed])
            assert all(r.signature_ok for r in receiver.received)
            for org, other in ((BUCKS, OXON), (OXON, BUCKS)):
                notice = told(org, *every)[0]
                [withdrawal] = told(org, WITHDRAWN)
                [now] = told(org, *NOTICES)[1:]
                bundle = orjson.loads(withdrawal)
                validate_message(bundle)
                assert (_parts(withdrawal)["reason"], _parts(withdrawal)["supersedes"]) == (
                    "another-council-concerned", event_id(notice))
                assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {
                    "MessageHeader", "Patient", "EpisodeOfCare"}
                assert other not in withdrawal.decode() and earlier["effective_date"] not in withdrawal.decode()
                validate_message(orjson.loads(now))
                encounter = next(e["resource"] for e in orjson.loads(now)["entry"]
                                 if e["resource"]["resourceType"] == "Encounter")
                assert encounter["period"] == {"start": earlier["effective_date"]}
            r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json={
                "source_system": "RiO", "source_message_id": "kid-sw-left", "change_type": "left-hospital",
                "effective_date": today.isoformat(), "hospital_ods": "RNU", "person": {"nhs_number": "9434765919"}})
            assert r.status_code == 202, r.text
            await receiver.wait_for(lambda: told(OXON, LEFT))
            await asyncio.sleep(1.0)
            assert told(BUCKS, LEFT) == [] and len(told(OXON, LEFT)) == 1
    finally:
        hub.stop()
        await receiver.stop()
    logs = hub.logs()
    assert "child notice decided" in logs
    assert_nothing_personal(logs, "9434765919", "Robin", "Childtest", later["person"]["birth_date"], "OX4 4XN")


async def test_a_merge_reversed_after_the_notice_went_under_the_retained_number_brings_no_second_notice(
        tmp_path: Path):
    """A child's detention under one NHS number, merged into another (POST /v1/persons/merge) while the hub
    scans no children's notices; the hub restarted scanning: the s85 notice goes under the retained person.
    The merge is reversed (POST /v1/persons/merges/{id}/reversal, real HTTP): Bucks gets no second notice of
    the stay (it moved back to the superseded person), and its end, recorded under the superseded number,
    once, under that number. Nothing personal in the hub's logs."""
    hub, receiver, keys = await _started(tmp_path, S117_CHILD_NOTICE_SCAN_INTERVAL_SECONDS="0")
    today = england_day()
    gone = child("kid-u-1", "9434765919", 5, BUCKS, expected_stay_weeks=20)
    kept = child("kid-u-2", "9434765870", 400, BUCKS)
    kept["person"].update(given_name="Alex", birth_date=gone["person"]["birth_date"])
    every = (*NOTICES, LEFT, WITHDRAWN, CORRECTED)

    def told(*types: str) -> list[bytes]:
        return [r.body for r in receiver.received if r.org == BUCKS and code(r.body) in types]

    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            await subscribe_webhook(http, keys, receiver, org=BUCKS)
            for change in (kept, {"source_system": "RiO", "source_message_id": "kid-u-2-left",
                                  "change_type": "left-hospital", "hospital_ods": "RNU",
                                  "effective_date": (today - timedelta(days=390)).isoformat(),
                                  "person": {"nhs_number": "9434765870"}}, gone):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
                assert r.status_code == 202, r.text
            r = await http.post("/v1/persons/merge", headers={"X-API-Key": keys["trust"]},
                                json={"retained_nhs_number": "9434765870", "superseded_nhs_number": "9434765919"})
            assert r.status_code == 200, r.text
            merge_id = r.json()["merge_id"]
        hub.stop()
        assert told(*every) == []
        hub = HubProcess(tmp_path, sharing_path=tmp_path / "sharing.yaml",
                         S117_CHILD_NOTICE_SCAN_INTERVAL_SECONDS="0.3")  # the same store, now scanning
        await hub.start()
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            await receiver.wait_for(lambda: told(*NOTICES))
            [notice] = told(*every)
            patient = next(e["resource"] for e in orjson.loads(notice)["entry"]
                           if e["resource"]["resourceType"] == "Patient")
            assert "9434765870" in {i["value"] for i in patient["identifier"]}  # under the retained number
            r = await http.post(f"/v1/persons/merges/{merge_id}/reversal", headers={"X-API-Key": keys["trust"]},
                                json={"reason": "two patients, not one"})
            assert r.status_code == 200, r.text
            await asyncio.sleep(1.5)  # a few scans after the reversal: no second notice of the stay
            assert [code(b) for b in told(*every)] == [NOTICES[0]]
            r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json={
                "source_system": "RiO", "source_message_id": "kid-u-left", "change_type": "left-hospital",
                "effective_date": today.isoformat(), "hospital_ods": "RNU", "person": {"nhs_number": "9434765919"}})
            assert r.status_code == 202, r.text
            await receiver.wait_for(lambda: told(LEFT))
            await asyncio.sleep(1.0)
            assert [code(b) for b in told(*every)] == [NOTICES[0], LEFT]
            leaving = orjson.loads(told(LEFT)[0])
            validate_message(leaving)
            patient = next(e["resource"] for e in leaving["entry"] if e["resource"]["resourceType"] == "Patient")
            assert "9434765919" in {i["value"] for i in patient["identifier"]}  # their own number again
            assert all(r.signature_ok for r in receiver.received)
    finally:
        hub.stop()
        await receiver.stop()
    logs = hub.logs()
    assert "child notice decided" in logs and "nhs number merge reversed" in logs
    assert_nothing_personal(logs, "9434765919", "9434765870", "Childtest", "Robin", "Alex",
                            gone["person"]["birth_date"], "OX4 4XN", "two patients")


async def _send_mllp(port: int, message: str) -> str:
    """One HL7 v2 message over a real MLLP connection, as a trust's interface engine sends it: its ACK."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame(message))
        await writer.drain()
        framer = MllpFramer()
        while True:
            data = await asyncio.wait_for(reader.read(65536), 15)
            assert data, "the hub closed the connection"
            acks = [f.payload.decode() for f in framer.feed(data) if isinstance(f, Frame)]
            if acks:
                return acks[0]
    finally:
        writer.close()
        await writer.wait_closed()


async def test_an_hl7_admission_expected_to_last_90_days_brings_the_s85_notice_at_admission(tmp_path: Path):
    """A trust on HL7 v2 over MLLP (real TCP): an A01 detaining a 15-year-old three days ago with PV2-10 (estimated
    length of inpatient stay) 90 days, 12 whole weeks, and ZU5-9 naming Oxfordshire as the EHC plan's council.
    Bucks (ordinary residence, PID-11.9) is told at admission, not at 12 weeks; Oxfordshire gets the EHC notice."""
    mllp_port = free_port()
    hub, receiver, keys = await _started(tmp_path, S117_MLLP_PORT=str(mllp_port))
    today = england_day()
    admitted = (today - timedelta(days=3)).strftime("%Y%m%d")
    birth = today.replace(year=today.year - 15).strftime("%Y%m%d")
    a01 = (HL7_FIXTURES / "ADT_A01_s3_detained.hl7").read_bytes().decode()
    a01 = (a01.replace("RNU-A01-0001", "kid-hl7-1").replace("9990001006", "9434765919")
           .replace("20250106", admitted).replace("19800214", birth)
           .replace("\rZU1|", "\rPV2" + "|" * 10 + "90\rZU1|")
           .rstrip("\r") + f"|||{OXON}")  # ZU5, the last segment: ZU5-9
    assert a01.rsplit("\r", 1)[1].startswith("ZU5|")
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as http:
            for org in (BUCKS, OXON):
                await subscribe_webhook(http, keys, receiver, org=org)
            ack = await _send_mllp(mllp_port, a01)
            assert "\rMSA|AA|kid-hl7-1|" in ack, ack

            def told(org: str) -> list[bytes]:
                return [r.body for r in receiver.received if r.org == org and code(r.body) in NOTICES]

            await receiver.wait_for(lambda: told(BUCKS) and told(OXON))
            assert [code(b) for b in told(BUCKS)] == ["s117-child-long-stay-notice"]
            assert [code(b) for b in told(OXON)] == ["s117-child-ehc-plan-notice"]
            long_stay = _parts(told(BUCKS)[0])
            assert (long_stay["reason"], long_stay["basis"], long_stay["expectedStayWeeks"]) == (
                "expected-long-stay", "ordinary-residence", 12), long_stay
            validate_message(orjson.loads(told(BUCKS)[0]))
    finally:
        hub.stop()
        await receiver.stop()
    logs = hub.logs()
    assert "mllp listening" in logs
    for value in ("9434765919", "TESTPATIENT", birth):
        assert value not in logs
