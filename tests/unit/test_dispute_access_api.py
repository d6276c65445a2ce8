"""Who may raise a dispute, and what being named in one gives, through the
API (in process, SQLite). Two of the defects reproduced from outside, each
now refused:
(b) a body with no relationship conscripted by being named: it sees the case
    (to answer it) and, with an agreement, the person while the dispute is
    open; it may write nothing about the person, and reads nothing once the
    dispute is resolved (not a past party for it); parties must be bodies of
    the dispute's kind (Worcs 4.3.4, 15.4; 4.4.8, 15.5);
(c) a former body regaining access by raising a dispute: refused with the
    404 an unknown person gets, audited as a refused decision.
A dispute opened by a contest still opens, and its parties (the two bodies
the rules named) keep their write.
"""

from __future__ import annotations

from datetime import timedelta

import yaml
from sqlalchemy import select

from hub.clients import add_client
from hub.settings import REPO_ROOT
from hub.sharing import SharingAgreements
from hub.store.schema import access_decisions
from hub.domain.dates import england_day
from tests.unit.test_workflows_api import BUCKS, WORCS, drain, h, workflow_hub  # noqa: F401 (the fixture)

BHAM, QGH, QU9 = "E08000025", "QGH", "QU9"
SAME_404 = ("type", "title", "status", "detail")


async def _keys(app_hub) -> None:  # noqa: ANN001
    """QGH (H&W ICB) and Birmingham, as bodies that may write and act on workflows."""
    for org, kind in ((QGH, "icb"), (BHAM, "council")):
        app_hub.keys[f"wf-{org}"] = (await add_client(app_hub.hub.engine, org, org, kind,
                                                      ["s117:read", "workflows:write", "register:write"]))[1]


def _grant(app_hub, org: str) -> None:  # noqa: ANN001
    """A data-sharing agreement for `org` (Birmingham has none in the sample), so reads turn on the role alone."""
    doc = yaml.safe_load((REPO_ROOT / "contracts" / "data-sharing-agreements.yaml").read_text())
    doc["agreements"].append({"id": f"DSA-TEST-{org}", "title": "test", "legal_basis": "test",
                              "valid_from": "2020-01-01",
                              "recipients": [{"org_code": org, "events": ["*"],
                                              "field_groups": ["identity", "responsibility", "workflow"]}]})
    app_hub.hub.sharing = SharingAgreements.from_document(doc)


def _moved(app_hub, message_id: str) -> dict:  # noqa: ANN001
    return {"source_system": "Mosaic", "source_message_id": message_id, "change_type": "moved",
            "effective_date": "2025-09-01", "person": app_hub.person, "residence_la_gss": BHAM}


async def _raise(app_hub, org: str, kind: str, parties: list[str], person_id: str | None = None):  # noqa: ANN001, ANN202
    return await app_hub.http.post("/v1/disputes", headers=h(app_hub, org), json={
        "person_id": person_id or app_hub.person_id, "kind": kind, "parties": parties, "reason": "test"})


async def _position(app_hub, org: str, as_of: str | None = None):  # noqa: ANN001, ANN202
    url = f"/v1/persons/{app_hub.person_id}/s117" + (f"?as_of={as_of}" if as_of else "")
    return await app_hub.http.get(url, headers=h(app_hub, org))


async def test_a_named_body_sees_the_case_and_the_person_while_open_but_writes_nothing(workflow_hub):
    """(b): Worcestershire (responsible) names Birmingham in a council dispute. Birmingham sees the
    case (to answer it) and, with an agreement, the person while the dispute is open; it may not
    record changes about the person; once resolved it reads nothing, not even as_of a day inside
    the dispute."""
    app, http = workflow_hub, workflow_hub.http
    await _keys(app)
    _grant(app, BHAM)
    assert (await _position(app, BHAM)).status_code == 404  # no relationship yet
    r = await _raise(app, WORCS, "council", [WORCS, BHAM])
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]
    await drain(app)
    r = await http.get(f"/v1/disputes/{case_id}", headers=h(app, BHAM))
    assert r.status_code == 200 and r.json()["reason"] == "test"
    r = await _position(app, BHAM)
    assert r.status_code == 200 and r.json()["open_disputes"]
    # Named, not related: no register change about the person.
    r = await http.post("/v1/register-changes", headers=h(app, BHAM), json=_moved(app, "bham-1"))
    assert r.status_code == 403 and r.json()["rule"] == "no-relationship"
    during = app.hub.workflows.clock.today().isoformat()

    # A body's own register record of an outcome (here the trust's, not even a party) settles nothing:
    # a dispute raised through the workflows is resolved there.
    case = (await http.get(f"/v1/disputes/{case_id}", headers=h(app, WORCS))).json()
    resolved = {"source_system": "RiO", "source_message_id": "bham-resolved", "change_type": "dispute-resolved",
                "effective_date": during, "person": app.person,
                "dispute": {"dispute_id": case["dispute_id"], "kind": "council", "parties": [WORCS, BHAM],
                            "resolved_responsible": WORCS}}
    r = await http.post("/v1/register-changes", headers={"X-API-Key": app.keys["trust"]}, json=resolved)
    assert r.status_code == 202, r.text
    await drain(app)
    assert (await http.get(f"/v1/disputes/{case_id}", headers=h(app, WORCS))).json()["state"] != "resolved"
    assert (await _position(app, BHAM)).status_code == 200  # still named while open

    # Resolved for Worcestershire by both parties agreeing the same terms through the workflows.
    terms = {"responsible": WORCS, "responsible_from": during}
    for org in (WORCS, BHAM):
        r = await http.post(f"/v1/disputes/{case_id}/resolve", headers=h(app, org), json=terms)
        assert r.status_code in (200, 202), r.text
    await drain(app)
    assert (await http.get(f"/v1/disputes/{case_id}", headers=h(app, WORCS))).json()["state"] == "resolved"
    assert (await _position(app, BHAM)).status_code == 404
    assert (await _position(app, BHAM, as_of=during)).status_code == 404  # not a past party for being named
    r = await http.post("/v1/register-changes", headers=h(app, BHAM), json=_moved(app, "bham-2"))
    assert r.status_code == 403 and r.json()["rule"] == "no-relationship"


