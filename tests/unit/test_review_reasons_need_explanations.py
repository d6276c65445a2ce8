"""What set a review off (its trigger: a move, a request, a discharge
considered; and the day) and its citation are reasons: a body whose
data-sharing agreement does not grant `explanations` is told each pending
review's kind and date only, in the person query and in every pushed position
alike (hub/domain/views.py `view_of`, hub/access.py `filter_status`).

Worcestershire County Council's agreement (contracts/data-sharing-agreements.yaml)
grants identity, responsibility and workflow; Buckinghamshire's adds
explanations. The person was detained from Buckinghamshire and later moved
to Worcestershire: the move sets off an unscheduled review (trigger `moved`).
"""

from __future__ import annotations

import random
from datetime import date

import orjson
from sqlalchemy import select

from hub.clients import add_client
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import deliveries, deliveries_with_messages, delivery_messages, subscriptions

BUCKS, WORCS = "E06000060", "E10000034"


async def _positions(app_hub, org: str) -> list[list[dict]]:  # noqa: ANN001
    """The review parts of every position message the organisation's feed was queued."""
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(
            select(delivery_messages.c.payload).select_from(deliveries_with_messages.join(
                subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id))
            .where(subscriptions.c.org_code == org))).scalars().all()
    out = []
    for payload in rows:
        bundle = orjson.loads(app_hub.hub.protector.decrypt(payload))
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] == "Parameters":
                out.append([p["part"] for p in entry["resource"]["parameter"] if p["name"] == "review"])
    return out


async def test_a_body_without_explanations_is_told_each_review_s_kind_and_date_only(app_hub):
    worcs = {"X-API-Key": (await add_client(app_hub.hub.engine, "Worcs", WORCS, "council",
                                            ["subscriptions:write", "s117:read"]))[1]}
    bucks = {"X-API-Key": app_hub.keys[BUCKS]}
    for h in (worcs, bucks):
        r = await app_hub.http.post("/v1/subscriptions", headers=h, json={"channel": "feed"})
        assert r.status_code == 201, r.text
    for c in detention_to_move_scenario(random.Random(5), "rx", date(2025, 1, 6)):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    person_id = r.json()["person_id"]
    while await app_hub.hub.dispatcher.run_once():
        pass

    full = (await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers=bucks)).json()
    assert {r["trigger"] for r in full["pending_reviews"]} >= {"moved"}
    assert all("citation" in r and "triggered_on" in r for r in full["pending_reviews"] if r["trigger"] == "moved")

    r = await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers=worcs)
    assert r.status_code == 200, r.text
    cut = r.json()
    assert [(x["kind"], x["due_on"]) for x in cut["pending_reviews"]] == \
        [(x["kind"], x["due_on"]) for x in full["pending_reviews"]]
    assert all(set(x) <= {"kind", "due_on"} for x in cut["pending_reviews"]), cut["pending_reviews"]
    assert set(cut["next_review"]) <= {"kind", "due_on"}, cut["next_review"]

    told_worcs, told_bucks = await _positions(app_hub, WORCS), await _positions(app_hub, BUCKS)
    assert any(reviews for reviews in told_worcs) and any(reviews for reviews in told_bucks)
    for reviews in told_worcs:
        for parts in reviews:
            assert {p["name"] for p in parts} <= {"kind", "dueDate"}, parts
    assert any(p["name"] == "trigger" for reviews in told_bucks for parts in reviews for p in parts)
