"""The trace (GET /v1/ops/trace) shows a change's retraction: found by the
retraction's own correlation id (the one its answer gave) or by the change's
source message id, the timeline holds the change, a `retracted` stage (who,
when, the request's correlation id; never the reason), and the correction the
retraction published with every recipient considered. Failed before: the
retraction's correlation id traced nothing, and its correction was shown under
another change or not at all (the IG review's finding 11)."""

from __future__ import annotations

import random
from datetime import date

from hub.clients import add_client
from hub.sample_data import detention_to_move_scenario

BUCKS = "E06000060"


async def test_a_retraction_is_found_and_shown_in_the_trace(app_hub):
    hub, http = app_hub.hub, app_hub.http
    admin = {"X-API-Key": (await add_client(hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]}
    r = await http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[BUCKS]}, json={"channel": "feed"})
    assert r.status_code == 201, r.text
    changes = detention_to_move_scenario(random.Random(9), "tr", date(2025, 1, 6))
    for c in changes:
        r = await http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    moved = r.json()["change_id"]  # the move, recorded in error
    while await hub.dispatcher.run_once():
        pass
    r = await http.post(f"/v1/register-changes/{moved}/retraction", headers={"X-API-Key": app_hub.keys["trust"]},
                        json={"reason": "recorded against the wrong patient"})
    assert r.status_code == 200, r.text
    retraction = r.json()
    while await hub.dispatcher.run_once():
        pass

    for query in ({"correlation_id": retraction["correlation_id"]},
                  {"source_message_id": changes[-1]["source_message_id"]}):
        r = await http.get("/v1/ops/trace", headers=admin, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["changes"] == 1, (query, body)
        stages = [(e["stage"], e.get("change_id"), e.get("event_id")) for e in body["timeline"]]
        assert ("recorded", moved, None) in stages
        [done] = [e for e in body["timeline"] if e["stage"] == "retracted"]
        assert (done["change_id"], done["correlation_id"], done["event_id"]) == \
            (moved, retraction["correlation_id"], retraction["event_id"])
        assert "reason" not in done and "wrong patient" not in r.text
        timeline = body["timeline"]
        [at] = [i for i, e in enumerate(timeline)
                if e["stage"] == "event-derived" and e["event_id"] == retraction["event_id"]]
        assert timeline[at]["change_id"] == moved and timeline[at]["event_type"] == "s117-notification-corrected"
        # Under it, what each body was told of it: Buckinghamshire, told of the move, is sent the correction
        # (in a message of its own: the event id is Buckinghamshire's view of the retraction's event).
        after = timeline[at + 1:]
        after = after[:next((i for i, e in enumerate(after) if e["stage"] == "event-derived"), len(after))]
        assert ("recipient-considered", BUCKS, "allowed") in \
            [(e["stage"], e.get("recipient"), e.get("decision")) for e in after]
        assert ("delivery-queued", BUCKS) in [(e["stage"], e.get("recipient")) for e in after]


async def test_a_retraction_reversed_is_still_traced_and_so_is_its_reversal(app_hub):
    """A retraction made in error and reversed (hub/unretractions.py): the retraction is kept in
    `change_retraction_reversals`, not `change_retractions`, and the trace still shows it, found by its own
    correlation id, with its correction under the change; the reversal is shown too (a `reinstated` stage:
    who, when, the request's correlation id, the event; never the reason), found by its own correlation id,
    with the correction it published under the change (its message carries another change of the history).
    Failed before: the retraction's correlation id traced nothing once reversed, the reversal's neither,
    and both corrections were shown under the change their message carries, or not at all."""
    hub, http = app_hub.hub, app_hub.http
    admin = {"X-API-Key": (await add_client(hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]}
    trust = {"X-API-Key": app_hub.keys["trust"]}
    r = await http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[BUCKS]}, json={"channel": "feed"})
    assert r.status_code == 201, r.text
    changes = detention_to_move_scenario(random.Random(9), "trr", date(2025, 1, 6))
    ids = []
    for c in changes:
        r = await http.post("/v1/register-changes", headers=trust, json=c)
        assert r.status_code == 202, r.text
        ids.append(r.json()["change_id"])
    first = ids[0]  # the detention: the corrections' messages carry the move, the history's latest change
    while await hub.dispatcher.run_once():
        pass
    r = await http.post(f"/v1/register-changes/{first}/retraction", headers=trust,
                        json={"reason": "recorded against the wrong patient"})
    assert r.status_code == 200, r.text
    retraction = r.json()
    while await hub.dispatcher.run_once():
        pass
    r = await http.post(f"/v1/register-changes/{first}/retraction/reversal", headers=trust,
                        json={"reason": "the retraction named the wrong change"})
    assert r.status_code == 200, r.text
    reversal = r.json()
    while await hub.dispatcher.run_once():
        pass

    for query in ({"correlation_id": retraction["correlation_id"]}, {"correlation_id": reversal["correlation_id"]},
                  {"source_message_id": changes[0]["source_message_id"]}):
        r = await http.get("/v1/ops/trace", headers=admin, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["changes"] == 1, (query, body)
        assert "wrong patient" not in r.text and "wrong change" not in r.text
        timeline = body["timeline"]
        [done] = [e for e in timeline if e["stage"] == "retracted"]
        assert (done["change_id"], done["correlation_id"], done["event_id"]) == \
            (first, retraction["correlation_id"], retraction["event_id"]), query
        [back] = [e for e in timeline if e["stage"] == "reinstated"]
        assert (back["change_id"], back["correlation_id"], back["event_id"], back["reinstated_by"]) == \
            (first, reversal["correlation_id"], reversal["event_id"], "RNU"), query
        assert "reason" not in back
        for event_id in (retraction["event_id"], reversal["event_id"]):
            [at] = [i for i, e in enumerate(timeline) if e["stage"] == "event-derived" and e["event_id"] == event_id]
            assert timeline[at]["change_id"] == first, (query, timeline[at])
            after = timeline[at + 1:]
            after = after[:next((i for i, e in enumerate(after) if e["stage"] == "event-derived"), len(after))]
            assert ("recipient-considered", BUCKS, "allowed") in \
                [(e["stage"], e.get("recipient"), e.get("decision")) for e in after], (query, event_id)
    for event_id in (retraction["event_id"], reversal["event_id"]):  # by the correction's event id: the change's
        r = await http.get("/v1/ops/trace", headers=admin, params={"event_id": event_id})
        assert r.status_code == 200, r.text
        assert [e["change_id"] for e in r.json()["timeline"] if e["stage"] == "recorded"] == [first], r.json()
