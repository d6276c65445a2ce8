"""Synthetic register changes for the demo and tests.

NHS numbers come from the 999 range, which the NHS reserves for testing and
never issues to a person; names are invented. Organisation codes are real
public ODS / GSS codes (they are not personal data).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from hub.ingest.nhs_number import with_check_digit

GIVEN = ["Alex", "Sam", "Jo", "Robin", "Morgan", "Jamie", "Casey", "Taylor", "Jordan", "Riley"]
FAMILY = ["Testpatient", "Example", "Sample", "Synthetic", "Placeholder", "Fixture"]


def synthetic_nhs_number(rng: random.Random) -> str:
    while True:
        n = with_check_digit("999" + "".join(str(rng.randint(0, 9)) for _ in range(6)))
        if n:
            return n


@dataclass(frozen=True)
class SampleArea:
    hospital_ods: str
    council_gss: str
    gp_practice_ods: str


BUCKS = SampleArea(hospital_ods="RNU", council_gss="E06000060", gp_practice_ods="K82001")
WORCS = SampleArea(hospital_ods="R1A", council_gss="E10000034", gp_practice_ods="M81001")


def person(rng: random.Random) -> dict[str, Any]:
    """A synthetic patient: an NHS number drawn from `rng`, and the details of the one patient that number
    is. The numbers come from a space of about 900,000, so a long run draws one again: it is the same
    person again (drawn at random, the details made a second patient of one NHS number, which the hub
    holds as a change about someone else: hub/ingest/identity.py)."""
    nhs_number = synthetic_nhs_number(rng)
    rng.choice(GIVEN), rng.choice(FAMILY), rng.randint(0, 15000)  # drawn as before: callers' sequences unchanged
    own = random.Random(nhs_number)
    return {
        "nhs_number": nhs_number,
        "given_name": own.choice(GIVEN),
        "family_name": own.choice(FAMILY),
        "birth_date": (date(1960, 1, 1) + timedelta(days=own.randint(0, 15000))).isoformat(),
        "postcode": "HP20 1AA",
    }


def detention_to_move_scenario(rng: random.Random, run_id: str, start: date, area: SampleArea = BUCKS,
                               moves_to: SampleArea = WORCS) -> list[dict[str, Any]]:
    """s2 admission, converted to s3, leaves hospital (entitlement starts), later
    moves to another council area (the originating council stays responsible)."""
    p = person(rng)
    base = {"source_system": "RiO (demo)", "person": p}
    d0 = start
    return [
        {**base, "source_message_id": f"{run_id}-1", "change_type": "detained", "effective_date": d0.isoformat(),
         "legal_status_code": "02", "hospital_ods": area.hospital_ods, "gp_practice_ods": area.gp_practice_ods,
         "residence_la_gss": area.council_gss},
        {**base, "source_message_id": f"{run_id}-2", "change_type": "section-changed",
         "effective_date": (d0 + timedelta(days=20)).isoformat(), "legal_status_code": "03",
         "hospital_ods": area.hospital_ods},
        {**base, "source_message_id": f"{run_id}-3", "change_type": "left-hospital",
         "effective_date": (d0 + timedelta(days=90)).isoformat(), "hospital_ods": area.hospital_ods},
        {**base, "source_message_id": f"{run_id}-4", "change_type": "moved",
         "effective_date": (d0 + timedelta(days=150)).isoformat(), "residence_la_gss": moves_to.council_gss},
    ]


def bad_change(run_id: str) -> dict[str, Any]:
    """An input the hub must refuse and quarantine: bad check digit, unknown section code."""
    return {"source_system": "RiO (demo)", "source_message_id": f"{run_id}-bad", "change_type": "detained",
            "effective_date": "2025-01-10", "legal_status_code": "11", "hospital_ods": "RNU",
            "residence_la_gss": "E06000060",
            "person": {"nhs_number": "9990000011", "given_name": "Bad", "family_name": "Input"}}
