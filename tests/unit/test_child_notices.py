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
