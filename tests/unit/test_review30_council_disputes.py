"""Outside review (session 30): a dispute between councils follows its own procedure.

Disputes between local authorities over where a person was ordinarily
resident are settled under the Care and Support (Disputes between Local
Authorities) Regulations 2014 (Worcs 4.3.4, 15.4): local resolution led by
the lead authority (the council meeting the needs meanwhile), then referral
to, and determination by, the Secretary of State. Who Pays? (director level
-> ICS -> NHS England arbitration, Worcs 15.5) and an area's own NHS
procedure (Bucks JMG -> ICET) are for disputes between NHS commissioners only.
Before, every dispute (and every overdue transfer) ran through the area's
NHS procedure: a council dispute in Buckinghamshire went to the JMG and
then ICET, one elsewhere to NHS England's arbitration.

The domain (side by side, on the real agreements file), the agreements
loader (`council_escalation`, read and checked as `escalation` is), and the
API in process on SQLite (raise, stages, FHIR Task, escalation, the
Secretary of State's determination recorded by the hub operator)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from hub.agreements_loader import AgreementsError, agreements_from_mapping, load_agreements
from hub.clients import add_client
from hub.domain.agreements import LA_DISPUTE_STAGES, LEAD_BODY, WHO_PAYS_STAGES
from hub.domain.workflows import machine as m
from hub.domain.workflows.model import DETERMINATION_ACTOR, WorkflowRefusal
from tests.unit.test_workflows_api import BUCKS, WORCS, drain, h, workflow_hub  # noqa: F401 (the fixture)

AGREEMENTS = Path(__file__).resolve().parents[2] / "contracts" / "area-agreements.yaml"
QU9, QGH = "QU9", "QGH"
HOLIDAYS = frozenset({date(2025, 5, 5), date(2025, 5, 26), date(2025, 8, 25)})
DAY0 = date(2025, 4, 28)
REGULATIONS = "Disputes between Local Authorities"


def _raise(area, kind: str):  # noqa: ANN001, ANN202
    parties = (BUCKS, WORCS) if kind == "council" else (QU9, QGH)
    case, step = m.raise_dispute(case_id=f"d-{kind}", person_id="p1", kind=kind, parties=parties,
                                 raised_by=parties[1], on=DAY0, reason="ordinary residence",
                                 meeting_needs=parties[0], area=area, holidays=HOLIDAYS, dispute_id=f"D-{kind}")
    return case, step


# ------------------------------------------------------------------ the domain


@pytest.mark.parametrize("gss", ["E06000060", "E10000034", None])  # Bucks (JMG -> ICET), Worcs, the default
def test_council_and_commissioner_disputes_side_by_side_follow_their_own_procedures(gss):
    area = load_agreements(AGREEMENTS).area(gss)
    council, raised = _raise(area, "council")
    commissioner, _ = _raise(area, "commissioner")
    # Between NHS commissioners: the area's procedure, as before.
    assert commissioner.stages == area.escalation
    # Between councils: the 2014 Regulations, whatever the area's NHS procedure.
    assert council.stages == LA_DISPUTE_STAGES == area.council_escalation
    assert [s.owner for s in council.stages] == [LEAD_BODY, "Secretary of State"]
    assert council.clock.owner == BUCKS  # the lead authority, meeting the needs meanwhile (Worcs 4.3.4)
    assert all(REGULATIONS in s.citation and "Worcs 4.3.4, 15.4" in s.citation for s in council.stages)
    for text in (council.clock.citation, raised.explanation, *(s.name + s.owner + s.citation for s in council.stages)):
        assert "NHS England" not in text and "Who Pays" not in text and "JMG" not in text and "ICET" not in text
    # 85 working days of local resolution (the hub's default, not a policy figure): 17 weeks from
    # Mon 28 April is Mon 25 August, and three bank holidays (5 and 26 May, 25 August) make it Thu 28 August.
    assert council.clock.due_on == date(2025, 8, 28)


def test_the_area_procedure_bucks_set_is_kept_for_its_nhs_disputes():
    bucks = load_agreements(AGREEMENTS).area("E06000060")
    commissioner, _ = _raise(bucks, "commissioner")
    assert [s.owner for s in commissioner.stages] == ["JMG", "ICET"] and commissioner.clock.owner == "JMG"
    council, _ = _raise(bucks, "council")
    assert council.clock.owner == BUCKS and council.stages[-1].owner == "Secretary of State"


def test_a_council_dispute_escalates_to_the_secretary_of_state_who_determines_it():
    case, _ = _raise(load_agreements(AGREEMENTS).area("E06000060"), "council")
    # The hub operator records no determination during local resolution; the refusal cites the councils' procedure.
    with pytest.raises(WorkflowRefusal) as early:
        m.resolve(case, DETERMINATION_ACTOR, DAY0, WORCS, DAY0, "SoS determination OR-1")
    assert early.value.rule == "not-at-final-stage" and REGULATIONS in early.value.citation
    assert "NHS England" not in early.value.citation
    late = date.fromordinal(case.clock.due_on.toordinal() + 1)
    escalated, step = m.escalate(case, m.CLOCK_ACTOR, late, HOLIDAYS)
    assert escalated.clock.owner == "Secretary of State" and REGULATIONS in step.citation
    with pytest.raises(WorkflowRefusal) as last:
        m.escalate(escalated, WORCS, late, HOLIDAYS)
    assert last.value.rule == "no-further-stage" and REGULATIONS in last.value.citation
    assert "Who Pays" not in last.value.citation
    resolved, step = m.resolve(escalated, DETERMINATION_ACTOR, late, WORCS, DAY0, "determination OR-117")
    assert resolved.determined_by == "Secretary of State: determination OR-117"
    assert REGULATIONS in step.citation and "NHS England" not in step.citation


def test_an_overdue_transfer_escalates_to_its_roles_procedure():
    area = load_agreements(AGREEMENTS).area("E06000060")
    for role, outgoing, incoming, first in (("council", BUCKS, WORCS, "local resolution between the councils"),
                                            ("commissioner", QU9, QGH, "Joint Management Group")):
        case, _ = m.open_transfer(case_id="t", person_id="p1", role=role, outgoing=outgoing, incoming=incoming,
                                  on=DAY0, basis="Worcs 4.3.3", area=area, holidays=HOLIDAYS)
        after, step = m.transfer_breach(case, date(2025, 6, 1), area)
        assert first in step.explanation and first in after.clock.purpose


# ------------------------------------------------------------------ the loader


def test_the_loader_reads_council_escalation_as_it_reads_escalation():
    stage = {"name": "local resolution", "owner": "lead-body", "working_days": 60, "citation": "Worcs 4.3.4"}
    sos = {"name": "Secretary of State", "owner": "Secretary of State", "working_days": 40, "citation": "Worcs 15.4"}
    book = agreements_from_mapping({"areas": {"E06000060": {"council_escalation": [stage, sos]}}})
    area = book.area("E06000060")
    assert [(s.owner, s.working_days) for s in area.council_escalation] == [("lead-body", 60),
                                                                           ("Secretary of State", 40)]
    assert area.escalation == WHO_PAYS_STAGES  # the other procedure untouched
    assert area.escalation_for("council") == area.council_escalation
    assert area.escalation_for("commissioner") == area.escalation
    # Absent: the hub's default, for an area and for the file's default area.
    assert book.default_area.council_escalation == LA_DISPUTE_STAGES
    assert agreements_from_mapping({"areas": {"E06000060": {}}}).area("E06000060").council_escalation \
        == LA_DISPUTE_STAGES


@pytest.mark.parametrize(("value", "names"), [
    ([], "areas.E06000060.council_escalation: must be a list of at least one stage"),
    ("Secretary of State", "areas.E06000060.council_escalation: must be a list"),
    ([{"name": "x", "owner": "y", "working_days": 0, "citation": "c"}],
     "areas.E06000060.council_escalation[0].working_days"),
    ([{"name": "x", "owner": "y", "working_days": 5}], "areas.E06000060.council_escalation[0].citation: is required"),
    ([{"name": "x", "owner": "y", "working_days": 5, "citation": "c", "colour": "red"}],
     "areas.E06000060.council_escalation[0]: unknown keys ['colour']"),
    ([{"name": "x", "owner": "y", "working_days": True, "citation": "c"}],
     "areas.E06000060.council_escalation[0].working_days"),
])
def test_a_bad_council_escalation_is_refused_naming_the_field(value, names):
    with pytest.raises(AgreementsError) as refused:
        agreements_from_mapping({"areas": {"E06000060": {"council_escalation": value}}})
    assert names in str(refused.value)


def test_unknown_area_keys_are_still_refused():
    with pytest.raises(AgreementsError) as refused:
        agreements_from_mapping({"areas": {"E06000060": {"la_escalation": []}}})
    assert "unknown keys ['la_escalation']" in str(refused.value)


# ------------------------------------------------------------------ the API


async def test_through_the_api_a_council_dispute_is_determined_by_the_secretary_of_state(workflow_hub):
    """Worcestershire (responsible after the re-detention) raises a council dispute and BOB ICB a
    commissioner dispute about the same person, in the same area: each its own procedure; the council
    dispute escalates to the Secretary of State, whose determination the hub operator records."""
    app, http = workflow_hub, workflow_hub.http
    app.keys[f"wf-{QGH}"] = (await add_client(app.hub.engine, QGH, QGH, "icb", ["s117:read", "workflows:write"]))[1]
    admin = {"X-API-Key": app.keys["admin"]}
    r = await http.post("/v1/disputes", headers=h(app, WORCS), json={
        "person_id": app.person_id, "kind": "council", "parties": [WORCS, BUCKS], "reason": "ordinary residence"})
    assert r.status_code == 201, r.text
    council = r.json()
    r = await http.post("/v1/disputes", headers=h(app, QU9), json={
        "person_id": app.person_id, "kind": "commissioner", "parties": [QU9, QGH], "reason": "GP registration"})
    assert r.status_code == 201, r.text
    commissioner = r.json()
    assert council["area"] == commissioner["area"] == "Worcestershire"
    assert [s["owner"] for s in council["stages"]] == ["lead-body", "Secretary of State"]
    assert council["clock"]["owner"] == WORCS and REGULATIONS in council["clock"]["citation"]
    assert [s["owner"] for s in commissioner["stages"]] == ["lead-body", "ICS", "NHS England"]
    assert commissioner["clock"]["owner"] == QU9 and "Worcs 15.5" in commissioner["clock"]["citation"]
    task = (await http.get(f"/v1/fhir/Task/{council['case_id']}-stage-0", headers=h(app, BUCKS))).json()
    assert task["code"]["text"] == "S117 council dispute: local resolution between the councils (the lead authority)"
    assert REGULATIONS in task["description"]

    r = await http.post(f"/v1/disputes/{council['case_id']}/resolve", headers=admin, json={
        "responsible": BUCKS, "responsible_from": "2025-01-06", "determination": "SoS OR determination 117"})
    assert r.status_code == 409 and r.json()["rule"] == "not-at-final-stage"
    assert REGULATIONS in r.json()["citation"] and "NHS England" not in r.json()["citation"]
    r = await http.post(f"/v1/disputes/{council['case_id']}/escalate", headers=h(app, BUCKS))
    assert r.status_code == 200 and r.json()["clock"]["owner"] == "Secretary of State", r.text
    r = await http.post(f"/v1/disputes/{council['case_id']}/escalate", headers=h(app, BUCKS))
    assert r.status_code == 409 and r.json()["rule"] == "no-further-stage"
    assert REGULATIONS in r.json()["citation"] and "Who Pays" not in r.json()["citation"]
    r = await http.post(f"/v1/disputes/{council['case_id']}/resolve", headers=admin, json={
        "responsible": BUCKS, "responsible_from": "2025-01-06", "determination": "SoS OR determination 117"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "resolved" and body["determined_by"] == "Secretary of State: SoS OR determination 117"
    assert body["register_change"]["status"] == "accepted"
    await drain(app)
    case = (await http.get(f"/v1/disputes/{council['case_id']}", headers=h(app, WORCS))).json()
    assert [s["outcome"] for s in case["stage_history"]] == ["escalated", "resolved"]
    assert case["history"][-1]["actor"] == "hub:determination"
    assert "NHS England" not in case["history"][-1]["citation"]
    # The commissioner dispute is still at its own first stage.
    other = (await http.get(f"/v1/disputes/{commissioner['case_id']}", headers=h(app, QU9))).json()
    assert other["state"] == "open" and other["stage_index"] == 0
