"""Outside review 30, the real path: a person of no fixed abode re-detained.

Detained from Buckinghamshire, s3, left hospital (entitled, Buckinghamshire
responsible), then of no fixed abode, then re-detained under s3 in a
Worcestershire hospital with no place of residence. The new detention ends
Buckinghamshire's duty (Worcs 4.3.3): while detained no council is
responsible and the hospital's council coordinates; on discharge the council
of the area discharged to is responsible (Bucks "If, exceptionally, no place
of residence"). The settlement is a hand-over from Buckinghamshire: the
workflows open a transfer case and Buckinghamshire is told. REST ingest, the
dispatcher, the workflows' consumer and the API, in process on SQLite."""

from __future__ import annotations

import random
from datetime import date, timedelta

from hub.clients import add_client
from hub.sample_data import detention_to_move_scenario
from tests.unit.test_review30_redetention_dispute import _drain, _h, _told

BUCKS, WORCS = "E06000060", "E10000034"
START = date(2025, 1, 6)
TRANSFERRED = "s117-responsibility-transferred"


async def test_the_settlement_after_a_no_fixed_abode_re_detention_is_a_hand_over_from_the_previous_council(
        app_hub):  # noqa: ANN001
    app, http, hub = app_hub, app_hub.http, app_hub.hub
    for org in (BUCKS, WORCS):
        app.keys[f"wf-{org}"] = (await add_client(hub.engine, org, org, "council",
                                                  ["s117:read", "workflows:write", "subscriptions:write"]))[1]
        r = await http.post("/v1/subscriptions", headers=_h(app, org), json={"channel": "feed"})
        assert r.status_code == 201, r.text
    app.keys["R1A"] = (await add_client(hub.engine, "HW Health and Care", "R1A", "trust", ["register:write"]))[1]
    admin = {"X-API-Key": (await add_client(hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]}
    changes = detention_to_move_scenario(random.Random(31), "nfa", START)[:3]  # detained, s3, left hospital
    base = {k: changes[0][k] for k in ("source_system", "person")}
    changes.append({**base, "source_message_id": "nfa-4", "change_type": "moved",
                    "effective_date": (START + timedelta(days=150)).isoformat(), "no_fixed_abode": True})
    for c in changes:
        r = await http.post("/v1/register-changes", headers={"X-API-Key": app.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    person_id = r.json()["person_id"]
    r = await http.post("/v1/register-changes", headers={"X-API-Key": app.keys["R1A"]}, json={
        **base, "source_message_id": "nfa-5", "change_type": "detained", "legal_status_code": "03",
        "effective_date": (START + timedelta(days=200)).isoformat(), "hospital_ods": "R1A", "no_fixed_abode": True})
    assert r.status_code == 202, r.text
    await _drain(app)

    # During the detention: no council responsible, the hospital's council coordinating.
    position = (await http.get(f"/v1/persons/{person_id}/s117", headers=admin)).json()
    assert position["entitled"] and position["in_hospital"]
    assert position["responsible_council"] is None  # was Buckinghamshire, whose duty the detention ended
    assert position["coordinating_council"]["org"]["code"] == WORCS
    assert not any(key.startswith("outgoing") for key in position)  # internal to the rules: never shown
    assert (await http.get("/v1/transfers", headers=_h(app, WORCS))).json()["items"] == []
    told_before = len((await _told(hub, TRANSFERRED)).get(BUCKS, []))

    # Discharged to Worcestershire: the hand-over from Buckinghamshire, a case the incoming council answers.
    r = await http.post("/v1/register-changes", headers={"X-API-Key": app.keys["R1A"]}, json={
        **base, "source_message_id": "nfa-6", "change_type": "left-hospital", "hospital_ods": "R1A",
        "effective_date": (START + timedelta(days=260)).isoformat(), "discharge_destination_la_gss": WORCS})
    assert r.status_code == 202, r.text
    await _drain(app)
    position = (await http.get(f"/v1/persons/{person_id}/s117", headers=admin)).json()
    assert position["responsible_council"]["org"]["code"] == WORCS and position["coordinating_council"] is None
    [transfer] = (await http.get("/v1/transfers", headers=_h(app, WORCS))).json()["items"]
    assert (transfer["outgoing"], transfer["incoming"], transfer["role"]) == (BUCKS, WORCS, "council")
    assert "no place of residence" in transfer["basis"]
    assert [t["case_id"] for t in (await http.get("/v1/transfers", headers=_h(app, BUCKS))).json()["items"]] == [
        transfer["case_id"]]
    told = (await _told(hub, TRANSFERRED)).get(BUCKS, [])
    assert len(told) > told_before and any(WORCS.encode() in m for m in told[told_before:])
