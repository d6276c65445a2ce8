"""The hub's own record of a transfer's or dispute's outcome or of a party's action (a register change
whose source is the workflows, `hub:workflows`) is corrected on its case, never retracted: the operator's
retraction of one is a 409 `recorded-by-a-case` naming `change_id`, and nothing changes (before, it was
retracted: the register showed no dispute while its case stayed open, its clock running); a body's key
(a trust's here) gets the 404 an unknown change gets, as for any change its organisation did not record."""

from __future__ import annotations

from sqlalchemy import func, select

from hub.domain.workflows.model import WORKFLOW_SOURCE
from hub.store.schema import change_retractions, register_changes
from tests.unit.test_dispute_withdrawn_on_retraction import (  # noqa: F401 - the fixture
    BUCKS, WORCS, _case, disputed_hub, drain, h,
)


async def test_the_hubs_record_of_a_bodys_dispute_is_not_retracted(disputed_hub):  # noqa: F811
    app, http = disputed_hub, disputed_hub.http
    r = await http.post("/v1/disputes", headers=h(app, BUCKS),
                        json={"person_id": app.person_id, "kind": "council", "parties": [BUCKS, WORCS],
                              "reason": "ordinary residence before the detention"})
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]
    await drain(app)
    async with app.hub.engine.connect() as conn:
        (change_id,) = (await conn.execute(select(register_changes.c.change_id).where(
            register_changes.c.source == WORKFLOW_SOURCE, register_changes.c.change_type == "dispute-raised"))).one()
        await conn.rollback()

    r = await http.post(f"/v1/register-changes/{change_id}/retraction", headers={"X-API-Key": app.keys["admin"]},
                        json={"reason": "raised in error"})  # the operator
    assert r.status_code == 409, r.text
    assert r.json()["type"].endswith("/recorded-by-a-case") and r.json()["errors"][0]["field"] == "change_id"
    r = await http.post(f"/v1/register-changes/{change_id}/retraction", headers={"X-API-Key": app.keys["trust"]},
                        json={"reason": "raised in error"})
    assert r.status_code == 404, r.text  # a body's key: as for any change its organisation did not record
    async with app.hub.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(change_retractions))).scalar_one() == 0
        await conn.rollback()
    assert (await _case(app, case_id))["state"] == "open"
