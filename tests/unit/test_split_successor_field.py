"""The contract's `residence_before_detention_la_gss` (hazard H-03: a county split between several
successors): taken only by a `moved` change, a council in place today, and a move naming only it needs no
residence (the person has not moved). Bad values are refused naming the field."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from hub.ingest.contract import RegisterChangeIn
from hub.ingest.validation import semantic_problems
from hub.refdata.loader import load_reference_data

_REF = load_reference_data()
TODAY = date(2026, 12, 5)
BASE = {"source_system": "RiO", "source_message_id": "m-1", "effective_date": "2026-12-01",
        "person": {"nhs_number": "9990000026"}}


def _problems(**fields) -> list[tuple[str, str]]:
    change = RegisterChangeIn.model_validate({**BASE, **fields})
    return [(p.field, p.reason) for p in semantic_problems(change, _REF, TODAY)]


def test_a_move_naming_only_the_successor_is_valid() -> None:
    assert _problems(change_type="moved", residence_before_detention_la_gss="E06000063") == []


def test_a_move_without_it_still_needs_a_residence() -> None:
    assert [f for f, _ in _problems(change_type="moved")] == ["residence_la_gss"]


@pytest.mark.parametrize("code", ["E10000006", "E10000021", "E09000999"],
                         ids=["split-county", "northamptonshire", "not-a-council"])
def test_a_code_that_is_no_council_in_place_today_is_refused_naming_the_field(code: str) -> None:
    problems = _problems(change_type="moved", residence_before_detention_la_gss=code)
    assert [f for f, _ in problems] == ["residence_before_detention_la_gss"]
    assert "a council in place today" in problems[0][1]


def test_only_a_move_takes_it() -> None:
    problems = _problems(change_type="review-completed", residence_before_detention_la_gss="E06000063")
    assert [f for f, _ in problems] == ["residence_before_detention_la_gss"]
    assert "is not used by a 'review-completed' change" in problems[0][1]


def test_it_must_be_a_gss_code() -> None:
    with pytest.raises(ValidationError) as raised:
        RegisterChangeIn.model_validate({**BASE, "change_type": "moved", "residence_before_detention_la_gss": "X1"})
    assert raised.value.errors()[0]["loc"] == ("residence_before_detention_la_gss",)
