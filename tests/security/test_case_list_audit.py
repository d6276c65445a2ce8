"""Case lists (`GET /v1/transfers`, `GET /v1/disputes`) show each listed
case's bodies, the person's hub id, its reasons and clock: a read. They were
not recorded in `access_decisions`, allowed or refused (the outside review of
session 26). Each list request is now one row (channel `case`, action `list`,
the kind as the change type, no one person: the console polls the lists every
5 s, and a row a case would grow the audit by the cases x 17,280 a day)."""

from __future__ import annotations

from sqlalchemy import select

from hub.store.schema import access_decisions
from tests.unit.test_workflows_api import BUCKS, WORCS, h, workflow_hub  # noqa: F401 - the fixture


async def _lists(hub) -> list:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        return (await conn.execute(select(access_decisions).where(access_decisions.c.action == "list")
                                   .order_by(access_decisions.c.decision_id))).all()


async def test_each_case_list_is_recorded_allowed_or_refused(workflow_hub):  # noqa: F811
    http, hub = workflow_hub.http, workflow_hub.hub
    assert await _lists(hub) == []
    r = await http.get("/v1/transfers", headers=h(workflow_hub, WORCS))
    assert r.status_code == 200 and r.json()["items"], r.text
    r = await http.get("/v1/disputes", headers=h(workflow_hub, BUCKS))
    assert r.status_code == 200, r.text
    r = await http.get("/v1/transfers", params={"org": WORCS}, headers=h(workflow_hub, BUCKS))
    assert r.status_code == 403, r.text  # another organisation's list
    rows = await _lists(hub)
    assert [(r.org_code, r.channel, r.decision, r.rule, r.change_type, r.person_id) for r in rows] == [
        (WORCS, "case", "allowed", "allowed", "transfer", None),
        (BUCKS, "case", "allowed", "allowed", "dispute", None),
        (BUCKS, "case", "denied", "no-relationship", "transfer", None),
    ]
    assert all(r.correlation_id for r in rows)
