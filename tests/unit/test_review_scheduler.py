"""Review reminders reach the responsible bodies once per due review."""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import select

from hub.bus.port import HISTORY_RECEIVED_BY, history_received_by
from hub.domain.dates import add_months, england_day
from hub.fhir.messages import read_position
from hub.sample_data import detention_to_move_scenario
from hub.scheduler import ReviewScanner
from hub.store.schema import bus_messages, register_changes
from tests.support import left_hospital_80_days_ago


async def test_a_review_falling_due_is_announced_once(app_hub):
    hub = app_hub.hub
    # Left hospital 80 days ago: the first review (within 3 months, Worcs 14.1) is due in about 10 days.
    changes, left, person_id = await left_hospital_80_days_ago(app_hub.http, app_hub.keys["trust"], 9, "rev")

    far = ReviewScanner(hub.engine, hub.ref, hub.agreements, notice_days=3)
    assert await far.run_once() == 0  # not yet within three days' notice

    scanner = ReviewScanner(hub.engine, hub.ref, hub.agreements, notice_days=14)
    assert await scanner.run_once() == 1
    assert await scanner.run_once() == 0  # scanning again never notifies twice

    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(bus_messages.c.payload).where(
            bus_messages.c.headers["event_type"].as_string() == "s117-review-due"))).all()
    reminders = [r.payload["event"] for r in rows if r.payload["event"]["person_id"] == person_id
                 and r.payload["event"]["details"].get("kind") == "first"]
    assert len(reminders) == 1
    assert reminders[0]["details"]["due_on"] == add_months(left, 3).isoformat()
    assert reminders[0]["details"]["overdue"] == "no"

    # The dispatcher routes it to the responsible council like any other event.
    await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys["E06000060"]},
                            json={"channel": "feed"})
    while await hub.dispatcher.run_once():
        pass
    subs = (await app_hub.http.get("/v1/subscriptions", headers={"X-API-Key": app_hub.keys["E06000060"]})).json()
    feed = (await app_hub.http.get(f"/v1/feeds/{subs['items'][0]['subscription_id']}",
                                   headers={"X-API-Key": app_hub.keys["E06000060"]})).json()
    assert "s117-review-due" in {i["event_type"] for i in feed["items"]}


async def test_an_overdue_first_review_does_not_hide_the_unscheduled_review_a_move_triggers(app_hub):
    hub = app_hub.hub
    # Left hospital 120 days ago (first review overdue by about 30 days); moved
    # to another council area 10 days ago (an unscheduled review, Worcs 14.1, 17.1).
    left = england_day() - timedelta(days=120)
    changes = detention_to_move_scenario(random.Random(10), "rev2", left - timedelta(days=90))
    changes[2]["effective_date"] = left.isoformat()
    changes[3]["effective_date"] = (england_day() - timedelta(days=10)).isoformat()
    for c in changes:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    person_id = r.json()["person_id"]

    scanner = ReviewScanner(hub.engine, hub.ref, hub.agreements, notice_days=14)
    assert await scanner.run_once() == 2
    assert await scanner.run_once() == 0
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(bus_messages.c.payload).where(
            bus_messages.c.headers["source"].as_string() == "review-scheduler"))).all()
    reminders = sorted(((r.payload["event"]["details"]["kind"], r.payload["event"]["details"]["trigger"],
                         r.payload["event"]["details"]["overdue"])
                        for r in rows if r.payload["event"]["person_id"] == person_id))
    assert reminders == [("first", "left-hospital", "yes"), ("unscheduled", "moved", "yes")]


async def test_a_reminder_tells_the_history_it_was_scanned_against_not_a_change_received_before_its_dispatch(app_hub):
    """The reminder is published (headed with the latest `received_at` of the
    history it was scanned against), then the person's death is received, then
    one dispatch batch: the reminder's message tells the position as the scan
    found it (entitled), the death's own event tells the death."""
    hub = app_hub.hub
    council = app_hub.keys["E06000060"]
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": council}, json={"channel": "feed"})
    assert r.status_code == 201, r.text
    subscription_id = r.json()["subscription_id"]
    changes, left, person_id = await left_hospital_80_days_ago(app_hub.http, app_hub.keys["trust"], 11, "rev3")
    while await hub.dispatcher.run_once():
        pass

    assert await ReviewScanner(hub.engine, hub.ref, hub.agreements, notice_days=14).run_once() == 1
    async with hub.engine.connect() as conn:
        received = (await conn.execute(select(register_changes.c.received_at)
                                       .where(register_changes.c.person_id == person_id))).scalars().all()
        headers = (await conn.execute(select(bus_messages.c.headers).where(
            bus_messages.c.key == person_id,
            bus_messages.c.headers["source"].as_string() == "review-scheduler"))).scalar_one()
    assert headers[HISTORY_RECEIVED_BY] == history_received_by(max(received))

    died = {**changes[0], "source_message_id": "rev3-died", "change_type": "died",
            "effective_date": (left + timedelta(days=10)).isoformat()}
    for field in ("legal_status_code", "hospital_ods", "gp_practice_ods", "residence_la_gss"):
        died.pop(field)
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=died)
    assert r.status_code == 202, r.text
    assert await hub.dispatcher.run_once() >= 2  # the reminder and the death's events, one batch

    feed = (await app_hub.http.get(f"/v1/feeds/{subscription_id}", headers={"X-API-Key": council})).json()
    told = [(i["event_type"], read_position(i["message"]).view) for i in feed["items"]
            if read_position(i["message"]).person_id == person_id]
    reminders = [v for t, v in told if t == "s117-review-due"]
    assert reminders and all(v["entitled"] is True and "ended_by" not in v for v in reminders), told
    ended = [v for t, v in told if t == "s117-entitlement-ended"]
    assert ended and ended[-1]["ended_by"] == "death", [t for t, _ in told]
