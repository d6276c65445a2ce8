"""A successor of a split council named, the naming retracted as recorded in error, the retraction reversed
(hazard H-03): the responsible council follows each step (the successor, none with the hospital's council
coordinating, the successor again), each step publishes one correction, and a duplicate reversal changes
nothing. Probes of the review of H-03 (no defect found)."""

from __future__ import annotations

from sqlalchemy import select

from hub.store.schema import bus_messages
from tests.unit.test_split_successor_channels import CUMBERLAND, NHS, OXFORDSHIRE, position, split_person


async def _corrections(app_hub) -> list[dict]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(select(bus_messages.c.headers).order_by(bus_messages.c.offset))).all()
    return [h for (h,) in rows if h.get("event_type") == "s117-notification-corrected"]


async def test_a_naming_retracted_and_the_retraction_reversed_moves_the_council_each_time_once(app_hub, capsys):
    person_id = await split_person(app_hub)
    trust = {"X-API-Key": app_hub.keys["trust"]}
    r = await app_hub.http.post("/v1/register-changes", headers=trust, json={
        "source_system": "RiO", "source_message_id": "name-1", "change_type": "moved",
        "effective_date": "2026-01-05", "person": {"nhs_number": NHS},
        "residence_before_detention_la_gss": CUMBERLAND})
    assert r.status_code == 202 and "warnings" not in r.json(), r.text
    change_id = r.json()["change_id"]
    body = await position(app_hub, person_id)
    assert body["responsible_council"]["org"]["code"] == CUMBERLAND and body.get("coordinating_council") is None

    r = await app_hub.http.post(f"/v1/register-changes/{change_id}/retraction", headers=trust,
                                json={"reason": "recorded in error"})
    assert r.status_code in (200, 202), r.text
    body = await position(app_hub, person_id)
    assert body["responsible_council"] is None
    assert body["coordinating_council"]["org"]["code"] == OXFORDSHIRE
    assert [u["role"] for u in body["responsibility_undetermined"]] == ["responsible-council"]
    assert len(await _corrections(app_hub)) == 1

    for _ in range(2):  # the same reversal again: the first answer, nothing published again
        r = await app_hub.http.post(f"/v1/register-changes/{change_id}/retraction/reversal", headers=trust,
                                    json={"reason": "retracted in error"})
        assert r.status_code == 200, r.text
    body = await position(app_hub, person_id)
    assert body["responsible_council"]["org"]["code"] == CUMBERLAND and body.get("coordinating_council") is None
    assert "responsibility_undetermined" not in body or body["responsibility_undetermined"] == []
    corrections = await _corrections(app_hub)
    assert len(corrections) == 2
    assert any("reinstated" in h for h in corrections[1:]), corrections
    logged = capsys.readouterr()
    assert "register change retracted" in logged.err  # the logs are read: nothing personal in them
    for value in (NHS, NHS.replace(" ", ""), "Grace", "Hopper", "recorded in error", "retracted in error"):
        assert value not in logged.out + logged.err, value
