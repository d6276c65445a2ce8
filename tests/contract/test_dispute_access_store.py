"""Raising and resolving disputes on SQLite and PostgreSQL: the raiser's
relationship is read from the store (the person's register changes and their
open transfer cases), a former body is refused with the unknown person's 404
and the refusal audited, and a dispute is resolved only when both parties
have agreed the same outcome (Worcs 15.5), the proposal kept in the case row
between the two calls."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hub.clients import add_client
from hub.store.schema import access_decisions
from tests.unit.test_workflows_api import BUCKS, WORCS, drain, redetention_in_worcs

pytestmark = pytest.mark.integration


async def test_a_raise_needs_a_relationship_today_and_a_resolution_both_parties(store_hub):
    http, hub = store_hub.http, store_hub.hub
    keys = {org: (await add_client(hub.engine, org, org, "council", ["s117:read", "workflows:write"]))[1]
            for org in (BUCKS, WORCS)}
    r1a = (await add_client(hub.engine, "HW Health and Care", "R1A", "trust", ["register:write"]))[1]
    changes, again = redetention_in_worcs("cda")
    for c in [*changes, again]:
        r = await http.post("/v1/register-changes", json=c,
                            headers={"X-API-Key": r1a if c is again else store_hub.keys["trust"]})
        assert r.status_code == 202, r.text
    person_id = r.json()["person_id"]
    await drain(store_hub)

    def raise_as(org: str, pid: str = person_id):  # noqa: ANN202
        return http.post("/v1/disputes", headers={"X-API-Key": keys[org]}, json={
            "person_id": pid, "kind": "council", "parties": [BUCKS, WORCS], "reason": "ordinary residence"})

    # Bucks is the outgoing body of the open transfer: it may raise (the store's open transfer case).
    r = await raise_as(BUCKS)
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]
    outcome = {"responsible": WORCS, "responsible_from": changes[0]["effective_date"]}
    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers={"X-API-Key": keys[BUCKS]}, json=outcome)
    assert r.status_code == 202 and r.json()["resolution"]["awaiting"] == [WORCS]
    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers={"X-API-Key": keys[BUCKS]}, json=outcome)
    assert r.status_code == 409 and r.json()["rule"] == "awaiting-agreement"
    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers={"X-API-Key": keys[WORCS]}, json=outcome)
    assert r.status_code == 200 and r.json()["state"] == "resolved", r.text
    await drain(store_hub)

    # Worcestershire accepts the transfer: Bucks has no relationship left, and regains none by raising.
    [transfer] = (await http.get("/v1/transfers", headers={"X-API-Key": keys[WORCS]})).json()["items"]
    r = await http.post(f"/v1/transfers/{transfer['case_id']}/accept", headers={"X-API-Key": keys[WORCS]})
    assert r.status_code == 200, r.text
    refused, unknown = await raise_as(BUCKS), await raise_as(BUCKS, "no-such-person")
    assert refused.status_code == unknown.status_code == 404
    assert refused.json()["detail"] == unknown.json()["detail"]
    assert (await raise_as(WORCS)).status_code == 201  # responsible now
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(access_decisions.c.org_code, access_decisions.c.decision,
                                          access_decisions.c.rule, access_decisions.c.role,
                                          access_decisions.c.person_id)
                                   .where(access_decisions.c.change_type == "dispute-raised",
                                          access_decisions.c.channel == "rest")
                                   .order_by(access_decisions.c.decision_id))).all()
        await conn.rollback()
    assert [tuple(x) for x in rows] == [
        (BUCKS, "allowed", "allowed", "transfer-body", person_id),
        (BUCKS, "denied", "no-relationship", None, person_id),
        (BUCKS, "denied", "no-relationship", None, None),
        (WORCS, "allowed", "allowed", "responsible-council", person_id),
    ]
