"""Ingest: idempotency, quarantine, and the outbox written with the change."""

from __future__ import annotations

import random
from datetime import date

import orjson
from sqlalchemy import func, select

from hub.bus.port import EVENTS_TOPIC
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import bus_messages, persons, quarantine, register_changes


async def count(hub, table) -> int:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


def scenario(seed: int = 1) -> list[dict]:
    return detention_to_move_scenario(random.Random(seed), f"t-{seed}", date(2025, 1, 6))


async def test_same_source_message_twice_is_recorded_once_and_answered_alike(app_hub):
    h = {"X-API-Key": app_hub.keys["trust"]}
    change = scenario()[0]
    first = await app_hub.http.post("/v1/register-changes", headers=h, json=change)
    second = await app_hub.http.post("/v1/register-changes", headers=h, json=change)
    assert first.status_code == second.status_code == 202
    assert second.json()["change_id"] == first.json()["change_id"]
    assert second.json()["events"] == first.json()["events"]
    assert second.json()["duplicate"] is True
    assert await count(app_hub.hub, register_changes) == 1
    assert await count(app_hub.hub, bus_messages) == len(first.json()["events"])


async def test_a_source_message_id_reused_for_another_change_is_409_and_nothing_is_recorded(app_hub):
    h = {"X-API-Key": app_hub.keys["trust"]}
    first_change, other_person = scenario(1)[0], scenario(2)[0]
    first = await app_hub.http.post("/v1/register-changes", headers=h, json=first_change)
    assert first.status_code == 202
    reused = {**other_person, "source_message_id": first_change["source_message_id"], "legal_status_code": "03"}
    r = await app_hub.http.post("/v1/register-changes", headers=h, json=reused)
    assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"].endswith("/idempotency-key-reused") and body["status"] == 409
    assert body["errors"] == [{"field": "source_message_id",
                               "reason": "was already used by this source for a different register change"}]
    assert other_person["person"]["nhs_number"] not in r.text
    assert await count(app_hub.hub, register_changes) == 1
    assert await count(app_hub.hub, persons) == 1  # the second person is not silently merged or kept
    assert await count(app_hub.hub, quarantine) == 0
    # The first payload again (keys in another order) still gets the first answer.
    again = await app_hub.http.post("/v1/register-changes", headers={**h, "Content-Type": "application/json"},
                                    content=orjson.dumps(dict(reversed(list(first_change.items())))))
    assert again.status_code == 202 and again.json()["duplicate"] is True
    assert again.json()["change_id"] == first.json()["change_id"]


async def test_a_field_the_change_type_does_not_use_is_named_not_ignored(app_hub):
    h = {"X-API-Key": app_hub.keys["trust"]}
    detained = scenario(3)[0]
    # The trust's own patient (a change about someone it has no role for is refused before validation).
    r = await app_hub.http.post("/v1/register-changes", headers=h, json=detained)
    assert r.status_code == 202, r.text
    gp = {**detained, "source_message_id": "gp-1", "change_type": "gp-changed", "effective_date": "2025-01-07",
          "residence_la_gss": "E10000034", "hospital_ods": "RNU", "legal_status_code": None}
    r = await app_hub.http.post("/v1/register-changes", headers=h, json={k: v for k, v in gp.items() if v is not None})
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"residence_la_gss", "hospital_ods"}
    assert all("is not used by a 'gp-changed' change" in e["reason"] for e in r.json()["errors"])
    assert await count(app_hub.hub, quarantine) == 1


async def test_left_hospital_takes_the_gp_and_residence_at_discharge(app_hub):
    h = {"X-API-Key": app_hub.keys["trust"]}
    detained, converted, left = scenario(4)[:3]
    left = {**left, "gp_practice_ods": "M81001", "residence_la_gss": "E10000034"}
    for c in (detained, converted, left):
        r = await app_hub.http.post("/v1/register-changes", headers=h, json=c)
        assert r.status_code == 202, r.text
    person_id = r.json()["person_id"]
    status = (await app_hub.http.get(f"/v1/persons/{person_id}/s117", headers=h)).json()
    # Accepted and used (the 2013-2016 commissioner rule reads them:
    # tests/unit/domain/test_precedence.py); the council is still the one of
    # residence before the detention (Worcs 4.3.1).
    assert status["entitled"] is True
    assert "E06000060" in str(status["responsible_council"])


async def test_same_message_id_from_another_source_is_a_different_change(app_hub):
    change = scenario()[0]
    a = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=change)
    # The other trust reports its own detention (in its own hospital) of the same person.
    b = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["other-trust"]},
                                json={**change, "hospital_ods": "RV3"})
    assert a.json()["change_id"] != b.json()["change_id"]
    assert a.json()["person_id"] == b.json()["person_id"]  # same NHS number, same person
    assert await count(app_hub.hub, persons) == 1


