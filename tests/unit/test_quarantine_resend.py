"""An input held in quarantine and sent again byte for byte (a REST client's retry, an engine resending
after its AE) gets the first one's answer and quarantine id, and the quarantine holds it once
(hub/ingest/service.py `_held_copy`); another input under the same source message id, or the same one
after the first was resolved, is held anew."""

from __future__ import annotations

import orjson
from sqlalchemy import func, select

from hub.store.schema import quarantine

BAD = {"source_system": "RiO (demo)", "source_message_id": "q-resend-1", "change_type": "detained",
       "effective_date": "2025-01-10", "legal_status_code": "11", "hospital_ods": "RNU",
       "residence_la_gss": "E06000060",
       "person": {"nhs_number": "9990001006", "given_name": "Test", "family_name": "Resend"}}


async def _post(app_hub, body: dict) -> dict:  # noqa: ANN001
    r = await app_hub.http.post("/v1/register-changes", content=orjson.dumps(body),
                                headers={"X-API-Key": app_hub.keys["trust"], "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    return r.json()


async def _held(app_hub) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(quarantine)
                                .where(quarantine.c.status == "held"))).scalar_one()
        await conn.rollback()
    return n


async def test_the_same_input_again_gets_the_first_quarantine_id_and_is_held_once(app_hub):
    first = await _post(app_hub, BAD)
    again = await _post(app_hub, BAD)
    assert again["quarantine_id"] == first["quarantine_id"]
    assert again["errors"] == first["errors"]
    assert await _held(app_hub) == 1
    # Another input under the same source message id: held on its own.
    other = await _post(app_hub, {**BAD, "legal_status_code": "98"})
    assert other["quarantine_id"] != first["quarantine_id"]
    assert await _held(app_hub) == 2
    # Once the first is discarded, the same input again is held anew.
    r = await app_hub.http.post(f"/v1/quarantine/{first['quarantine_id']}/discard",
                                headers={"X-API-Key": app_hub.keys["trust"]}, json={"reason": "sent in error"})
    assert r.status_code == 200, r.text
    anew = await _post(app_hub, BAD)
    assert anew["quarantine_id"] not in (first["quarantine_id"], other["quarantine_id"])
    assert await _held(app_hub) == 2


async def test_an_input_without_a_usable_source_message_id_is_held_each_time(app_hub):
    """Nothing to match it by: every copy is held (as before)."""
    body = {**BAD, "source_message_id": " padded "}
    first = await _post(app_hub, body)
    again = await _post(app_hub, body)
    assert again["quarantine_id"] != first["quarantine_id"]
    assert await _held(app_hub) == 2
