"""A repeated source_message_id is a duplicate when it says the same change,
however it is written (hub/ingest/service.py `validated_digest`,
contract.change_digest): the NHS number spaced, an explicit null where the
default is meant. It got 409 "already used for a different register change"
(the raw payloads were compared). A different change under the same id is
still a 409, and an answer recorded before (its digest the raw payload's)
still matches an exact resend. A source_message_id the contract refuses (a
NUL) is neither looked up nor kept (PostgreSQL refuses a NUL in text: a 500)."""

from __future__ import annotations

from sqlalchemy import select, update

from hub.ingest.service import payload_sha256
from hub.store.schema import ingest_results, quarantine
from tests.support import detention

NHS = "9991100016"  # synthetic, the 999 test range


async def test_the_same_change_written_otherwise_is_a_duplicate_a_different_one_a_409(app_hub) -> None:  # noqa: ANN001
    trust = {"X-API-Key": app_hub.keys["trust"]}
    first = detention(NHS, "idm")[0]
    r = await app_hub.http.post("/v1/register-changes", headers=trust, json=first)
    assert r.status_code == 202
    spaced = {**first, "person": {**first["person"], "nhs_number": "999 110 0016"}, "notified_on": None}
    again = await app_hub.http.post("/v1/register-changes", headers=trust, json=spaced)
    assert again.status_code == 202 and again.json()["duplicate"] is True
    assert again.json()["change_id"] == r.json()["change_id"]
    other = await app_hub.http.post("/v1/register-changes", headers=trust, json={**first, "effective_date": "2025-01-07"})
    assert other.status_code == 409 and other.json()["errors"][0]["field"] == "source_message_id"


async def test_an_answer_recorded_with_the_raw_payloads_digest_still_matches_an_exact_resend(app_hub) -> None:  # noqa: ANN001
    trust = {"X-API-Key": app_hub.keys["trust"]}
    first = detention(NHS, "idr")[0]
    assert (await app_hub.http.post("/v1/register-changes", headers=trust, json=first)).status_code == 202
    async with app_hub.hub.engine.begin() as conn:  # as an older hub stored it
        await conn.execute(update(ingest_results).where(ingest_results.c.source_message_id == first["source_message_id"])
                           .values(payload_sha256=payload_sha256(first)))
    again = await app_hub.http.post("/v1/register-changes", headers=trust, json=first)
    assert again.status_code == 202 and again.json()["duplicate"] is True


async def test_a_source_message_id_the_contract_refuses_is_not_kept_with_the_quarantined_input(app_hub) -> None:  # noqa: ANN001
    trust = {"X-API-Key": app_hub.keys["trust"]}
    bad = {**detention(NHS, "idn")[0], "source_message_id": "idn\x00-1"}
    r = await app_hub.http.post("/v1/register-changes", headers=trust, json=bad)
    assert r.status_code == 422
    assert any(e["field"] == "source_message_id" for e in r.json()["errors"])
    async with app_hub.hub.engine.connect() as conn:
        kept = (await conn.execute(select(quarantine.c.source_message_id)
                                   .where(quarantine.c.quarantine_id == r.json()["quarantine_id"]))).scalar_one()
    assert kept is None
