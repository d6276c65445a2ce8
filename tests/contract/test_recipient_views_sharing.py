"""What a body's agreement does not grant stays withheld when its position moves.

Real ingest (the REST API in process) and the real dispatcher on SQLite, each
organisation pulling its feed, as in test_recipient_views.py, with
Buckinghamshire's agreement narrowed: it may hear that an entitlement
started, with the `responsibility` group only (every message carries the
body's whole position, so an agreement granting `s117-register-change-recorded`
hears of every change). A relabelled "correction" used to carry what it may not hear (the end
of the entitlement, a new dispute) whenever it had been told something
before; and the reason in every position named the detention's section,
date and policy citation (the `explanations` group) to every body.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from hub.fhir.messages import read_position
from hub.store.schema import disclosures
from tests.contract.test_recipient_views import _world
from tests.histories import BUCKS, GP, ORGS, WORCS, materialise

NARROW = ("version: 1\nagreements:\n  - id: DSA-TEST\n    valid_from: 2020-01-01\n    recipients:\n"
          + "".join(f"      - org_code: {org}\n        events: [\"*\"]\n        field_groups: [identity, demographics,"
                    " address, legal-status, responsibility, explanations]\n" for org in ORGS if org != BUCKS)
          + f"      - org_code: {BUCKS}\n        events: [s117-entitlement-started]\n"
          "        field_groups: [responsibility]\n")

DISCHARGE = {"council_agrees": True, "commissioner_agrees": True, "reasons": ["no-longer-needs-services"],
             "participants": ["care coordinator"], "person_involved": True}


def _history() -> list[dict[str, Any]]:
    """Detained from Buckinghamshire, discharged (entitled), a council dispute
    with Worcestershire raised, resolved for Buckinghamshire, then aftercare
    ended by a joint decision: in date order, nothing late."""
    dispute = {"dispute_id": "D-narrow", "kind": "council", "parties": [BUCKS, WORCS]}
    return [
        {"effective_date": "2024-03-04", "change_type": "detained", "legal_status_code": "03",
         "hospital_ods": "RNU", "residence_la_gss": BUCKS, "gp_practice_ods": GP[BUCKS]},
        {"effective_date": "2024-05-01", "change_type": "left-hospital"},
        {"effective_date": "2024-06-03", "change_type": "dispute-raised", "dispute": dispute},
        # Each party records the outcome, and each body its part of the joint decision (the care trust
        # acting for the NHS commissioner): tests/histories.py `_by`.
        *({"effective_date": "2024-07-01", "change_type": "dispute-resolved", "_by": party,
           "dispute": {**dispute, "resolved_responsible": BUCKS}} for party in (BUCKS, WORCS)),
        *({"effective_date": "2024-09-02", "change_type": "s117-discharge-decided", "_by": by, "discharge": DISCHARGE}
          for by in (BUCKS, "RNU")),
    ]


def test_a_new_fact_the_agreement_does_not_grant_is_withheld_and_audited_not_sent_as_a_correction(
        tmp_path: Path) -> None:
    async def run() -> None:
        w, close = await _world(tmp_path, NARROW)
        try:
            person_id = None
            for change in materialise(_history(), "narrow", seed=7):  # each dispatched before the next arrives
                person_id = (await w.post(change)).get("person_id", person_id)
                await w.dispatch()
                await w.pull_all()
            bucks = w.subscribers[BUCKS]
            types = [m["event_type"] for m in bucks.messages]
            assert "s117-entitlement-started" in types
            # Once: the detention's recorded event found it newly entitled, and the entitlement-started
            # event of the same change, routed to it, carries that position (not two messages for one fact).
            assert types == ["s117-entitlement-started"], types
            # What it holds is what it was last allowed to hear: entitled, responsible.
            held = bucks.positions[person_id][1]
            assert held["entitled"] is True and held["roles"] == ["responsible-council"]
            # Worcestershire, granted everything, hears the dispute and the end.
            worcs = {m["event_type"] for m in w.subscribers[WORCS].messages}
            assert "s117-dispute-raised" in worcs
            # The audit says what was withheld from Buckinghamshire, and nothing says it was sent.
            async with w.hub.engine.connect() as conn:
                rows = (await conn.execute(select(disclosures.c.event_type, disclosures.c.decision)
                                           .where(disclosures.c.recipient_org == BUCKS))).all()
            decided = {(r.event_type, r.decision) for r in rows}
            assert ("s117-entitlement-ended", "denied") in decided
            assert ("s117-dispute-raised", "denied") in decided
            assert {d for d in decided if d[1] == "allowed"} == {("s117-entitlement-started", "allowed")}
            # No reason it was sent names the detention, its date or the policy (no `explanations`).
            for m in bucks.messages:
                reason = read_position(m["message"]).reason or ""
                assert "2024" not in reason and "Worcs" not in reason and "s3" not in reason, reason
                assert "Determination" not in orjson.dumps(m["message"]).decode()
        finally:
            await close()

    asyncio.run(run())
