"""Outside review (session 30): a re-detention is recorded while a dispute is open.

The defect: a person discharged from hospital (entitled), a dispute opened,
then the trust reports a new s3 detention: the hub answered
`409 held-open-dispute` and quarantined it, citing Worcs 8.5. But Worcs 8.5
stops a body withdrawing funding on its own; it does not stop a legal event
being recorded. The new detention re-determines the responsible council by
law (Worcs 4.3.3, 17.1), the person goes on the register at admission
(Worcs 19.2) within 5 working days (Worcs 19.6), and nothing may be delayed
by a dispute (Worcs 15.1). A `detained` or `section-changed` change that
begins a qualifying detention is now never held; every other change the
guard held is still held. The open dispute stays open (it is about who was
responsible before the new detention) and its parties are told through the
normal routing, as dispute parties.

The rules (hub/domain/workflows/held.py) and the real path in process on
SQLite: REST ingest, the dispatcher, the workflows' consumer, the API."""

from __future__ import annotations

import random
from datetime import date, timedelta

import orjson
import pytest
from sqlalchemy import select

from hub.clients import add_client
from hub.domain.agreements import AgreementBook
from hub.domain.model import ChangeType, Dispute, DisputeKind
from hub.domain.rules.engine import evaluation
from hub.domain.views import DISPUTE_PARTY, roles_of, view_of
from hub.domain.workflows.held import hold_reason, starts_qualifying_detention
from hub.fhir.validate import validate_message
from hub.sample_data import detention_to_move_scenario
from hub.store.schema import deliveries, deliveries_with_messages, delivery_messages, quarantine, subscriptions
from hub.workflows.consumer import WorkflowConsumer
from tests.unit.domain.builders import PERSON, REF, change, joint_discharge, status
from tests.unit.domain.fakes import (
    BUCKINGHAMSHIRE,
    BUCKS_PRACTICE,
    HW_TRUST,
    OXFORD_HEALTH,
    WORCESTERSHIRE,
)

AS_OF = date(2024, 9, 1)
GROUPS = frozenset({"identity", "responsibility"})


def _history():  # noqa: ANN202
    """Detained under s3 from Buckinghamshire, left hospital (entitled), moved to Worcestershire; then a
    council dispute between Buckinghamshire and Worcestershire was raised."""
    return [
        change(ChangeType.DETAINED, date(2024, 1, 2), legal_status_code="03", hospital_ods=OXFORD_HEALTH,
               gp_practice_ods=BUCKS_PRACTICE, residence_la_gss=BUCKINGHAMSHIRE),
        change(ChangeType.LEFT_HOSPITAL, date(2024, 3, 1)),
        change(ChangeType.MOVED, date(2024, 3, 20), residence_la_gss=WORCESTERSHIRE),
        change(ChangeType.DISPUTE_RAISED, date(2024, 4, 1),
               dispute=Dispute("D-9", DisputeKind.COUNCIL, (BUCKINGHAMSHIRE, WORCESTERSHIRE))),
    ]


def test_a_new_qualifying_detention_is_not_held_by_an_open_dispute_and_the_dispute_stays_open():
    history = _history()
    before = status(history, AS_OF)
    assert before.entitled and before.open_disputes and before.council_basis_code == BUCKINGHAMSHIRE
    redetained = change(ChangeType.DETAINED, date(2024, 5, 1), legal_status_code="03", hospital_ods=HW_TRUST,
                        residence_la_gss=WORCESTERSHIRE)
    after = status([*history, redetained], AS_OF)
    # The law moves the council (Worcs 4.3.3): Worcestershire, where the person lived when detained again.
    assert after.council_basis_code == WORCESTERSHIRE and "4.3.3" in after.responsible_council.citation
    assert starts_qualifying_detention(after, redetained)
    assert hold_reason(before, after, redetained) is None  # was: "would move the responsible council ... Worcs 8.5"
    # The dispute is not closed by it.
    assert [(d.dispute_id, d.parties) for d in after.open_disputes] == [("D-9", (BUCKINGHAMSHIRE, WORCESTERSHIRE))]
    # Its parties are involved as dispute parties, and each one's position changed: the dispatcher
    # (which sends each involved body the difference) tells both.
    was, now = roles_of(before), roles_of(after)
    for party in (BUCKINGHAMSHIRE, WORCESTERSHIRE):
        assert DISPUTE_PARTY in now[party]
        told = view_of(after, now[party], GROUPS)
        assert told != view_of(before, was[party], GROUPS)
        assert told["responsible_council"] == WORCESTERSHIRE
        assert told["disputes"] == [{"dispute_id": "D-9", "kind": "council"}]