async def test_outbox_rows_are_written_with_the_change(app_hub):
    h = {"X-API-Key": app_hub.keys["trust"]}
    responses = [(await app_hub.http.post("/v1/register-changes", headers=h, json=c)).json() for c in scenario()]
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(bus_messages.c.event_id, bus_messages.c.topic, bus_messages.c.payload)
                                   .order_by(bus_messages.c.offset))).all()
    assert [r.event_id for r in rows] == [e["event_id"] for resp in responses for e in resp["events"]]
    assert {r.topic for r in rows} == {EVENTS_TOPIC}
    # The bus carries no personal details: the NHS number is nowhere in it.
    nhs = scenario()[0]["person"]["nhs_number"]
    assert all(nhs not in str(r.payload) for r in rows)


async def test_person_details_are_encrypted_at_rest(app_hub):
    change = scenario()[0]
    await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=change)
    async with app_hub.hub.engine.connect() as conn:
        row = (await conn.execute(select(persons))).one()
    assert change["person"]["nhs_number"] not in row.nhs_number_index
    assert change["person"]["nhs_number"].encode() not in row.details
    assert change["person"]["family_name"].encode() not in row.details


async def test_rejected_input_is_quarantined_and_nothing_else_written(app_hub):
    h = {"X-API-Key": app_hub.keys["trust"]}
    good = scenario()[0]
    await app_hub.http.post("/v1/register-changes", headers=h, json=good)
    bad = {**good, "source_message_id": "bad", "person": {**good["person"], "nhs_number": "9990000010"},
           "unexpected": 1}
    r = await app_hub.http.post("/v1/register-changes", headers=h, json=bad)
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"unexpected"}
    del bad["unexpected"]
    r = await app_hub.http.post("/v1/register-changes", headers=h, json=bad)
    assert r.json()["errors"] == [{"field": "person.nhs_number", "reason": "fails the modulus-11 check digit"}]
    assert await count(app_hub.hub, quarantine) == 2
    assert await count(app_hub.hub, register_changes) == 1  # what was accepted is untouched


async def test_a_corrected_resend_after_rejection_is_accepted(app_hub):
    h = {"X-API-Key": app_hub.keys["trust"]}
    change = scenario()[0]
    bad = {**change, "legal_status_code": "11"}
    assert (await app_hub.http.post("/v1/register-changes", headers=h, json=bad)).status_code == 422
    assert (await app_hub.http.post("/v1/register-changes", headers=h, json=change)).status_code == 202


async def test_required_fields_depend_on_the_change_type(app_hub):
    h = {"X-API-Key": app_hub.keys["trust"]}
    change = {**scenario()[0]}
    del change["legal_status_code"]
    del change["residence_la_gss"]
    r = await app_hub.http.post("/v1/register-changes", headers=h, json=change)
    fields = {e["field"] for e in r.json()["errors"]}
    assert fields == {"legal_status_code", "residence_la_gss"}


async def test_future_and_impossible_dates_are_refused(app_hub):
    h = {"X-API-Key": app_hub.keys["trust"]}
    change = {**scenario()[0], "effective_date": "2999-01-01"}
    r = await app_hub.http.post("/v1/register-changes", headers=h, json=change)
    assert {"field": "effective_date", "reason": "is in the future"} in r.json()["errors"]
    change = {**scenario()[0], "effective_date": "1970-01-01"}
    r = await app_hub.http.post("/v1/register-changes", headers=h, json=change)
    assert any(e["field"] == "effective_date" and "1983" in e["reason"] for e in r.json()["errors"])
    change = {**scenario()[0], "person": {**scenario()[0]["person"], "birth_date": "2025-06-01"}}
    r = await app_hub.http.post("/v1/register-changes", headers=h, json=change)
    assert {"field": "person.birth_date", "reason": "is after the effective date of the change"} in r.json()["errors"]


async def test_code_31_needs_the_order_type(app_hub):
    h = {"X-API-Key": app_hub.keys["trust"]}
    change = {**scenario()[0], "legal_status_code": "31"}
    r = await app_hub.http.post("/v1/register-changes", headers=h, json=change)
    assert [e["field"] for e in r.json()["errors"]] == ["order_type"]
    change["order_type"] = "hospital-order"
    assert (await app_hub.http.post("/v1/register-changes", headers=h, json=change)).status_code == 202


async def test_a_change_without_person_details_does_not_erase_those_held(app_hub):
    from hub.ingest.service import load_person_details

    h = {"X-API-Key": app_hub.keys["trust"]}
    first, second = scenario()[0], scenario()[1]
    await app_hub.http.post("/v1/register-changes", headers=h, json=first)
    sparse = {**second, "person": {"nhs_number": first["person"]["nhs_number"]}}
    assert (await app_hub.http.post("/v1/register-changes", headers=h, json=sparse)).status_code == 202
    moved = {**scenario()[2], "person": {"nhs_number": first["person"]["nhs_number"], "postcode": "WR1 1AA"}}
    assert (await app_hub.http.post("/v1/register-changes", headers=h, json=moved)).status_code == 202
    async with app_hub.hub.engine.connect() as conn:
        row = (await conn.execute(select(persons.c.details))).one()
    held = load_person_details(app_hub.hub.protector, row.details)
    assert held["family_name"] == first["person"]["family_name"]
    assert held["birth_date"] == first["person"]["birth_date"]
    assert held["postcode"] == "WR1 1AA"  # what was sent replaces what was held
