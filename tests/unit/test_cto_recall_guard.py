"""`ends_cto_in_force` (hub/ingest/cto_recall.py): a `detained` / `section-changed` from a source that cannot say
a CTO recall from a fresh application is asked about exactly when the rules engine would end a CTO with it: a
qualifying section, and a CTO in force where the change sorts among the person's changes, however late it comes."""

from __future__ import annotations

import pytest

from hub.domain.model import ChangeType
from hub.domain.rules import evaluate
from hub.ingest.cto_recall import ends_cto_in_force
from tests.unit.domain.builders import BOOK, PERSON, REF, change, detained, left


def cto(on: str, kind: ChangeType = ChangeType.CTO_STARTED):  # noqa: ANN201
    return change(kind, on, legal_status_code="03" if kind is ChangeType.CTO_STARTED else None)


ON_CTO = [detained("2025-01-06"), left("2025-03-03"), cto("2025-03-03")]


def asks(history, new) -> bool:  # noqa: ANN001
    answer = ends_cto_in_force(PERSON, history, new, REF, BOOK)
    # The question is asked exactly when recording the change would end the CTO: the engine's own fold says so.
    ended = any(h.change_id == new.change_id and "community treatment order ended" in h.text
                for h in evaluate(PERSON, [*history, new], REF, BOOK, new.effective_date).history)
    assert answer is ended
    return answer


@pytest.mark.parametrize("code", ["03", "10", "37"])
def test_a_qualifying_detention_while_on_a_cto_is_asked_about(code):
    assert asks(ON_CTO, detained("2025-05-01", code))
    assert asks(ON_CTO, change(ChangeType.SECTION_CHANGED, "2025-05-01", legal_status_code=code))


def test_a_detention_that_would_not_end_the_cto_is_not():
    assert not asks(ON_CTO, detained("2025-05-01", "02"))  # s2: no fresh application for treatment
    assert not asks(ON_CTO, detained("2025-02-01"))  # before the CTO began (a late message)
    assert not asks([detained("2025-01-06"), left("2025-03-03")], detained("2025-05-01"))  # never on a CTO
    assert not asks([*ON_CTO, cto("2025-04-01", ChangeType.CTO_ENDED)], detained("2025-05-01"))  # ended before
    assert not asks(ON_CTO, change(ChangeType.CTO_RECALLED, "2025-05-01"))  # a recall says so itself


def test_a_late_detention_on_a_day_the_cto_was_in_force_is_asked_about_though_it_ended_since():
    # Revoked on 10 May (recorded): the A01 of 1 May, arriving late, still falls while the CTO was in force.
    history = [*ON_CTO, change(ChangeType.CTO_REVOKED, "2025-05-10", legal_status_code="03")]
    assert evaluate(PERSON, history, REF, BOOK, history[-1].effective_date).on_cto is False
    assert asks(history, detained("2025-05-01"))
