"""Terse constructors for register changes in tests."""

from __future__ import annotations

import itertools
from datetime import date

from hub.domain.agreements import AgreementBook
from hub.domain.model import ChangeType, DischargeDecision, DischargeReason, RegisterChange, S117Status
from hub.domain.rules import evaluate
from tests.unit.domain.fakes import BOB_ICB, BUCKINGHAMSHIRE, FakeReferenceData

PERSON = "P-0001"
REF = FakeReferenceData()
BOOK = AgreementBook.default()
_ids = itertools.count(1)


def d(text: str) -> date:
    return date.fromisoformat(text)


def change(change_type: ChangeType, on: str | date, **fields) -> RegisterChange:
    effective = d(on) if isinstance(on, str) else on
    fields.setdefault("notified_on", effective)
    fields.setdefault("recorded_on", fields["notified_on"])
    fields.setdefault("change_id", f"C{next(_ids):05d}")
    return RegisterChange(person_id=PERSON, change_type=change_type, effective_date=effective, **fields)


def detained(on: str, code: str = "03", **fields) -> RegisterChange:
    return change(ChangeType.DETAINED, on, legal_status_code=code, **fields)


def left(on: str, **fields) -> RegisterChange:
    return change(ChangeType.LEFT_HOSPITAL, on, **fields)


def moved(on: str, gss: str | None = None, **fields) -> RegisterChange:
    return change(ChangeType.MOVED, on, residence_la_gss=gss, **fields)


def lawful_decision(**overrides) -> DischargeDecision:
    values = dict(
        council_agrees=True,
        commissioner_agrees=True,
        reasons=(DischargeReason.NO_LONGER_NEEDS_SERVICES,),
        participants=("care coordinator", "responsible clinician", "social worker"),
        person_involved=True,
    )
    values.update(overrides)
    return DischargeDecision(**values)


def discharge(on: str, decision: DischargeDecision | None = None, **fields) -> RegisterChange:
    return change(ChangeType.S117_DISCHARGE_DECIDED, on, discharge=decision or lawful_decision(), **fields)


def joint_discharge(on: str, decision: DischargeDecision | None = None, council: str = BUCKINGHAMSHIRE,
                    commissioner: str = BOB_ICB) -> list[RegisterChange]:
    """The decision as each body records it (the council's, then the NHS
    commissioner's): entitlement ends only on both (Worcs 16.1). The
    defaults are the bodies of a person ordinarily resident in
    Buckinghamshire with a GP there."""
    return [discharge(on, decision, source=council), discharge(on, decision, source=commissioner)]


def status(changes, as_of: str | date, ref=REF, book=BOOK) -> S117Status:
    return evaluate(PERSON, list(changes), ref, book, d(as_of) if isinstance(as_of, str) else as_of)
