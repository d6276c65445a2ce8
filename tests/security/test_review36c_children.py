"""Review 36c: the successor of a split council a register change named is the stay's only when named after
the detention that began it (hazard H-03, H-15).

The rules (hub/domain/rules/engine.py `_confirm_split_successor`) take a `moved` change's
`residence_before_detention_la_gss` only while a split awaits it: a naming sorted before the detention (a
move backdated before the admission, or an earlier stay's naming) changes nothing, and a new detention
re-determines the council (Worcs 4.3.3). The children's notices took every naming of the person's history
for every stay: a child whose earlier stay had Cumberland named, detained again from an address the PAS
still codes as Cumbria (it may be in Westmorland and Furness now), had the s85 notice, with name, NHS number
and date of birth, sent to Cumberland while the rules hold no council responsible and Oxfordshire (the
hospital's council) coordinating. Shipped reference data (Cumbria split on 2023-04-01)."""

from __future__ import annotations

import pytest

from hub.domain.agreements import AgreementBook
from hub.domain.children import Basis, Told, candidate_notices, leaving_notices, unsent, withdrawals
from hub.domain.model import EventType
from hub.domain.rules.engine import evaluate
from hub.refdata.loader import reference_data
from tests.unit.domain.builders import d, detained, left, moved

CUMBRIA, CUMBERLAND, WESTMORLAND, OXFORDSHIRE = "E10000006", "E06000063", "E06000064", "E10000025"
REF = reference_data()


def _stay(on: str, weeks: int | None = 20):  # noqa: ANN202
    return detained(on, "03", hospital_ods="RNU", residence_la_gss=CUMBRIA, expected_stay_weeks=weeks)


EARLIER_STAY = [_stay("2023-05-01", None), moved("2023-05-10", None, residence_before_detention_la_gss=CUMBERLAND),
                left("2023-06-01"), _stay("2024-01-01")]
BACKDATED = [moved("2023-04-20", None, residence_before_detention_la_gss=CUMBERLAND), _stay("2023-05-01")]


@pytest.mark.parametrize(("history", "today"), [(EARLIER_STAY, "2024-01-02"), (BACKDATED, "2023-05-02")],
                         ids=["an-earlier-stays-naming", "a-naming-dated-before-the-admission"])
def test_a_successor_named_before_the_stay_began_is_not_the_stays(history, today):
    status = evaluate("p", history, REF, AgreementBook(), d(today))
    assert status.council_split is not None and status.council_split.rule == "council-split"  # the rules: undetermined
    assert status.coordinating_council.org.code == OXFORDSHIRE
    [notice] = [n for n in candidate_notices(history, d(today), REF) if n.event_type is EventType.CHILD_LONG_STAY_NOTICE]
    assert (notice.org_code, notice.basis) == (OXFORDSHIRE, Basis.COORDINATING), notice  # was Cumberland


def test_a_successor_named_during_the_stay_or_after_it_ended_stays_the_stays():
    """Named while in hospital, the stay's successor; named after the discharge (the rules still await it), the
    coordinating council's notice is withdrawn (no leaving notice to it after); a next stay from Cumbria needs
    its own naming: the coordinating council is told of it (failed before: Cumberland)."""
    first = _stay("2023-05-01")
    during = [first, moved("2023-05-10", None, residence_before_detention_la_gss=CUMBERLAND)]
    [notice] = candidate_notices(during, d("2023-05-11"), REF)
    assert (notice.org_code, notice.basis) == (CUMBERLAND, Basis.ORDINARY_RESIDENCE)
    told = [Told("e-oxon", EventType.CHILD_LONG_STAY_NOTICE, OXFORDSHIRE, first.change_id)]
    after = [first, left("2023-06-01"), moved("2023-06-10", None, residence_before_detention_la_gss=CUMBERLAND)]
    [withdrawal] = withdrawals(after, told, {}, REF)
    assert (withdrawal.org_code, withdrawal.withdraws) == (OXFORDSHIRE, "e-oxon")
    assert leaving_notices(after, told, d("2023-06-11"), REF) == []
    again = [*after, _stay("2024-01-01")]
    owed = unsent(candidate_notices(again, d("2024-01-02"), REF), again, told, {})
    assert [(n.stay.admitted_on, n.org_code, n.basis) for n in owed] == [
        (d("2024-01-01"), OXFORDSHIRE, Basis.COORDINATING)]