def test_a_section_change_to_a_qualifying_section_is_a_qualifying_detention_too():
    history = _history()
    s2 = change(ChangeType.DETAINED, date(2024, 5, 1), legal_status_code="02", hospital_ods=HW_TRUST,
                residence_la_gss=WORCESTERSHIRE)
    before = status(history, AS_OF)
    on_s2 = status([*history, s2], AS_OF)
    assert not starts_qualifying_detention(on_s2, s2)  # s2 does not qualify: nothing re-determined
    assert on_s2.council_basis_code == BUCKINGHAMSHIRE and hold_reason(before, on_s2, s2) is None
    s3 = change(ChangeType.SECTION_CHANGED, date(2024, 5, 20), legal_status_code="03", hospital_ods=HW_TRUST)
    on_s3 = status([*history, s2, s3], AS_OF)
    assert on_s3.council_basis_code == WORCESTERSHIRE
    assert starts_qualifying_detention(on_s3, s3) and hold_reason(on_s2, on_s3, s3) is None
    # A later change in the same period of detention begins nothing (one determination per period,
    # Worcs 4.3.1): s3 to s37 is not a new qualifying detention.
    s37 = change(ChangeType.SECTION_CHANGED, date(2024, 6, 1), legal_status_code="37", hospital_ods=HW_TRUST)
    assert not starts_qualifying_detention(status([*history, s2, s3, s37], AS_OF), s37)


def test_a_late_redetention_is_not_held_either_and_the_incremental_path_agrees():
    """Reported late (older than a change already recorded): it still begins a qualifying detention in the
    history as it now stands, and the incremental evaluation (the batch path) says the same."""
    history = _history()
    review = change(ChangeType.REVIEW_REQUESTED, date(2024, 6, 1))
    before = status([*history, review], AS_OF)
    late = change(ChangeType.DETAINED, date(2024, 5, 1), legal_status_code="03", hospital_ods=HW_TRUST,
                  residence_la_gss=WORCESTERSHIRE)
    after = status([*history, review, late], AS_OF)
    assert after.council_basis_code == WORCESTERSHIRE and hold_reason(before, after, late) is None
    extended = evaluation(PERSON, [*history, review], REF, AgreementBook.default(), AS_OF).extended(late).status
    assert extended == after and starts_qualifying_detention(extended, late)


def test_a_change_ending_the_entitlement_is_still_held():
    """The second body's agreement to a joint discharge (the first only awaits it, and ends nothing)."""
    history = _history()
    first, second = joint_discharge("2024-05-01")
    pending = status([*history, first], AS_OF)
    assert pending.entitled and pending.open_disputes
    reason = hold_reason(pending, status([*history, first, second], AS_OF), second)
    assert reason is not None and "end the s117 entitlement" in reason and "Worcs 8.5" in reason


def test_a_left_hospital_that_would_move_the_council_is_still_held():
    """Re-detained from Worcestershire while still in hospital from an earlier detention from
    Buckinghamshire (one period: Buckinghamshire kept); a late discharge between them would make it a
    re-detention from Worcestershire: that left-hospital change moves the council, and is held."""
    history = [
        *_history()[:2],
        change(ChangeType.DETAINED, date(2024, 3, 10), legal_status_code="03", hospital_ods=OXFORD_HEALTH,
               residence_la_gss=BUCKINGHAMSHIRE),
        change(ChangeType.MOVED, date(2024, 3, 20), residence_la_gss=WORCESTERSHIRE),
        change(ChangeType.DISPUTE_RAISED, date(2024, 4, 1),
               dispute=Dispute("D-9", DisputeKind.COUNCIL, (BUCKINGHAMSHIRE, WORCESTERSHIRE))),
        change(ChangeType.DETAINED, date(2024, 5, 1), legal_status_code="03", hospital_ods=HW_TRUST,
               residence_la_gss=WORCESTERSHIRE),
    ]
    before = status(history, AS_OF)
    assert before.council_basis_code == BUCKINGHAMSHIRE
    left = change(ChangeType.LEFT_HOSPITAL, date(2024, 4, 20), hospital_ods=OXFORD_HEALTH)
    after = status([*history, left], AS_OF)
    assert after.council_basis_code == WORCESTERSHIRE
    reason = hold_reason(before, after, left)
    assert reason is not None and "move the responsible council" in reason and "Worcs 8.5" in reason


# ------------------------------------------------------------- through the hub

BUCKS, WORCS = "E06000060", "E10000034"
START = date(2025, 1, 6)


async def _drain(app_hub) -> None:  # noqa: ANN001
    consumer = WorkflowConsumer(app_hub.hub.workflows, app_hub.hub.bus, app_hub.hub.engine)
    while (await app_hub.hub.dispatcher.run_once()) + (await consumer.run_once()):
        pass


def _h(app_hub, org: str) -> dict:  # noqa: ANN001
    return {"X-API-Key": app_hub.keys[f"wf-{org}"]}


async def _told(hub, event_type: str) -> dict[str, list[bytes]]:  # noqa: ANN001
    """Each organisation's messages of `event_type`, decrypted."""
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(select(deliveries.c.event_type, delivery_messages.c.payload, subscriptions.c.org_code)
                                   .select_from(deliveries_with_messages.join(
                                       subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id))
                                   )).all()
        await conn.rollback()
    out: dict[str, list[bytes]] = {}
    for r in rows:
        if r.event_type == event_type:
            out.setdefault(r.org_code, []).append(hub.protector.decrypt(r.payload))
    return out


