"""Who may retract a register change (POST /v1/register-changes/{id}/retraction):
the organisation whose client recorded it (any of its keys) and the hub
operator. Another trust, a council, or a body with no part in it gets the
answer an unknown change id gets: the same 404 body, no sooner than the write
refusal floor, nothing retracted, the refusal audited naming no one."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select

from hub.clients import add_client
from hub.store.schema import access_decisions, change_retractions, operator_actions
from tests.contract.test_recipient_views import world  # noqa: F401  (the fixture)
from tests.histories import BUCKS, GP, materialise


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("instance", "correlation_id")}


def test_only_the_recording_organisation_and_the_operator_may_retract(world) -> None:  # noqa: ANN001
    loop, w = world

    async def run() -> None:
        engine = w.hub.engine
        trust = (await add_client(engine, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"]))[1]
        same_org = (await add_client(engine, "Oxford Health RiO", "RNU", "trust", ["register:write"]))[1]
        other_trust = (await add_client(engine, "Worcs trust", "R1A", "trust", ["register:write", "s117:read"]))[1]
        council = (await add_client(engine, "Bucks", BUCKS, "council", ["register:write", "s117:read"]))[1]
        reader = (await add_client(engine, "Bucks reader", BUCKS, "council", ["s117:read"]))[1]
        operator = (await add_client(engine, "Operator", "HUB", "hub-operator", ["hub:admin"]))[1]
        changes = materialise([
            {"effective_date": "2024-09-02", "change_type": "detained", "legal_status_code": "03",
             "hospital_ods": "RNU", "residence_la_gss": BUCKS, "gp_practice_ods": GP[BUCKS]},
            {"effective_date": "2024-10-01", "change_type": "detained", "legal_status_code": "37",
             "hospital_ods": "RNU", "residence_la_gss": BUCKS, "gp_practice_ods": GP[BUCKS]},
        ], "access", seed=11)
        ids = []
        for change in changes:
            r = await w.http.post("/v1/register-changes", headers={"X-API-Key": trust}, json=change)
            assert r.status_code == 202, r.text
            ids.append(r.json()["change_id"])

        async def retract(key: str, change_id: str) -> Any:
            return await w.http.post(f"/v1/register-changes/{change_id}/retraction", headers={"X-API-Key": key},
                                     json={"reason": "entered against the wrong patient"})

        started = time.monotonic()
        unknown = await retract(trust, "00000000-0000-4000-8000-000000000000")
        assert time.monotonic() - started >= w.hub.settings.write_refusal_floor_ms / 1000
        assert unknown.status_code == 404
        assert unknown.headers["content-type"].startswith("application/problem+json")
        for key in (other_trust, council):
            started = time.monotonic()
            r = await retract(key, ids[0])
            assert time.monotonic() - started >= w.hub.settings.write_refusal_floor_ms / 1000
            assert r.status_code == 404, r.text
            assert _comparable(r.json()) == _comparable(unknown.json())
        r = await retract(reader, ids[0])  # no register:write: the scope's 403, whatever the change
        assert r.status_code == 403
        r = await retract(reader, "00000000-0000-4000-8000-000000000000")
        assert r.status_code == 403
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(change_retractions))).scalar_one() == 0
            refused = (await conn.execute(select(access_decisions.c.person_id, access_decisions.c.rule).where(
                access_decisions.c.action == "retract", access_decisions.c.decision == "denied"))).all()
        assert [tuple(r) for r in refused] == [(None, "no-relationship")] * 3

        # Another key of the organisation that recorded it may; so may the operator (audited as an operator action).
        r = await retract(same_org, ids[0])
        assert r.status_code == 200 and r.json()["duplicate"] is False, r.text
        r = await retract(operator, ids[1])
        assert r.status_code == 200 and r.json()["retracted_by"] == "HUB", r.text
        async with engine.connect() as conn:
            actions = (await conn.execute(select(operator_actions.c.action, operator_actions.c.target))).all()
        assert [tuple(a) for a in actions] == [("register-change-retract", ids[1])]
        # Retracted already: another organisation still gets the unknown id's answer, not "retracted".
        r = await retract(other_trust, ids[0])
        assert r.status_code == 404 and _comparable(r.json()) == _comparable(unknown.json())

    loop.run_until_complete(run())