async def test_parties_must_be_bodies_of_the_disputes_kind(workflow_hub):
    app = workflow_hub
    await _keys(app)
    r = await _raise(app, WORCS, "council", [WORCS, QGH])
    assert r.status_code == 422 and r.json()["rule"] == "party-not-a-council" and "Worcs 4.3.4" in r.json()["citation"]
    assert QGH in r.json()["detail"]
    r = await _raise(app, QU9, "commissioner", [QU9, WORCS])
    assert r.status_code == 422 and r.json()["rule"] == "party-not-a-commissioner"
    r = await _raise(app, QU9, "commissioner", [QU9, "RNU"])  # a trust
    assert r.status_code == 422 and r.json()["rule"] == "party-not-a-commissioner"
    r = await _raise(app, QU9, "commissioner", [QU9, "15A"])  # a CCG's code: its ICB is QU9
    assert r.status_code == 422 and r.json()["rule"] == "party-not-a-commissioner"
    r = await _raise(app, QU9, "commissioner", [QU9, "X24"])  # NHS England commissions too
    assert r.status_code == 201, r.text


async def test_a_former_body_cannot_regain_access_by_raising_a_dispute(workflow_hub):
    """(c): once Worcestershire accepted the transfer, Buckinghamshire is no longer responsible;
    raising a dispute is refused with the very 404 an unknown person gets, and audited."""
    app, http = workflow_hub, workflow_hub.http
    [t] = (await http.get("/v1/transfers", headers=h(app, WORCS))).json()["items"]
    assert (await http.post(f"/v1/transfers/{t['case_id']}/accept", headers=h(app, WORCS))).status_code == 200
    # Told of the person today (the transfer), Bucks reads it as of today, as a notified body, and no later.
    tomorrow = (england_day() + timedelta(days=1)).isoformat()
    assert (await _position(app, BUCKS)).status_code == 200
    assert (await _position(app, BUCKS, tomorrow)).status_code == 404

    r = await _raise(app, BUCKS, "council", [BUCKS, WORCS])
    unknown = await _raise(app, BUCKS, "council", [BUCKS, WORCS], person_id="no-such-person")
    assert r.status_code == unknown.status_code == 404
    assert {k: r.json().get(k) for k in SAME_404} == {k: unknown.json().get(k) for k in SAME_404}
    assert (await http.get("/v1/disputes", headers=h(app, BUCKS))).json()["items"] == []
    assert (await _position(app, BUCKS, tomorrow)).status_code == 404
    async with app.hub.engine.connect() as conn:
        reads = (await conn.execute(select(access_decisions.c.role).where(
            access_decisions.c.org_code == BUCKS, access_decisions.c.action == "read",
            access_decisions.c.decision == "allowed"))).scalars().all()
        await conn.rollback()
    assert reads == ["notified"]  # never as a party again
    async with app.hub.engine.connect() as conn:
        rows = (await conn.execute(select(access_decisions).where(
            access_decisions.c.org_code == BUCKS, access_decisions.c.change_type == "dispute-raised"))).all()
        await conn.rollback()
    assert [(x.decision, x.rule, x.action, x.channel, x.person_id) for x in rows] == [
        ("denied", "no-relationship", "write", "rest", app.person_id),
        ("denied", "no-relationship", "write", "rest", None),  # no one matched
    ]


async def test_the_outgoing_body_of_an_open_transfer_may_raise_and_the_raise_is_audited(workflow_hub):
    """Buckinghamshire, outgoing while Worcestershire has not answered the transfer, may raise (as
    Worcestershire may contest); its decision is audited with the role it rested on."""
    app = workflow_hub
    r = await _raise(app, BUCKS, "council", [BUCKS, WORCS])
    assert r.status_code == 201, r.text
    async with app.hub.engine.connect() as conn:
        rows = (await conn.execute(select(access_decisions.c.decision, access_decisions.c.role).where(
            access_decisions.c.org_code == BUCKS, access_decisions.c.change_type == "dispute-raised",
            access_decisions.c.channel == "rest"))).all()
        await conn.rollback()
    assert [tuple(x) for x in rows] == [("allowed", "transfer-body")]


async def test_the_parties_to_a_contested_transfers_dispute_keep_writing(workflow_hub):
    """A contest opens a dispute between the two bodies the rules named: the outgoing council keeps
    meeting the needs meanwhile (Worcs 4.3.4) and may still record council changes."""
    app, http = workflow_hub, workflow_hub.http
    app.keys["bucks-writer"] = (await add_client(app.hub.engine, "Bucks", BUCKS, "council", ["register:write"]))[1]
    [t] = (await http.get("/v1/transfers", headers=h(app, WORCS))).json()["items"]
    r = await http.post(f"/v1/transfers/{t['case_id']}/contest", headers=h(app, WORCS), json={"reason": "residence"})
    assert r.status_code == 200 and r.json()["register_change"]["status"] == "accepted"
    review = {"source_system": "Mosaic", "source_message_id": "bucks-review", "change_type": "review-completed",
              "effective_date": "2025-09-01", "person": app.person}
    r = await http.post("/v1/register-changes", headers={"X-API-Key": app.keys["bucks-writer"]}, json=review)
    assert r.status_code == 202, r.text
