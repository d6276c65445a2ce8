"""How a dispute is resolved, through the API (in process, SQLite): the
defect reproduced from outside, (a) one party resolving alone, now refused.
A party's call records a proposal (202); the dispute is resolved only when
every party agrees the same terms (Worcs 15.5 local resolution; 4.4.8,
15.6), or by the determination at the procedure's final stage, recorded by
the hub operator (Worcs 15.5 arbitration by NHS England). Nothing moves on
the register until then.
"""

from __future__ import annotations

from sqlalchemy import select

from hub.clients import add_client
from hub.store.schema import operator_actions
from tests.unit.test_workflows_api import drain, h, workflow_hub  # noqa: F401 (the fixture)

QGH, QU9 = "QGH", "QU9"


async def _keys(app_hub) -> None:  # noqa: ANN001
    """QGH (H&W ICB), as a body that may write and act on workflows."""
    for org, kind in ((QGH, "icb"),):
        app_hub.keys[f"wf-{org}"] = (await add_client(app_hub.hub.engine, org, org, kind,
                                                      ["s117:read", "workflows:write", "register:write"]))[1]




async def _raise(app_hub, org: str, kind: str, parties: list[str], person_id: str | None = None):  # noqa: ANN001, ANN202
    return await app_hub.http.post("/v1/disputes", headers=h(app_hub, org), json={
        "person_id": person_id or app_hub.person_id, "kind": kind, "parties": parties, "reason": "test"})



async def test_a_single_party_cannot_resolve_alone_every_party_must_agree_the_same_terms(workflow_hub):
    """(a): BOB ICB (responsible) raises a commissioner dispute naming H&W ICB and 'resolves' it
    alone: that only proposes; H&W ICB never acted, so nothing moved."""
    app, http = workflow_hub, workflow_hub.http
    await _keys(app)
    r = await _raise(app, QU9, "commissioner", [QU9, QGH])
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]
    await drain(app)
    terms = {"responsible": QGH, "responsible_from": "2025-01-01"}

    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=h(app, QU9), json=terms)
    assert r.status_code == 202, r.text  # recorded, not resolved
    body = r.json()
    assert body["state"] == "open" and "register_change" not in body and "reimbursement" not in body
    assert body["resolution"]["proposed_by"] == QU9 and body["resolution"]["awaiting"] == [QGH]
    assert [t["action"] for t in body["transitions"]] == ["agree-resolution"]
    # Saying it again is not agreement: refused, naming the rule and the paragraph.
    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=h(app, QU9), json=terms)
    assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["rule"] == "awaiting-agreement" and "Worcs 15.5" in r.json()["citation"]
    assert QGH in r.json()["detail"]
    # Escalating to the last stage alone does not let it resolve alone either.
    for _ in range(2):
        assert (await http.post(f"/v1/disputes/{case_id}/escalate", headers=h(app, QU9))).status_code == 200
    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=h(app, QU9), json=terms)
    assert r.status_code == 409 and r.json()["rule"] == "awaiting-agreement"
    await drain(app)
    # Nothing moved: QU9 still responsible, no commissioner transfer, the dispute still open.
    position = (await http.get(f"/v1/persons/{app.person_id}/s117",
                               headers={"X-API-Key": app.keys["trust"]})).json()
    assert position["responsible_commissioner"]["org"]["code"] == QU9 and position["open_disputes"]
    assert (await http.get("/v1/transfers", headers=h(app, QGH))).json()["items"] == []

    # H&W ICB proposes other terms: they replace the proposal; the same terms from BOB resolve it.
    other = {"responsible": QU9, "responsible_from": "2025-01-01"}
    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=h(app, QGH), json=other)
    assert r.status_code == 202 and r.json()["resolution"]["proposed_by"] == QGH
    assert r.json()["resolution"]["awaiting"] == [QU9]
    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=h(app, QU9), json=other)
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["state"] == "resolved" and done["responsible"] == QU9 and done["resolution"] is None
    assert done["register_change"]["status"] == "accepted" and done["reimbursement"]["payer"] == QU9
    assert "agreed by every party" in done["transitions"][-1]["explanation"]
    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=h(app, QGH), json=other)
    assert r.status_code == 409 and r.json()["rule"] == "case-closed"


async def test_two_parties_agreeing_move_responsibility_and_open_the_transfer_accepted(workflow_hub):
    app, http = workflow_hub, workflow_hub.http
    await _keys(app)
    case_id = (await _raise(app, QU9, "commissioner", [QU9, QGH])).json()["case_id"]
    terms = {"responsible": QGH, "responsible_from": "2025-01-01"}
    assert (await http.post(f"/v1/disputes/{case_id}/resolve", headers=h(app, QU9), json=terms)).status_code == 202
    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=h(app, QGH), json=terms)
    assert r.status_code == 200 and r.json()["state"] == "resolved"
    await drain(app)
    position = (await http.get(f"/v1/persons/{app.person_id}/s117",
                               headers={"X-API-Key": app.keys["trust"]})).json()
    assert position["responsible_commissioner"]["org"]["code"] == QGH
    [moved] = (await http.get("/v1/transfers", headers=h(app, QGH))).json()["items"]
    assert (moved["role"], moved["outgoing"], moved["incoming"], moved["state"]) == (
        "commissioner", QU9, QGH, "accepted")


async def test_the_final_stage_determination_is_recorded_by_the_hub_operator_only_at_that_stage(workflow_hub):
    app, http = workflow_hub, workflow_hub.http
    await _keys(app)
    admin = {"X-API-Key": app.keys["admin"]}
    case_id = (await _raise(app, QU9, "commissioner", [QU9, QGH])).json()["case_id"]
    determined = {"responsible": QGH, "responsible_from": "2025-01-01",
                  "determination": "NHS England arbitration, reference NHSE-ARB-117"}
    # At local resolution there is no determination to record: the parties agree, or escalate.
    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=admin, json=determined)
    assert r.status_code == 409 and r.json()["rule"] == "not-at-final-stage"
    assert "Worcs 15.5" in r.json()["citation"]
    for _ in range(2):
        assert (await http.post(f"/v1/disputes/{case_id}/escalate", headers=h(app, QGH))).status_code == 200
    # A party cannot record the determination for the arbitrating body.
    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=h(app, QU9), json=determined)
    assert r.status_code == 403 and r.json()["rule"] == "determining-body-only" and r.json()["citation"]
    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=admin,
                        json={k: v for k, v in determined.items() if k != "determination"})
    assert r.status_code == 422 and r.json()["rule"] == "determination-required"
    r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=admin, json=determined)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "resolved" and body["responsible"] == QGH
    assert body["determined_by"] == "NHS England: NHS England arbitration, reference NHSE-ARB-117"
    assert body["register_change"]["status"] == "accepted"
    case = (await http.get(f"/v1/disputes/{case_id}", headers=h(app, QGH))).json()
    assert case["history"][-1]["actor"] == "hub:determination"
    assert "NHS England" in case["history"][-1]["explanation"]
    async with app.hub.engine.connect() as conn:  # the operator's act is audited, without the free text
        acts = (await conn.execute(select(operator_actions.c.action, operator_actions.c.target,
                                          operator_actions.c.detail))).all()
        await conn.rollback()
    assert [(x.action, x.target, x.detail["responsible"]) for x in acts] == [
        ("dispute-determination-recorded", case_id, QGH)]
    await drain(app)
    position = (await http.get(f"/v1/persons/{app.person_id}/s117",
                               headers={"X-API-Key": app.keys["trust"]})).json()
    assert position["responsible_commissioner"]["org"]["code"] == QGH
