"""Review (quarantine triage): resubmit and discard checked that the input was
`held`, then (after ingesting the correction) updated it without looking
again: two resubmissions at the same moment (the source and the operator, or
a retried request) both went through ingest, two changes recorded for one held
input and both answered as its resolution. Now the input is claimed by an
UPDATE whose WHERE names the state expected: of two at once one goes through,
the other is 409 naming the state it found, and only one change is recorded.
On the real app and SQLite, the requests concurrent (asyncio.gather); the
window between the check and the update is held open (`_wide_window`: ingest
waits, up to a second, for a second caller to arrive) so that the interleaving
the review found happens every time, not by luck of the scheduler."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from hub.clients import add_client
from hub.store.schema import quarantine, register_changes
from tests.support import detention

NHS = "9991100016"


async def _held(app_hub, smid: str) -> tuple[str, dict]:  # noqa: ANN001
    bad = {**detention(NHS, smid)[0], "legal_status_code": "XX"}
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=bad)
    assert r.status_code == 422, r.text
    return r.json()["quarantine_id"], bad


async def _changes(app_hub) -> int:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(register_changes))).scalar_one()


def _wide_window(app_hub, monkeypatch) -> None:  # noqa: ANN001
    """Ingest (what a resubmission runs between its check and its update) waits for another request
    to reach it, or a second at most: a second resubmission (or a discard) runs meanwhile."""
    original, arrived, both = app_hub.hub.ingest.accept, [], asyncio.Event()

    async def accept(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        arrived.append(1)
        if len(arrived) >= 2:
            both.set()
        try:
            await asyncio.wait_for(both.wait(), 1.0)
        except TimeoutError:
            pass
        return await original(*args, **kwargs)

    monkeypatch.setattr(app_hub.hub.ingest, "accept", accept)


def _conflict(r) -> str:  # noqa: ANN001
    assert r.status_code == 409, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()["state"]


async def test_two_resubmissions_at_once_one_goes_through_the_other_is_409(app_hub, monkeypatch):
    held, bad = await _held(app_hub, "race-1")
    _wide_window(app_hub, monkeypatch)
    _, admin = await add_client(app_hub.hub.engine, "Engineer", "HUB", "hub-operator", ["hub:admin", "register:write"])
    before = await _changes(app_hub)
    # The source and the operator correct it at the same moment, differently (two source message ids).
    source, operator = await asyncio.gather(
        app_hub.http.post(f"/v1/quarantine/{held}/resubmit", headers={"X-API-Key": app_hub.keys["trust"]},
                          json={**bad, "source_message_id": "race-1a", "legal_status_code": "03"}),
        app_hub.http.post(f"/v1/quarantine/{held}/resubmit", headers={"X-API-Key": admin},
                          json={**bad, "source_message_id": "race-1b", "legal_status_code": "03"}))
    answers = sorted([source, operator], key=lambda r: r.status_code)
    assert await _changes(app_hub) == before + 1  # one correction recorded, not two
    assert answers[0].status_code == 202, answers[0].text
    assert _conflict(answers[1]) in ("resubmitting", "resubmitted")
    row = (await app_hub.http.get(f"/v1/quarantine/{held}", headers={"X-API-Key": app_hub.keys["trust"]})).json()
    assert (row["status"], row["resolved_by"]) == ("resubmitted", answers[0].json()["change_id"])


async def test_a_discard_and_a_resubmission_at_once_one_wins(app_hub, monkeypatch):
    held, bad = await _held(app_hub, "race-2")
    _wide_window(app_hub, monkeypatch)
    trust = {"X-API-Key": app_hub.keys["trust"]}
    before = await _changes(app_hub)
    resubmitted, discarded = await asyncio.gather(
        app_hub.http.post(f"/v1/quarantine/{held}/resubmit", headers=trust,
                          json={**bad, "source_message_id": "race-2a", "legal_status_code": "03"}),
        app_hub.http.post(f"/v1/quarantine/{held}/discard", headers=trust, json={"reason": "sent twice"}))
    row = (await app_hub.http.get(f"/v1/quarantine/{held}", headers=trust)).json()
    if resubmitted.status_code == 202:
        assert _conflict(discarded) in ("resubmitting", "resubmitted")
        assert row["status"] == "resubmitted" and await _changes(app_hub) == before + 1
    else:
        assert discarded.status_code == 200 and _conflict(resubmitted) == "discarded"
        assert row["status"] == "discarded" and await _changes(app_hub) == before


async def test_two_discards_at_once_and_a_claim_left_behind(app_hub):
    held, bad = await _held(app_hub, "race-3")
    trust = {"X-API-Key": app_hub.keys["trust"]}
    a, b = await asyncio.gather(
        *(app_hub.http.post(f"/v1/quarantine/{held}/discard", headers=trust, json={"reason": why})
          for why in ("duplicate", "sent in error")))
    ok, refused = sorted([a, b], key=lambda r: r.status_code)
    assert ok.status_code == 200 and _conflict(refused) == "discarded"
    assert "is discarded already" in refused.json()["detail"]

    # A claim whose request is gone (the process stopped mid-ingest) is taken over once it has expired.
    other, bad = await _held(app_hub, "race-4")
    async with app_hub.hub.engine.begin() as conn:
        await conn.execute(quarantine.update().where(quarantine.c.quarantine_id == other).values(
            status="resubmitting", resolved_at=datetime.now(UTC), resolved_by="claim"))
    r = await app_hub.http.post(f"/v1/quarantine/{other}/discard", headers=trust, json={"reason": "duplicate"})
    assert _conflict(r) == "resubmitting" and "being resubmitted" in r.json()["detail"]
    async with app_hub.hub.engine.begin() as conn:
        await conn.execute(quarantine.update().where(quarantine.c.quarantine_id == other).values(
            resolved_at=datetime.now(UTC) - timedelta(hours=1)))
    r = await app_hub.http.post(f"/v1/quarantine/{other}/resubmit", headers=trust,
                                json={**bad, "source_message_id": "race-4a", "legal_status_code": "03"})
    assert r.status_code == 202, r.text
