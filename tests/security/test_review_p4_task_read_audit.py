"""Outside review (session 26, access and notifications): a transfer's or
dispute stage's FHIR Task read (`GET /v1/fhir/Task/{id}`) was not recorded
in `access_decisions`, allowed or refused, while the same case read through
`GET /v1/transfers/{id}` is (channel `case`, README "Audit"). The Task
carries what the case view does (its bodies, the person's hub id, the state,
the clock). Probe replayed against a running hub: four Task reads (the two
bodies, a non-party ICB, a council with no agreement) wrote no row; the same
four through /v1/transfers/{id} wrote four. Now each Task read is recorded
as the plain API's is."""

from __future__ import annotations

from sqlalchemy import select

from hub.store.schema import access_decisions
from tests.unit.test_workflows_api import BUCKS, WORCS, h, workflow_hub  # noqa: F401 - the fixture

FHIR_READ = "/v1/fhir/Task/{}"


async def _case_reads(hub) -> list:  # noqa: ANN001
    async with hub.engine.connect() as conn:
        return (await conn.execute(select(access_decisions).where(access_decisions.c.channel == "case")
                                   .order_by(access_decisions.c.decision_id))).all()


async def test_a_task_read_is_audited_allowed_or_refused_as_the_case_read_is(workflow_hub):  # noqa: F811
    http, hub = workflow_hub.http, workflow_hub.hub
    case = (await http.get("/v1/transfers", headers=h(workflow_hub, WORCS))).json()["items"][0]
    before = len(await _case_reads(hub))

    for org, status in ((WORCS, 200), (BUCKS, 200), ("QU9", 404)):
        r = await http.get(FHIR_READ.format(case["fhir_task_id"]), headers=h(workflow_hub, org))
        assert r.status_code == status, r.text
    r = await http.get(FHIR_READ.format("no-such-case"), headers=h(workflow_hub, WORCS))
    assert r.status_code == 404

    rows = (await _case_reads(hub))[before:]
    assert [(r.org_code, r.action, r.decision, r.rule, r.change_type, r.person_id) for r in rows] == [
        (WORCS, "read", "allowed", "allowed", "transfer", workflow_hub.person_id),
        (BUCKS, "read", "allowed", "allowed", "transfer", workflow_hub.person_id),
        ("QU9", "read", "denied", "no-relationship", "transfer", workflow_hub.person_id),
        (WORCS, "read", "denied", "no-relationship", None, None),
    ]  # old: no row at all

    # The same reads through the plain API record the same rows (the pattern the Task read follows).
    for org in (WORCS, "QU9"):
        await http.get(f"/v1/transfers/{case['case_id']}", headers=h(workflow_hub, org))
    plain = (await _case_reads(hub))[before + len(rows):]
    assert [(r.org_code, r.decision, r.change_type, r.person_id) for r in plain] == [
        (WORCS, "allowed", "transfer", workflow_hub.person_id), ("QU9", "denied", "transfer", workflow_hub.person_id)]


async def test_a_task_update_is_not_counted_as_a_read(workflow_hub):  # noqa: F811
    """Acting on the Task (the incoming body accepts by PUT) is a write of the
    workflow, recorded in its transitions: no read row for it."""
    http, hub = workflow_hub.http, workflow_hub.hub
    case = (await http.get("/v1/transfers", headers=h(workflow_hub, WORCS))).json()["items"][0]
    before = len(await _case_reads(hub))
    task = {"resourceType": "Task", "id": case["fhir_task_id"], "status": "accepted"}
    r = await http.put(FHIR_READ.format(case["fhir_task_id"]), json=task,
                       headers={**h(workflow_hub, WORCS), "Content-Type": "application/fhir+json"})
    assert r.status_code == 200 and r.json()["status"] == "accepted", r.text
    assert len(await _case_reads(hub)) == before
