"""A retraction's reversal kept before a merge follows its change (hub/merges.py, hub/unmerges.py).

A detention of the superseded NHS number retracted in error and the retraction reversed, then the two
numbers merged (PDS): the kept reversal (`change_retraction_reversals`) moves with the change to the
retained person, so the same reversal asked again answers with the person now holding the change; the
merge itself reversed as made in error: the change goes back to its own person, and the kept reversal
with it. Real ingest, dispatcher and workflows' consumer on SQLite, through the API
(tests/unit/test_retraction_reversal.py's world). Failed before the move (merges.py's, and the
unmerge's): the reversal stayed with the person the change had left.
"""

from __future__ import annotations

from sqlalchemy import select

from hub.store.schema import change_retraction_reversals, register_changes
from tests.contract.test_recipient_views import world  # noqa: F401  (the fixture)
from tests.unit.test_retraction import _everyone_holds_the_truth, _settle, _wrong_patient_detention
from tests.unit.test_retraction_reversal import _retract, _reverse, _two_numbers


def test_a_reversal_made_before_a_merge_follows_the_change_and_comes_back_with_the_unmerge(world) -> None:  # noqa: ANN001
    loop, w = world

    async def held(change_id: str) -> tuple[str, list[str]]:
        async with w.hub.engine.connect() as conn:
            change = (await conn.execute(select(register_changes.c.person_id).where(
                register_changes.c.change_id == change_id))).scalar_one()
            kept = list((await conn.execute(select(change_retraction_reversals.c.person_id).where(
                change_retraction_reversals.c.change_id == change_id)
                .order_by(change_retraction_reversals.c.at))).scalars())
        return change, kept

    async def run() -> None:
        kept_pid, change_id, gone_pid, (kept_nhs, gone_nhs) = await _two_numbers(w, "after")
        await _settle(w)
        # Retracted in error and reinstated, twice (two kept reversals), on the superseded number's person.
        for _ in range(2):
            assert (await _retract(w, w.trust_key, change_id)).status_code == 200
            r = await _reverse(w, w.trust_key, change_id)
            assert r.status_code == 200 and r.json()["person_id"] == gone_pid, r.text
            await _settle(w)
        assert await held(change_id) == (gone_pid, [gone_pid, gone_pid])

        r = await w.http.post("/v1/persons/merge", headers={"X-API-Key": w.trust_key},
                              json={"retained_nhs_number": kept_nhs,
                                    "superseded_nhs_number": gone_nhs, "force": True})
        assert r.status_code == 200, r.text
        merge_id = r.json()["merge_id"]
        await _settle(w)
        assert await held(change_id) == (kept_pid, [kept_pid, kept_pid])
        r = await _reverse(w, w.trust_key, change_id)  # the latest reversal's answer: the person holding it now
        assert r.status_code == 200 and r.json()["duplicate"] is True and r.json()["person_id"] == kept_pid, r.text
        await _everyone_holds_the_truth(w, kept_pid)

        r = await w.http.post(f"/v1/persons/merges/{merge_id}/reversal", headers={"X-API-Key": w.trust_key},
                              json={"reason": "two patients"})
        assert r.status_code == 200, r.text
        await _settle(w)
        assert await held(change_id) == (gone_pid, [gone_pid, gone_pid])
        r = await _reverse(w, w.trust_key, change_id)
        assert r.status_code == 200 and r.json()["duplicate"] is True and r.json()["person_id"] == gone_pid, r.text
        await _everyone_holds_the_truth(w, gone_pid)
        await _everyone_holds_the_truth(w, kept_pid)

    loop.run_until_complete(run())
