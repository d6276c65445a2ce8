"""The trace (GET /v1/ops/trace) shows a retraction's reversal as it shows a retraction: the
reversal's own correlation id (the one its answer gave) finds the change, and so does the
correlation id of a retraction since reversed; a change's timeline holds each of its retractions
(`retracted`) and each reversal (`reinstated`: who, when, the request's correlation id, its event
and the retraction it reversed; never a reason), in the order they were made, each followed by the
correction it published with every recipient considered and what was sent; the event a retraction or
reversal published traces the change it corrected. Failed before: a
reversal's correlation id traced nothing, a retraction once reversed left the trace (its row is taken
off), and the reversal's correction was shown under another change or not at all."""

from __future__ import annotations

import random
from datetime import date

from hub.clients import add_client
from hub.sample_data import detention_to_move_scenario

BUCKS = "E06000060"


async def _drain(hub) -> None:  # noqa: ANN001
    while await hub.dispatcher.run_once():
        pass


async def test_a_reversal_is_found_and_shown_in_the_trace_with_the_retractions_in_order(app_hub):
    hub, http = app_hub.hub, app_hub.http
    trust = {"X-API-Key": app_hub.keys["trust"]}
    admin = {"X-API-Key": (await add_client(hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]}
    r = await http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys[BUCKS]}, json={"channel": "feed"})
    assert r.status_code == 201, r.text
    changes = detention_to_move_scenario(random.Random(9), "trr", date(2025, 1, 6))
    for c in changes:
        r = await http.post("/v1/register-changes", headers=trust, json=c)
        assert r.status_code == 202, r.text
    moved = r.json()["change_id"]
    await _drain(hub)
    made = []  # (stage, the answer), in the order made: retracted, reinstated in error, retracted again
    for what, path, reason in (("retracted", "retraction", "recorded against the wrong patient"),
                               ("reinstated", "retraction/reversal", "the retraction named the wrong change"),
                               ("retracted", "retraction", "recorded against the wrong patient after all")):
        r = await http.post(f"/v1/register-changes/{moved}/{path}", headers=trust, json={"reason": reason})
        assert r.status_code == 200 and r.json()["duplicate"] is False, r.text
        made.append((what, r.json()))
        await _drain(hub)
    first, reversal, second = (answer for _what, answer in made)
    assert reversal["retraction_event_id"] == first["event_id"]

    # By the event each published (its correction carries another change of the history): that change.
    for _what, answer in made:
        r = await http.get("/v1/ops/trace", headers=admin, params={"event_id": answer["event_id"]})
        assert r.status_code == 200, r.text
        assert r.json()["changes"] == 1 and r.json()["timeline"][0]["change_id"] == moved, (answer, r.json())
        assert answer["event_id"] in [e.get("event_id") for e in r.json()["timeline"] if e["stage"] == "event-derived"]

    for query in ({"correlation_id": first["correlation_id"]}, {"correlation_id": reversal["correlation_id"]},
                  {"correlation_id": second["correlation_id"]},
                  {"source_message_id": changes[-1]["source_message_id"]}):
        r = await http.get("/v1/ops/trace", headers=admin, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["changes"] == 1, (query, body)
        assert "wrong patient" not in r.text and "wrong change" not in r.text  # no reason, ever
        timeline = body["timeline"]
        assert ("recorded", moved) in [(e["stage"], e.get("change_id")) for e in timeline]
        shown = [e for e in timeline if e["stage"] in ("retracted", "reinstated")]
        assert [(e["stage"], e["change_id"], e["correlation_id"], e["event_id"]) for e in shown] == \
            [(what, moved, answer["correlation_id"], answer["event_id"]) for what, answer in made], query
        assert all("reason" not in e for e in shown)
        # One form of time throughout the timeline (the store's), a reversed retraction's kept time too.
        assert len({e["at"][19:].lstrip(".0123456789") for e in timeline if e.get("at")}) == 1, timeline
        [back] = [e for e in shown if e["stage"] == "reinstated"]
        assert (back["reinstated_by"], back["retraction_event_id"], back["at"][:19]) == \
            ("RNU", first["event_id"], reversal["reinstated_at"][:19])
        # Each followed by the correction it published, and what each body was told of it: Buckinghamshire,
        # told of the move, is sent each correction (in a message of its own).
        for what, answer in made:
            [stage] = [i for i, e in enumerate(timeline) if e["stage"] == what and e["event_id"] == answer["event_id"]]
            event = timeline[stage + 1]
            assert (event["stage"], event["event_id"], event["change_id"], event["event_type"]) == \
                ("event-derived", answer["event_id"], moved, "s117-notification-corrected"), (what, timeline)
            after = timeline[stage + 2:]
            after = after[:next((i for i, e in enumerate(after)
                                 if e["stage"] in ("event-derived", "retracted", "reinstated")), len(after))]
            assert ("recipient-considered", BUCKS, "allowed") in \
                [(e["stage"], e.get("recipient"), e.get("decision")) for e in after], (what, after)
            assert ("delivery-queued", BUCKS) in [(e["stage"], e.get("recipient")) for e in after], (what, after)