@pytest.fixture
async def disputed(app_hub):  # noqa: ANN001
    """Detained in Buckinghamshire, s3, left hospital (entitled), moved to Worcestershire (day 150);
    Buckinghamshire, responsible, raised a council dispute naming Worcestershire."""
    hub = app_hub.hub
    for org in (BUCKS, WORCS):
        app_hub.keys[f"wf-{org}"] = (await add_client(hub.engine, org, org, "council",
                                                      ["s117:read", "workflows:write", "subscriptions:write"]))[1]
        r = await app_hub.http.post("/v1/subscriptions", headers=_h(app_hub, org), json={"channel": "feed"})
        assert r.status_code == 201, r.text
    app_hub.keys["R1A"] = (await add_client(hub.engine, "HW Health and Care", "R1A", "trust", ["register:write"]))[1]
    app_hub.keys["admin"] = (await add_client(hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]
    changes = detention_to_move_scenario(random.Random(30), "rd", START)
    for c in changes:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    app_hub.person_id = r.json()["person_id"]
    app_hub.base = {k: changes[0][k] for k in ("source_system", "person")}
    r = await app_hub.http.post("/v1/disputes", headers=_h(app_hub, BUCKS), json={
        "person_id": app_hub.person_id, "kind": "council", "parties": [BUCKS, WORCS],
        "reason": "ordinary residence before the detention"})
    assert r.status_code == 201, r.text
    app_hub.dispute = r.json()
    await _drain(app_hub)
    return app_hub


async def test_the_trusts_redetention_is_recorded_while_the_dispute_stays_open(disputed):
    app, http, hub = disputed, disputed.http, disputed.hub
    admin = {"X-API-Key": app.keys["admin"]}
    dispute = app.dispute
    # The NHS side's agreement to a discharge would end the entitlement: still held (Worcs 8.5).
    discharge = {**app.base, "source_message_id": "rd-discharge", "change_type": "s117-discharge-decided",
                 "effective_date": (START + timedelta(days=180)).isoformat(),
                 "discharge": {"council_agrees": True, "commissioner_agrees": True,
                               "reasons": ["no-longer-needs-services"], "participants": ["RC", "AMHP"],
                               "person_involved": True}}
    council_key = (await add_client(hub.engine, BUCKS, BUCKS, "council", ["register:write"]))[1]
    r = await http.post("/v1/register-changes", headers={"X-API-Key": council_key},
                        json={**discharge, "source_message_id": "rd-discharge-council"})
    assert r.status_code == 202, r.text
    r = await http.post("/v1/register-changes", headers={"X-API-Key": app.keys["trust"]}, json=discharge)
    assert r.status_code == 409 and r.json()["rule"] == "held-open-dispute", r.text

    # The trust running the hospital reports a new s3 detention from Worcestershire: recorded, not held.
    redetained = (START + timedelta(days=200)).isoformat()
    r = await http.post("/v1/register-changes", headers={"X-API-Key": app.keys["R1A"]}, json={
        **app.base, "source_message_id": "rd-redetained", "change_type": "detained", "effective_date": redetained,
        "legal_status_code": "03", "hospital_ods": "R1A", "residence_la_gss": WORCS})
    assert r.status_code == 202, r.text  # was 409 held-open-dispute, quarantined
    await _drain(app)
    async with hub.engine.connect() as conn:
        held = (await conn.execute(select(quarantine.c.source_message_id).where(quarantine.c.status == "held"))
                ).scalars().all()
        await conn.rollback()
    assert held == ["rd-discharge"]  # only the discharge

    # The council moved by law (Worcs 4.3.3), and the dispute is still open, untouched.
    position = (await http.get(f"/v1/persons/{app.person_id}/s117", headers=admin)).json()
    assert position["responsible_council"]["org"]["code"] == WORCS
    assert position["entitled"] and position["in_hospital"]
    assert [d["dispute_id"] for d in position["open_disputes"]] == [dispute["dispute_id"]]
    case = (await http.get(f"/v1/disputes/{dispute['case_id']}", headers=_h(app, WORCS))).json()
    assert case["state"] == "open" and case["stage_index"] == 0
    assert [s["action"] for s in case["history"]] == ["raise"]
    assert case["interims"][-1]["lead_body"] == BUCKS  # the interim terms stand until the parties agree others
    # The responsibility it moved is a transfer the incoming council answers, as any other.
    [transfer] = (await http.get("/v1/transfers", headers=_h(app, WORCS))).json()["items"]
    assert (transfer["outgoing"], transfer["incoming"], transfer["state"]) == (BUCKS, WORCS,
                                                                               "awaiting-acknowledgement")

    # Both parties are told by the normal routing: the transfer's message carries the new position and
    # the open dispute.
    told = await _told(hub, "s117-responsibility-transferred")
    assert set(told) >= {BUCKS, WORCS}
    for org in (BUCKS, WORCS):
        for raw in told[org]:
            bundle = orjson.loads(raw)
            validate_message(bundle)
            assert dispute["dispute_id"].encode() in raw
