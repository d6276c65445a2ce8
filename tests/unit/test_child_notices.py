"""The children's notices through the hub in process (hub/children.py): a trust's detention of a child
reaches the council responsible for the child (Children Act 1989 s85) and the EHC plan council (Worcs 6.4)
as FHIR messages, once, carrying only what a notice may; deny by default; bad fields refused by name.

The sample agreements (contracts/data-sharing-agreements.yaml): Buckinghamshire has every event type
("*"), Worcestershire (host area) a list without the children's notices."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from hub.children import ChildNoticeScanner
from hub.domain.dates import england_day
from hub.fhir.validate import validate_message
from hub.sharing import SharingAgreements
from hub.store.schema import deliveries, disclosures

BUCKS = "E06000060"
WORCS = "E10000034"
TODAY = england_day()


def _years_ago(years: int, days: int = 0) -> str:
    return (TODAY.replace(year=TODAY.year - years) - timedelta(days=days)).isoformat()


def _detention(run: str, nhs: str, admitted: date, birth: str | None, **fields: Any) -> dict[str, Any]:
    person: dict[str, Any] = {"nhs_number": nhs, "given_name": "Sam", "family_name": "Example",
                              "postcode": "HP20 1UA"}
    if birth:
        person["birth_date"] = birth
    return {"source_system": "RiO", "source_message_id": f"{run}-1", "change_type": "detained",
            "effective_date": admitted.isoformat(), "legal_status_code": "02", "hospital_ods": "RNU",
            "gp_practice_ods": "K82001", "residence_la_gss": BUCKS, "person": person, **fields}


async def _post(app_hub, change: dict[str, Any]) -> dict[str, Any]:  # noqa: ANN001
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=change)
    assert r.status_code == 202, r.text
    return r.json()


def _scanner(app_hub) -> ChildNoticeScanner:  # noqa: ANN001
    hub = app_hub.hub
    return ChildNoticeScanner(hub.engine, hub.ref, hub.sharing, hub.protector, hub.settings.hub_endpoint,
                              hub.settings.namespaces())


async def _decisions(app_hub) -> list[tuple[str, str, str, str]]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(disclosures.c.person_id, disclosures.c.event_type,
                                          disclosures.c.recipient_org, disclosures.c.decision)
                                   .where(disclosures.c.event_type.like("s117-child-%")))).all()
    return sorted(tuple(r) for r in rows)


async def _feed(app_hub, org: str = BUCKS) -> list[dict[str, Any]]:  # noqa: ANN001
    h = {"X-API-Key": app_hub.keys[org]}
    subs = (await app_hub.http.get("/v1/subscriptions", headers=h)).json()["items"]
    sub = next(s["subscription_id"] for s in subs if s["channel"] == "feed")
    items = (await app_hub.http.get(f"/v1/feeds/{sub}?limit=100", headers=h)).json()["items"]
    return [i for i in items if i["event_type"].startswith("s117-child-")]


async def test_a_child_expected_to_stay_12_weeks_is_told_to_the_council_at_admission_once(app_hub):
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[BUCKS]},
                                json={"channel": "feed"})
    assert r.status_code == 201, r.text
    admitted = TODAY - timedelta(days=3)
    child = await _post(app_hub, _detention("c1", "9434765919", admitted, _years_ago(14),
                                            expected_stay_weeks=16, ehc_plan_la_gss=WORCS))
    # One whose 18th birthday was the admission day, expected to stay as long, and a child admitted with no expectation said: nothing yet.
    await _post(app_hub, _detention("a1", "9434765870", admitted, _years_ago(18, 3), expected_stay_weeks=16))
    await _post(app_hub, _detention("c2", "9434765862", admitted, _years_ago(15)))

    scanner = _scanner(app_hub)
    assert await scanner.run_once() == 2
    assert await scanner.run_once() == 0  # decided once: scanning again tells no one twice
    pid = child["person_id"]
    assert await _decisions(app_hub) == [
        # The EHC plan's council (Worcestershire) has an agreement in force that does not list the notice.
        (pid, "s117-child-ehc-plan-notice", WORCS, "denied"),
        (pid, "s117-child-long-stay-notice", BUCKS, "allowed"),
    ]
    [item] = await _feed(app_hub)
    bundle = item["message"]
    validate_message(bundle)
    header = bundle["entry"][0]["resource"]
    assert header["eventCoding"]["code"] == "s117-child-long-stay-notice"
    assert header["destination"][0]["receiver"]["identifier"]["value"] == BUCKS
    notice = next(e for e in header["extension"] if e["url"].endswith("/Extension-S117-ChildNotice"))
    assert {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in notice["extension"]} == {
        "reason": "expected-long-stay", "basis": "ordinary-residence", "expectedStayWeeks": 16,
        "citation": "Children Act 1989 s85; Worcs 6.1"}
    kinds = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
    # Minimum necessary: Bucks' agreement grants address, responsibility, workflow too; a notice carries none,
    # nor a position.
    assert set(kinds) == {"MessageHeader", "Patient", "Encounter", "EpisodeOfCare"}
    assert "address" not in kinds["Patient"] and kinds["Patient"]["birthDate"] == _years_ago(14)
    assert "9434765919" in {i["value"] for i in kinds["Patient"]["identifier"]}
    assert kinds["Encounter"]["period"] == {"start": admitted.isoformat()}
    assert kinds["Encounter"]["serviceProvider"]["identifier"]["value"] == "RNU"
    assert "managingOrganization" not in kinds["EpisodeOfCare"]
    assert kinds["EpisodeOfCare"]["status"] == "cancelled"  # s2: not a detention s117 follows
    assert "HP20" not in str(bundle)


async def test_twelve_weeks_in_hospital_told_then_not_a_discharge_before_nor_a_retracted_detention(app_hub):
    admitted = TODAY - timedelta(days=84)
    stayed = await _post(app_hub, _detention("s1", "9434765919", admitted, _years_ago(16)))
    left = await _post(app_hub, _detention("s2", "9434765870", admitted, _years_ago(16)))
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json={
        "source_system": "RiO", "source_message_id": "s2-2", "change_type": "left-hospital",
        "effective_date": (admitted + timedelta(days=83)).isoformat(), "hospital_ods": "RNU",
        "person": {"nhs_number": "9434765870"}})
    assert r.status_code == 202, r.text
    retracted = await _post(app_hub, _detention("s3", "9434765862", admitted, _years_ago(16)))
    r = await app_hub.http.post(f"/v1/register-changes/{retracted['change_id']}/retraction",
                                headers={"X-API-Key": app_hub.keys["trust"]},
                                json={"reason": "recorded against the wrong patient"})
    assert r.status_code in (200, 202), r.text

    assert await _scanner(app_hub).run_once() == 1
    decisions = await _decisions(app_hub)
    # Bucks has no subscription: decided (and audited) as no-subscription, not sent again later.
    assert decisions == [(stayed["person_id"], "s117-child-long-stay-notice", BUCKS, "no-subscription")]
    assert left["person_id"] not in str(decisions)
    async with app_hub.hub.engine.connect() as conn:
        assert (await conn.execute(select(deliveries.c.event_id)
                                   .where(deliveries.c.event_type.like("s117-child-%")))).all() == []


@pytest.mark.parametrize(("fields", "field", "reason"), [
    ({"expected_stay_weeks": 0}, "expected_stay_weeks", "must be a whole number of weeks from 1 to 260"),
    ({"expected_stay_weeks": "12"}, "expected_stay_weeks", "must be a whole number of weeks from 1 to 260"),
    ({"expected_stay_weeks": 12.5}, "expected_stay_weeks", "must be a whole number of weeks from 1 to 260"),
    ({"ehc_plan_la_gss": "E99999999"}, "ehc_plan_la_gss",
     "is not an English social services authority (GSS) code"),
    ({"ehc_plan_la_gss": "oxon"}, "ehc_plan_la_gss", "must be an ONS GSS code: E, W, S or N and 8 digits"),
])
async def test_a_bad_child_field_is_refused_by_name(app_hub, fields, field, reason):
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                json=_detention("bad", "9434765919", TODAY, _years_ago(14), **fields))
    assert r.status_code == 422, r.text
    assert {"field": field, "reason": reason} in r.json()["errors"]


async def test_the_child_fields_belong_to_a_detention_only(app_hub):
    await _post(app_hub, _detention("m0", "9434765919", TODAY - timedelta(days=5), _years_ago(14)))
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json={
        "source_system": "RiO", "source_message_id": "m1", "change_type": "left-hospital",
        "effective_date": TODAY.isoformat(), "hospital_ods": "RNU", "expected_stay_weeks": 12,
        "person": {"nhs_number": "9434765919"}})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "expected_stay_weeks"


async def test_a_quiet_scan_does_not_hide_the_12_week_day_nor_a_new_change(app_hub):
    """The scanner passes over someone it settled while their history is the same and nothing falls
    due; the 12-week day and a new change each bring them back."""
    day = [TODAY]
    hub = app_hub.hub
    scanner = ChildNoticeScanner(hub.engine, hub.ref, hub.sharing, hub.protector, hub.settings.hub_endpoint,
                                 hub.settings.namespaces(), today=lambda: day[0])
    await _post(app_hub, _detention("q1", "9434765919", TODAY - timedelta(days=83), _years_ago(15)))
    readmitted = await _post(app_hub, _detention("q2", "9434765870", TODAY - timedelta(days=20), _years_ago(15)))
    assert await scanner.run_once() == 0
    assert await scanner.run_once() == 0
    # The second child left yesterday and is admitted again today, expected to stay 12 weeks: a new stay, told.
    for smid, change_type, on, extra in (
            ("q2-2", "left-hospital", TODAY - timedelta(days=1), {}),
            ("q2-3", "detained", TODAY, {"legal_status_code": "03", "residence_la_gss": BUCKS,
                                         "expected_stay_weeks": 12})):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json={
            "source_system": "RiO", "source_message_id": smid, "change_type": change_type,
            "effective_date": on.isoformat(), "hospital_ods": "RNU", "person": {"nhs_number": "9434765870"},
            **extra})
        assert r.status_code == 202, r.text
    assert await scanner.run_once() == 1
    assert [d[0] for d in await _decisions(app_hub)] == [readmitted["person_id"]]
    day[0] = TODAY + timedelta(days=1)  # the first child's 84th day
    assert await scanner.run_once() == 1
    assert await scanner.run_once() == 0
    assert len(await _decisions(app_hub)) == 2


# --- after the notice: the stay ended (s85(4)), a retraction (a withdrawal) -----------------------------


def _scanner_on(app_hub, day: list[date], sharing: Any = None) -> ChildNoticeScanner:  # noqa: ANN001
    hub = app_hub.hub
    return ChildNoticeScanner(hub.engine, hub.ref, sharing or hub.sharing, hub.protector, hub.settings.hub_endpoint,
                              hub.settings.namespaces(), today=lambda: day[0])


async def _change(app_hub, smid: str, nhs: str, change_type: str, on: date) -> dict[str, Any]:  # noqa: ANN001
    return await _post(app_hub, {"source_system": "RiO", "source_message_id": smid, "change_type": change_type,
                                 "effective_date": on.isoformat(), "hospital_ods": "RNU",
                                 "person": {"nhs_number": nhs}})


async def _retract(app_hub, change_id: str) -> None:  # noqa: ANN001
    r = await app_hub.http.post(f"/v1/register-changes/{change_id}/retraction",
                                headers={"X-API-Key": app_hub.keys["trust"]}, json={"reason": "recorded in error"})
    assert r.status_code in (200, 202), r.text


async def _subscribe_feed(app_hub, org: str = BUCKS) -> None:  # noqa: ANN001
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[org]}, json={"channel": "feed"})
    assert r.status_code == 201, r.text


def _notice_parts(bundle: dict[str, Any]) -> dict[str, Any]:
    header = bundle["entry"][0]["resource"]
    notice = next(e for e in header["extension"] if e["url"].endswith("/Extension-S117-ChildNotice"))
    return {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in notice["extension"]}


async def test_the_council_told_of_the_stay_is_told_it_ended_once_even_after_the_18th_birthday(app_hub):
    """s85(4): the s85 notice went at admission (a child then); the person turned 18 in hospital; on
    leaving, the same council is told the stay ended, with the date, once. The EHC plan's council (whose
    notice was refused) and a child whose stay ended on day 83 (no s85 notice) are told nothing."""
    await _subscribe_feed(app_hub)
    admitted = TODAY - timedelta(days=100)
    day = [admitted]
    # 18 on the 50th day in hospital.
    birth = (admitted + timedelta(days=50)).replace(year=admitted.year - 18).isoformat()
    grown = await _post(app_hub, _detention("g1", "9434765919", admitted, birth, expected_stay_weeks=26,
                                            ehc_plan_la_gss=WORCS))
    short = await _post(app_hub, _detention("g2", "9434765870", admitted, _years_ago(15)))
    scanner = _scanner_on(app_hub, day)
    assert await scanner.run_once() == 2  # the s85 notice (Bucks) and the EHC notice (Worcs: denied)
    await _change(app_hub, "g2-2", "9434765870", "left-hospital", admitted + timedelta(days=83))
    day[0] = TODAY
    assert await scanner.run_once() == 0  # the 18-year-old still in hospital; the day-83 leaver owed nothing
    left_on = TODAY - timedelta(days=1)
    await _change(app_hub, "g1-2", "9434765919", "left-hospital", left_on)
    assert await scanner.run_once() == 1
    assert await scanner.run_once() == 0  # once
    assert await _scanner_on(app_hub, day).run_once() == 0  # once, whatever the process
    assert await _decisions(app_hub) == [
        (grown["person_id"], "s117-child-ehc-plan-notice", WORCS, "denied"),
        (grown["person_id"], "s117-child-left-hospital-notice", BUCKS, "allowed"),
        (grown["person_id"], "s117-child-long-stay-notice", BUCKS, "allowed"),
    ]
    assert short["person_id"] not in str(await _decisions(app_hub))
    items = await _feed(app_hub)
    assert [i["event_type"] for i in items] == ["s117-child-long-stay-notice", "s117-child-left-hospital-notice"]
    bundle = items[1]["message"]
    validate_message(bundle)
    header = bundle["entry"][0]["resource"]
    assert header["destination"][0]["receiver"]["identifier"]["value"] == BUCKS
    assert {"url": header["extension"][0]["url"], "valueDate": left_on.isoformat()} == header["extension"][0]
    assert _notice_parts(bundle) == {"reason": "stay-ended", "basis": "ordinary-residence", "expectedStayWeeks": 26,
                                     "citation": "Children Act 1989 s85(4)"}
    kinds = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
    assert set(kinds) == {"MessageHeader", "Patient", "Encounter", "EpisodeOfCare"}
    assert kinds["Encounter"]["period"] == {"start": admitted.isoformat(), "end": left_on.isoformat()}
    assert kinds["Encounter"]["status"] == "finished"
    assert kinds["EpisodeOfCare"]["status"] == "cancelled"  # s2: not a detention s117 follows
    assert "HP20" not in str(bundle)


async def test_a_retracted_detention_withdraws_the_notices_that_went_once_and_only_those(app_hub):
    """The detention recorded in error after its notices went: the council told each (here Bucks, the
    child's council and the EHC plan's) is sent one withdrawal per notice, naming it, carrying nothing the
    detention said. A notice refused (Worcestershire's EHC notice) is withdrawn from no one."""
    await _subscribe_feed(app_hub)
    admitted = TODAY - timedelta(days=5)
    child = await _post(app_hub, _detention("w1", "9434765919", admitted, _years_ago(14), expected_stay_weeks=16,
                                            ehc_plan_la_gss=BUCKS))
    other = await _post(app_hub, _detention("w2", "9434765870", admitted, _years_ago(14), ehc_plan_la_gss=WORCS))
    day = [TODAY]
    scanner = _scanner_on(app_hub, day)
    assert await scanner.run_once() == 3
    sent = {i["event_type"]: i["event_id"] for i in await _feed(app_hub)}
    assert set(sent) == {"s117-child-long-stay-notice", "s117-child-ehc-plan-notice"}
    await _retract(app_hub, child["change_id"])
    await _retract(app_hub, other["change_id"])
    assert await scanner.run_once() == 2
    assert await scanner.run_once() == 0
    assert await _scanner_on(app_hub, day).run_once() == 0  # once, whatever the process
    withdrawn = [i for i in await _feed(app_hub) if i["event_type"] == "s117-child-notice-withdrawn"]
    assert len(withdrawn) == 2
    superseded = set()
    for item in withdrawn:
        bundle = item["message"]
        validate_message(bundle)
        parts = _notice_parts(bundle)
        assert parts["reason"] == "admission-recorded-in-error" and "expectedStayWeeks" not in parts
        superseded.add(parts["supersedes"])
        kinds = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
        assert set(kinds) == {"MessageHeader", "Patient", "EpisodeOfCare"}  # no detention told again
        assert kinds["EpisodeOfCare"]["status"] == "cancelled"
        assert "RNU" not in str(bundle) and "HP20" not in str(bundle)
    assert superseded == set(sent.values())
    assert other["person_id"] not in {d[0] for d in await _decisions(app_hub) if d[1] == "s117-child-notice-withdrawn"}


async def test_a_detention_retracted_in_error_and_reinstated_is_notified_again_once(app_hub):
    """The retraction of the detention withdrew its notice; the retraction was made in error and is reversed
    (POST .../retraction/reversal): the notice is owed again, and goes once, as a new notice (a withdrawn
    council is told anew), carrying the detention again."""
    await _subscribe_feed(app_hub)
    admitted = TODAY - timedelta(days=5)
    child = await _post(app_hub, _detention("u1", "9434765919", admitted, _years_ago(14), expected_stay_weeks=16))
    day = [TODAY]
    scanner = _scanner_on(app_hub, day)
    assert await scanner.run_once() == 1
    await _retract(app_hub, child["change_id"])
    assert await scanner.run_once() == 1  # the withdrawal
    r = await app_hub.http.post(f"/v1/register-changes/{child['change_id']}/retraction/reversal",
                                headers={"X-API-Key": app_hub.keys["trust"]}, json={"reason": "retracted in error"})
    assert r.status_code == 200, r.text
    assert await scanner.run_once() == 1
    assert await scanner.run_once() == 0
    assert await _scanner_on(app_hub, day).run_once() == 0  # once, whatever the process
    items = await _feed(app_hub)
    assert [i["event_type"] for i in items] == ["s117-child-long-stay-notice", "s117-child-notice-withdrawn",
                                                "s117-child-long-stay-notice"]
    assert items[2]["event_id"] != items[0]["event_id"]
    bundle = items[2]["message"]
    validate_message(bundle)
    kinds = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
    assert kinds["Encounter"]["period"]["start"] == admitted.isoformat()


async def test_a_retracted_discharge_withdraws_the_leaving_notice_the_stay_continues_a_later_one_is_told(app_hub):
    await _subscribe_feed(app_hub)
    admitted = TODAY - timedelta(days=20)
    await _post(app_hub, _detention("r1", "9434765919", admitted, _years_ago(14), expected_stay_weeks=16))
    day = [TODAY]
    scanner = _scanner_on(app_hub, day)
    assert await scanner.run_once() == 1
    discharge = await _change(app_hub, "r1-2", "9434765919", "left-hospital", TODAY - timedelta(days=2))
    assert await scanner.run_once() == 1
    await _retract(app_hub, discharge["change_id"])
    assert await scanner.run_once() == 1
    assert await scanner.run_once() == 0
    items = await _feed(app_hub)
    assert [i["event_type"] for i in items] == ["s117-child-long-stay-notice", "s117-child-left-hospital-notice",
                                                "s117-child-notice-withdrawn"]
    bundle = items[2]["message"]
    validate_message(bundle)
    parts = _notice_parts(bundle)
    assert (parts["reason"], parts["supersedes"]) == ("stay-continues", items[1]["event_id"])
    kinds = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
    assert kinds["Encounter"]["status"] == "in-progress" and kinds["Encounter"]["period"] == {
        "start": admitted.isoformat()}
    # The child leaves again: a leaving notice of its own.
    await _change(app_hub, "r1-3", "9434765919", "left-hospital", TODAY)
    assert await scanner.run_once() == 1
    items = await _feed(app_hub)
    assert [i["event_type"] for i in items][3:] == ["s117-child-left-hospital-notice"]
    assert items[3]["event_id"] != items[1]["event_id"]


async def test_a_withdrawal_is_owed_under_any_agreement_in_force_as_a_correction_is(app_hub):
    """A council told a notice is told of its withdrawal (UK GDPR Art. 19) though its agreement lists the
    notices only; a leaving notice needs its own grant (deny by default: refused, audited)."""
    sharing = SharingAgreements.from_document({"version": 1, "agreements": [
        {"id": "DSA-CHILD-ONLY", "valid_from": "2020-01-01", "recipients": [
            {"org_code": BUCKS, "events": ["s117-child-long-stay-notice"], "field_groups": ["identity"]}]}]})
    await _subscribe_feed(app_hub)
    child = await _post(app_hub, _detention("a1", "9434765919", TODAY - timedelta(days=9), _years_ago(14),
                                            expected_stay_weeks=13))
    scanner = _scanner_on(app_hub, [TODAY], sharing)
    assert await scanner.run_once() == 1
    discharge = await _change(app_hub, "a1-2", "9434765919", "left-hospital", TODAY)
    assert await scanner.run_once() == 1  # the leaving notice: not granted
    await _retract(app_hub, child["change_id"])
    assert await scanner.run_once() == 1  # the s85 notice withdrawn (the leaving notice never went)
    assert await _decisions(app_hub) == [
        (child["person_id"], "s117-child-left-hospital-notice", BUCKS, "denied"),
        (child["person_id"], "s117-child-long-stay-notice", BUCKS, "allowed"),
        (child["person_id"], "s117-child-notice-withdrawn", BUCKS, "allowed"),
    ]
    assert discharge["change_id"]


# --- one notice a stay: an earlier detention of the same stay arriving late ----------------------------


async def test_an_earlier_detention_of_the_same_stay_arriving_late_corrects_the_notices_it_does_not_repeat_them(
        app_hub):
    """The trust sent the s3 detention (expected 16 weeks, an EHC plan with Bucks) first; both notices went.
    The s2 detention that began the same stay 90 days ago arrives late: the stay is the same, so no second
    s85 notice (the 12-week day of the earlier date has passed) nor EHC notice; each council told is sent one
    correction (UK GDPR Art. 19) carrying the stay as it now stands and naming the notice it replaces."""
    await _subscribe_feed(app_hub)
    later = await _post(app_hub, _detention("e1", "9434765919", TODAY - timedelta(days=10), _years_ago(14),
                                            legal_status_code="03", expected_stay_weeks=16, ehc_plan_la_gss=BUCKS))
    day = [TODAY]
    scanner = _scanner_on(app_hub, day)
    assert await scanner.run_once() == 2
    first = {i["event_type"]: i["event_id"] for i in await _feed(app_hub)}
    began = TODAY - timedelta(days=90)
    late = _detention("e0", "9434765919", began, _years_ago(14))
    await _post(app_hub, late)
    assert await scanner.run_once() == 2  # the two corrections, no notice again
    assert await scanner.run_once() == 0
    assert await _scanner_on(app_hub, day).run_once() == 0  # once, whatever the process
    pid = later["person_id"]
    assert await _decisions(app_hub) == [
        (pid, "s117-child-ehc-plan-notice", BUCKS, "allowed"),
        (pid, "s117-child-long-stay-notice", BUCKS, "allowed"),
        (pid, "s117-child-notice-corrected", BUCKS, "allowed"),
        (pid, "s117-child-notice-corrected", BUCKS, "allowed"),
    ]
    corrected = [i for i in await _feed(app_hub) if i["event_type"] == "s117-child-notice-corrected"]
    assert sorted(_notice_parts(i["message"])["supersedes"] for i in corrected) == sorted(first.values())
    for item in corrected:
        bundle = item["message"]
        validate_message(bundle)
        parts = _notice_parts(bundle)
        assert (parts["reason"], parts["citation"]) == ("admission-corrected",
                                                        "UK GDPR Art. 16, 19 (rectification told to each recipient)")
        kinds = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
        assert kinds["Encounter"]["period"] == {"start": began.isoformat()}  # the stay as it now stands
        assert kinds["Encounter"]["status"] == "in-progress"
        assert began.isoformat() in str(bundle) and "HP20" not in str(bundle)
    # The stay ends: one leaving notice, to the council told of the stay.
    await _change(app_hub, "e1-2", "9434765919", "left-hospital", TODAY)
    assert await scanner.run_once() == 1
    assert await scanner.run_once() == 0
    assert [i["event_type"] for i in await _feed(app_hub)].count("s117-child-left-hospital-notice") == 1


async def test_a_correction_only_when_what_was_told_changed_and_a_retraction_there_withdraws_nothing(app_hub):
    """The notice went keyed on the detention the trust sent first. An earlier one of the same stay comes late
    (corrected), then is retracted as recorded in error: the stay stands as first told, so a second
    correction tells it again (replacing the first correction); the notice is never withdrawn, as the child
    was in hospital on the day it told."""
    await _subscribe_feed(app_hub)
    told = await _post(app_hub, _detention("f1", "9434765919", TODAY - timedelta(days=5), _years_ago(14),
                                           expected_stay_weeks=20))
    scanner = _scanner_on(app_hub, [TODAY])
    assert await scanner.run_once() == 1
    [notice] = await _feed(app_hub)
    late = await _post(app_hub, _detention("f0", "9434765919", TODAY - timedelta(days=20), _years_ago(14)))
    assert await scanner.run_once() == 1
    await _retract(app_hub, late["change_id"])
    assert await scanner.run_once() == 1
    assert await scanner.run_once() == 0
    items = await _feed(app_hub)
    assert [i["event_type"] for i in items] == ["s117-child-long-stay-notice", "s117-child-notice-corrected",
                                                "s117-child-notice-corrected"]
    assert _notice_parts(items[1]["message"])["supersedes"] == notice["event_id"]
    assert _notice_parts(items[2]["message"])["supersedes"] == items[1]["event_id"]
    starts = [next(e["resource"] for e in i["message"]["entry"] if e["resource"]["resourceType"] == "Encounter")
              ["period"]["start"] for i in items]
    assert starts == [(TODAY - timedelta(days=5)).isoformat(), (TODAY - timedelta(days=20)).isoformat(),
                      (TODAY - timedelta(days=5)).isoformat()]
    assert told["person_id"] not in {d[0] for d in await _decisions(app_hub) if d[1] == "s117-child-notice-withdrawn"}


# --- a merge of two NHS numbers: the notices that went under the superseded person are the retained one's ---


async def test_notices_sent_before_a_merge_count_under_the_retained_person_and_what_follows_them_still_goes(app_hub):
    """The s85 notice went for a child under one NHS number; PDS merges that number into another the register
    holds (POST /v1/persons/merge). The stay, now the retained person's, is not notified again; its end is
    told once (s85(4)), and the detention retracted withdraws both notices that went, to the council told."""
    await _subscribe_feed(app_hub)
    birth = _years_ago(14)
    gone = await _post(app_hub, _detention("m1", "9434765919", TODAY - timedelta(days=5), birth,
                                           expected_stay_weeks=16))
    # The retained number's own record: a stay long over (owes nothing).
    kept = await _post(app_hub, _detention("m2", "9434765870", TODAY - timedelta(days=400), birth))
    await _change(app_hub, "m2-2", "9434765870", "left-hospital", TODAY - timedelta(days=390))
    scanner = _scanner_on(app_hub, [TODAY])
    assert await scanner.run_once() == 1
    [notice] = await _feed(app_hub)
    r = await app_hub.http.post("/v1/persons/merge", headers={"X-API-Key": app_hub.keys["trust"]},
                                json={"retained_nhs_number": "9434765870", "superseded_nhs_number": "9434765919"})
    assert r.status_code == 200, r.text
    assert (r.json()["retained_person_id"], r.json()["superseded_person_id"]) == (kept["person_id"],
                                                                                  gone["person_id"])
    assert await scanner.run_once() == 0  # the stay's notice went (under the superseded person): not again
    assert await _scanner_on(app_hub, [TODAY]).run_once() == 0
    await _change(app_hub, "m2-3", "9434765870", "left-hospital", TODAY)
    assert await scanner.run_once() == 1  # the leaving notice, owed for the notice that went before the merge
    assert await scanner.run_once() == 0
    await _retract(app_hub, gone["change_id"])
    assert await scanner.run_once() == 2  # both notices that went withdrawn
    assert await scanner.run_once() == 0
    items = await _feed(app_hub)
    assert [i["event_type"] for i in items] == ["s117-child-long-stay-notice", "s117-child-left-hospital-notice",
                                                "s117-child-notice-withdrawn", "s117-child-notice-withdrawn"]
    assert {_notice_parts(i["message"])["supersedes"] for i in items[2:]} == {notice["event_id"], items[1]["event_id"]}
    for item in items[1:]:
        bundle = item["message"]
        validate_message(bundle)
        patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        assert "9434765870" in {i["value"] for i in patient["identifier"]}  # told under the retained number
    assert sorted((d[0], d[1]) for d in await _decisions(app_hub)) == sorted([
        (kept["person_id"], "s117-child-left-hospital-notice"),
        (kept["person_id"], "s117-child-notice-withdrawn"), (kept["person_id"], "s117-child-notice-withdrawn"),
        (gone["person_id"], "s117-child-long-stay-notice")])


async def test_a_merge_reversed_after_the_notice_went_under_the_retained_person_does_not_notify_the_stay_again(
        app_hub):
    """The child (one NHS number) has been in hospital 83 days; PDS merges the number into another the register
    holds; on the 84th day the s85 notice goes under the retained person's id. The merge was an error and is
    reversed (POST /v1/persons/merges/{id}/reversal): the stay, moved back, is the superseded person's again,
    and the notice that went counts as told for them: no second notice; its end is told once, under their own
    id and number; the detention retracted withdraws both, once. The retained person is owed nothing."""
    await _subscribe_feed(app_hub)
    birth = _years_ago(14)
    began = TODAY - timedelta(days=100)
    gone = await _post(app_hub, _detention("u1", "9434765919", began, birth))
    kept = await _post(app_hub, _detention("u2", "9434765870", TODAY - timedelta(days=400), birth))
    await _change(app_hub, "u2-2", "9434765870", "left-hospital", TODAY - timedelta(days=390))
    day = [began + timedelta(days=83)]
    scanner = _scanner_on(app_hub, day)
    assert await scanner.run_once() == 0
    r = await app_hub.http.post("/v1/persons/merge", headers={"X-API-Key": app_hub.keys["trust"]},
                                json={"retained_nhs_number": "9434765870", "superseded_nhs_number": "9434765919"})
    assert r.status_code == 200, r.text
    merge_id = r.json()["merge_id"]
    day[0] = began + timedelta(days=84)
    assert await scanner.run_once() == 1  # the s85 notice, under the retained person
    [notice] = await _feed(app_hub)
    r = await app_hub.http.post(f"/v1/persons/merges/{merge_id}/reversal", headers={"X-API-Key": app_hub.keys["trust"]},
                                json={"reason": "two patients, not one"})
    assert r.status_code == 200, r.text
    assert r.json()["moved_back_changes"] == 1
    assert await scanner.run_once() == 0  # the stay was told: not again, under either person
    assert await _scanner_on(app_hub, day).run_once() == 0
    day[0] = TODAY
    assert await scanner.run_once() == 0
    await _change(app_hub, "u1-2", "9434765919", "left-hospital", TODAY)
    assert await scanner.run_once() == 1  # the leaving notice, owed for the notice that went before the reversal
    assert await scanner.run_once() == 0
    await _retract(app_hub, gone["change_id"])
    assert await scanner.run_once() == 2  # both notices withdrawn
    assert await scanner.run_once() == 0
    items = await _feed(app_hub)
    assert [i["event_type"] for i in items] == ["s117-child-long-stay-notice", "s117-child-left-hospital-notice",
                                                "s117-child-notice-withdrawn", "s117-child-notice-withdrawn"]
    assert {_notice_parts(i["message"])["supersedes"] for i in items[2:]} == {notice["event_id"], items[1]["event_id"]}
    for item in items[1:]:
        validate_message(item["message"])
        patient = next(e["resource"] for e in item["message"]["entry"] if e["resource"]["resourceType"] == "Patient")
        assert "9434765919" in {i["value"] for i in patient["identifier"]}  # told under their own number again
    assert sorted((d[0], d[1]) for d in await _decisions(app_hub)) == sorted([
        (kept["person_id"], "s117-child-long-stay-notice"),
        (gone["person_id"], "s117-child-left-hospital-notice"),
        (gone["person_id"], "s117-child-notice-withdrawn"), (gone["person_id"], "s117-child-notice-withdrawn")])


async def test_merges_of_merges_reversed_in_turn_the_notice_under_the_last_retained_person_still_counts(app_hub):
    """One number merged into a second, that one into a third; the s85 notice goes under the third person.
    Both merges reversed (the later first): the stay is the first person's again, already told."""
    await _subscribe_feed(app_hub)
    birth = _years_ago(14)
    began = TODAY - timedelta(days=100)
    await _post(app_hub, _detention("v1", "9434765919", began, birth))
    for n, nhs in ((2, "9434765870"), (3, "9434765862")):
        await _post(app_hub, _detention(f"v{n}", nhs, TODAY - timedelta(days=400), birth))
        await _change(app_hub, f"v{n}-2", nhs, "left-hospital", TODAY - timedelta(days=390))
    day = [began + timedelta(days=83)]
    scanner = _scanner_on(app_hub, day)
    assert await scanner.run_once() == 0
    merges = []
    for kept, gone in (("9434765870", "9434765919"), ("9434765862", "9434765870")):
        r = await app_hub.http.post("/v1/persons/merge", headers={"X-API-Key": app_hub.keys["trust"]},
                                    json={"retained_nhs_number": kept, "superseded_nhs_number": gone})
        assert r.status_code == 200, r.text
        merges.append(r.json()["merge_id"])
    day[0] = began + timedelta(days=84)
    assert await scanner.run_once() == 1  # under the third person
    for merge_id in reversed(merges):
        r = await app_hub.http.post(f"/v1/persons/merges/{merge_id}/reversal",
                                    headers={"X-API-Key": app_hub.keys["trust"]}, json={"reason": "not one patient"})
        assert r.status_code == 200, r.text
    assert await scanner.run_once() == 0
    day[0] = TODAY
    await _change(app_hub, "v1-3", "9434765919", "left-hospital", TODAY)
    assert await scanner.run_once() == 1
    assert await scanner.run_once() == 0
    assert [i["event_type"] for i in await _feed(app_hub)] == ["s117-child-long-stay-notice",
                                                               "s117-child-left-hospital-notice"]


# --- the child's fields on the notice's Encounter, under legal-status -----------------------------------


def _encounter_extensions(bundle: dict[str, Any]) -> dict[str, Any]:
    encounter = next((e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Encounter"), {})
    return {x["url"].rsplit("/Extension-", 1)[1]: next(v for k, v in x.items() if k.startswith("value"))
            for x in encounter.get("extension", []) if "valueCodeableConcept" not in str(x)}


async def test_the_notices_encounter_carries_the_childs_fields_only_under_legal_status(app_hub):
    """The detention's expected stay and EHC plan council go out as they came in (Extension-S117-
    ExpectedStayWeeks, Extension-S117-EhcPlanCouncil on the Encounter) to a council granted legal-status
    (hub/sharing.py CHILD_FIELDS_GROUP); a council not granted it gets neither, nor the expected stay in the
    notice's extension. Each message is valid against the hub's profiles."""
    await _subscribe_feed(app_hub)
    await _post(app_hub, _detention("x1", "9434765919", TODAY - timedelta(days=3), _years_ago(14),
                                    expected_stay_weeks=16, ehc_plan_la_gss=BUCKS))
    granted = SharingAgreements.from_document({"version": 1, "agreements": [
        {"id": "DSA-CHILD-LS", "valid_from": "2020-01-01", "recipients": [
            {"org_code": BUCKS, "events": ["s117-child-long-stay-notice", "s117-child-ehc-plan-notice"],
             "field_groups": ["identity", "legal-status"]}]}]})
    assert await _scanner_on(app_hub, [TODAY], granted).run_once() == 2
    for item in await _feed(app_hub):
        validate_message(item["message"])
        assert _encounter_extensions(item["message"]) == {
            "S117-ExpectedStayWeeks": 16,
            "S117-EhcPlanCouncil": {"system": "http://statistics.data.gov.uk/id/statistical-geography",
                                    "value": BUCKS}}
        assert _notice_parts(item["message"])["expectedStayWeeks"] == 16

    await _post(app_hub, _detention("x2", "9434765870", TODAY - timedelta(days=3), _years_ago(14),
                                    expected_stay_weeks=16, ehc_plan_la_gss=BUCKS))
    identity_only = SharingAgreements.from_document({"version": 1, "agreements": [
        {"id": "DSA-CHILD-ID", "valid_from": "2020-01-01", "recipients": [
            {"org_code": BUCKS, "events": ["s117-child-long-stay-notice", "s117-child-ehc-plan-notice"],
             "field_groups": ["identity", "demographics", "explanations", "responsibility"]}]}]})
    assert await _scanner_on(app_hub, [TODAY], identity_only).run_once() == 2
    items = (await _feed(app_hub))[2:]
    assert len(items) == 2
    for item in items:
        validate_message(item["message"])
        assert "Encounter" not in str(item["message"])
        assert "ExpectedStay" not in str(item["message"]) and "EhcPlan" not in str(item["message"])
        assert "expectedStayWeeks" not in _notice_parts(item["message"])


# --- another council concerned: a late earlier detention naming another council ------------------------

BHAM = "E08000025"
_BOTH = {"version": 1, "agreements": [{"id": "DSA-CHILD-TWO", "valid_from": "2020-01-01", "recipients": [
    {"org_code": org, "events": ["s117-child-long-stay-notice", "s117-child-ehc-plan-notice",
                                 "s117-child-left-hospital-notice"],
     "field_groups": ["identity", "demographics", "legal-status"]} for org in (BUCKS, BHAM)]}]}


async def test_a_late_detention_naming_another_council_withdraws_the_notices_of_the_council_told_and_back_again(
        app_hub):
    """Bucks (residence, EHC plan) is told of a stay; the detention that began it 90 days ago comes late
    naming Birmingham for both: Bucks is sent a withdrawal of each notice (another-council-concerned, under an
    agreement that does not list withdrawals: UK GDPR Art. 16, 19), no correction, and Birmingham its two
    notices. An earlier detention still names Bucks: Birmingham's withdrawn, Bucks told anew (new notices,
    the stay as it now stands). That one retracted: Bucks' new notices withdrawn as sent in error,
    Birmingham told anew. The stay ends: Birmingham alone is told. Each once."""
    sharing = app_hub.hub.sharing
    sharing.replace_grants(SharingAgreements.from_document(_BOTH))  # the feeds read under them too
    await _subscribe_feed(app_hub, BUCKS)
    await _subscribe_feed(app_hub, BHAM)
    nhs = "9434765919"
    first = await _post(app_hub, _detention("w2", nhs, TODAY - timedelta(days=10), _years_ago(14),
                                            legal_status_code="03", expected_stay_weeks=16, ehc_plan_la_gss=BUCKS))
    day = [TODAY]
    scanner = _scanner_on(app_hub, day, sharing)
    assert await scanner.run_once() == 2
    told = {i["event_type"]: i["event_id"] for i in await _feed(app_hub, BUCKS)}
    bham_began = TODAY - timedelta(days=90)
    late = await _post(app_hub, _detention("w1", nhs, bham_began, _years_ago(14), residence_la_gss=BHAM,
                                           ehc_plan_la_gss=BHAM))
    assert await scanner.run_once() == 4  # two withdrawals to Bucks, two notices to Birmingham
    assert await scanner.run_once() == 0
    assert await _scanner_on(app_hub, day, sharing).run_once() == 0  # once, whatever the process
    bucks = await _feed(app_hub, BUCKS)
    assert [i["event_type"] for i in bucks] == [*told, "s117-child-notice-withdrawn", "s117-child-notice-withdrawn"]
    assert sorted(_notice_parts(i["message"])["supersedes"] for i in bucks[2:]) == sorted(told.values())
    for item in bucks[2:]:
        bundle = item["message"]
        validate_message(bundle)
        assert _notice_parts(bundle)["reason"] == "another-council-concerned"
        kinds = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
        assert set(kinds) == {"MessageHeader", "Patient", "EpisodeOfCare"}  # nothing of the stay as it stands
        assert BHAM not in str(bundle) and bham_began.isoformat() not in str(bundle)
    bham = await _feed(app_hub, BHAM)
    assert sorted(i["event_type"] for i in bham) == ["s117-child-ehc-plan-notice", "s117-child-long-stay-notice"]
    for item in bham:
        validate_message(item["message"])
        assert _notice_parts(item["message"])["reason"] in ("long-stay-reached", "ehc-plan-admission")

    # Bucks concerned again (an earlier detention still): told anew; Birmingham's notices withdrawn.
    earliest = await _post(app_hub, _detention("w0", nhs, TODAY - timedelta(days=120), _years_ago(14),
                                               ehc_plan_la_gss=BUCKS))
    assert await scanner.run_once() == 4
    assert await scanner.run_once() == 0
    bucks = await _feed(app_hub, BUCKS)
    assert sorted(i["event_type"] for i in bucks[4:]) == ["s117-child-ehc-plan-notice", "s117-child-long-stay-notice"]
    assert {i["event_id"] for i in bucks[4:]}.isdisjoint(told.values())  # new notices, not the ones withdrawn
    for item in bucks[4:]:
        validate_message(item["message"])
        encounter = next(e["resource"] for e in item["message"]["entry"]
                         if e["resource"]["resourceType"] == "Encounter")
        assert encounter["period"]["start"] == (TODAY - timedelta(days=120)).isoformat()
    bham = await _feed(app_hub, BHAM)
    assert [(i["event_type"], _notice_parts(i["message"])["reason"]) for i in bham[2:]] == [
        ("s117-child-notice-withdrawn", "another-council-concerned")] * 2

    # That detention recorded in error: Bucks' new notices withdrawn as sent in error; Birmingham told anew.
    await _retract(app_hub, earliest["change_id"])
    assert await scanner.run_once() == 4
    assert await scanner.run_once() == 0
    bucks = await _feed(app_hub, BUCKS)
    assert [_notice_parts(i["message"])["reason"] for i in bucks[6:]] == ["admission-recorded-in-error"] * 2
    bham = await _feed(app_hub, BHAM)
    assert sorted(i["event_type"] for i in bham[4:]) == ["s117-child-ehc-plan-notice", "s117-child-long-stay-notice"]

    # The stay ends: the council concerned, Birmingham, told once; nothing more to Bucks.
    await _change(app_hub, "w2-2", nhs, "left-hospital", TODAY)
    assert await scanner.run_once() == 1
    assert await scanner.run_once() == 0
    assert [i["event_type"] for i in (await _feed(app_hub, BHAM))[6:]] == ["s117-child-left-hospital-notice"]
    assert len(await _feed(app_hub, BUCKS)) == 8
    decisions = await _decisions(app_hub)
    assert {d[3] for d in decisions} == {"allowed"} and {d[0] for d in decisions} == {first["person_id"]}
    assert late["person_id"] == first["person_id"]


async def test_the_detention_told_retracted_after_an_earlier_one_of_the_stay_came_no_second_notice(app_hub):
    """The notice went under the s3 detention; the s2 that began the same stay came late (a correction); then
    the s3 is retracted as recorded in error (the child was in hospital on its day all the same, from the
    s2): the stay is the one told, so no second notice of it; its end is told once, to the council told."""
    await _subscribe_feed(app_hub)
    told = await _post(app_hub, _detention("t1", "9434765919", TODAY - timedelta(days=5), _years_ago(14),
                                           legal_status_code="03", expected_stay_weeks=20))
    scanner = _scanner_on(app_hub, [TODAY])
    assert await scanner.run_once() == 1
    await _post(app_hub, _detention("t0", "9434765919", TODAY - timedelta(days=20), _years_ago(14),
                                    expected_stay_weeks=20))
    assert await scanner.run_once() == 1  # the correction
    await _retract(app_hub, told["change_id"])
    assert await scanner.run_once() == 0  # the stay stands as corrected: nothing to send
    await _change(app_hub, "t0-2", "9434765919", "left-hospital", TODAY)
    assert await scanner.run_once() == 1
    assert await scanner.run_once() == 0
    assert [i["event_type"] for i in await _feed(app_hub)] == [
        "s117-child-long-stay-notice", "s117-child-notice-corrected", "s117-child-left-hospital-notice"]
