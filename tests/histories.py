"""Generated s117 histories for the per-recipient view tests: detentions,
moves and GP changes (some dated before the detention, so they change who is
responsible when they arrive late), discharges, CTOs, disputes, re-detentions,
discharge decisions and deaths, with dates drawn from few values so that
same-date groups are common. Real public org codes; NHS numbers from the 999
test range."""

from __future__ import annotations

import itertools
import random
from datetime import date, timedelta
from typing import Any

from hypothesis import strategies as st

from hub.sample_data import person

BUCKS, WORCS, OXON = "E06000060", "E10000034", "E10000025"
BOB_ICB, HW_ICB = "QU9", "QGH"
ORGS = (BUCKS, WORCS, OXON, BOB_ICB, HW_ICB)
GP = {BUCKS: "K82001", WORCS: "M81001"}  # practices whose commissioners are BOB / H&W
HOSPITALS = ("RNU", "R1A")
START = date(2024, 3, 4)
_counter = itertools.count()

STEP = st.sampled_from([0, 0, 1, 20])  # days after the previous change: 0 = the same date


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One person's changes in narrative (effective) order, without person or ids."""
    home = draw(st.sampled_from([BUCKS, WORCS]))
    other = WORCS if home == BUCKS else BUCKS
    out: list[dict[str, Any]] = []

    def add(offset: int, **change: Any) -> None:
        out.append({"effective_date": (START + timedelta(days=offset)).isoformat(), **change})

    # Facts from before the detention: a late arrival re-determines the council / ICB.
    if draw(st.booleans()):
        add(-30, change_type="moved", residence_la_gss=other)
    if draw(st.booleans()):
        add(-30, change_type="gp-changed", gp_practice_ods=GP[other])
    section = draw(st.sampled_from(["02", "03"]))
    detained = {"change_type": "detained", "legal_status_code": section,
                "hospital_ods": draw(st.sampled_from(HOSPITALS)), "residence_la_gss": home}
    if draw(st.booleans()):  # else the GP on record (perhaps a late gp-changed) decides the ICB
        detained["gp_practice_ods"] = GP[home]
    add(0, **detained)
    offset = 0
    if section == "02":
        offset += draw(STEP)
        add(offset, change_type="section-changed", legal_status_code="03")
    offset += draw(STEP)
    left = {"change_type": "left-hospital"}
    if draw(st.booleans()):
        left["gp_practice_ods"] = GP[draw(st.sampled_from([home, other]))]
    add(offset, **left)
    on_cto = draw(st.booleans())
    if on_cto:
        add(offset + draw(st.sampled_from([0, 0, 3])), change_type="cto-started")
    if draw(st.booleans()):
        offset += draw(STEP)
        add(offset, change_type="moved", residence_la_gss=draw(st.sampled_from([other, OXON])))
    if draw(st.booleans()):
        offset += draw(STEP)
        dispute_id = f"D{next(_counter)}"
        add(offset, change_type="dispute-raised",
            dispute={"dispute_id": dispute_id, "kind": "council", "parties": [home, other]})
        if draw(st.booleans()):
            offset += draw(STEP)
            resolved = draw(st.sampled_from([home, other]))
            for party in (home, other):  # the outcome stands once every party has recorded it
                add(offset, change_type="dispute-resolved", _by=party,
                    dispute={"dispute_id": dispute_id, "kind": "council", "parties": [home, other],
                             "resolved_responsible": resolved})
    if draw(st.booleans()):
        offset += draw(STEP)
        # A joint decision, as each body records it (Worcs 16.1): the responsible council (home, or
        # the other council a dispute found responsible: both record it, only the responsible one's
        # counts) and the trust of the detention, acting for the NHS commissioner.
        for by in (home, other, detained["hospital_ods"]):
            add(offset, change_type="s117-discharge-decided", _by=by,
                discharge={"council_agrees": True, "commissioner_agrees": True,
                           "reasons": ["no-longer-needs-services"], "participants": ["care coordinator"],
                           "person_involved": True})
    elif draw(st.booleans()):
        offset += draw(st.sampled_from([1, 20]))
        add(offset, change_type="detained", legal_status_code="03", hospital_ods="RNU",
            residence_la_gss=draw(st.sampled_from([home, other])))
    if draw(st.booleans()):
        offset += draw(STEP)
        add(offset, change_type="died")
    return out


def materialise(history: list[dict[str, Any]], run_id: str, seed: int) -> list[dict[str, Any]]:
    """The canonical JSON register changes of one person: source message ids
    number the changes in narrative order (the source's own sequence). A
    change with `_by` (an org code) is one that body records (a joint
    decision's part): the poster sends it with that body's key and drops
    the key from the body."""
    p = person(random.Random(seed))
    return [{"source_system": "RiO (test)", "source_message_id": f"{run_id}-{i:02d}", "person": p, **c}
            for i, c in enumerate(history)]


def late_correction_history() -> list[dict[str, Any]]:
    """A fixed history that needs corrections when it arrives newest first:
    detained from Worcestershire (H&W ICB), discharged onto a CTO the same
    day, moved to Buckinghamshire, re-detained from there. The re-detention
    re-determines the council (Worcs 4.3.3) but keeps the ICB already funding
    aftercare (Worcs 4.4.2): heard first, it names BOB ICB, which the older
    history then corrects."""
    return [
        {"effective_date": "2024-03-04", "change_type": "detained", "legal_status_code": "03",
         "hospital_ods": "R1A", "residence_la_gss": WORCS, "gp_practice_ods": GP[WORCS]},
        {"effective_date": "2024-05-01", "change_type": "left-hospital"},
        {"effective_date": "2024-05-01", "change_type": "cto-started"},
        {"effective_date": "2024-07-01", "change_type": "moved", "residence_la_gss": BUCKS},
        {"effective_date": "2024-09-02", "change_type": "detained", "legal_status_code": "03",
         "hospital_ods": "RNU", "residence_la_gss": BUCKS, "gp_practice_ods": GP[BUCKS]},
    ]


def agreements_yaml() -> str:
    """Every test organisation may receive every event with every field group."""
    lines = ["version: 1", "agreements:", "  - id: DSA-TEST-ALL", "    valid_from: 2020-01-01", "    recipients:"]
    for org in ORGS:
        lines += [f"      - org_code: {org}", '        events: ["*"]',
                  "        field_groups: [identity, demographics, address, legal-status, responsibility, explanations]"]
    return "\n".join(lines) + "\n"
