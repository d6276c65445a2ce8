"""`semantic_problems` names every optional fact a change carries that its
change type does not take (USED_BY_CHANGE), in OPTIONAL_FACTS' order, and no
other: a fact sent on the wrong kind of change is refused by name, never
accepted and ignored."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import pytest

from hub.domain.model import ChangeType
from hub.ingest.contract import PersonIn, RegisterChangeIn
from hub.ingest.validation import OPTIONAL_FACTS, USED_BY_CHANGE, semantic_problems
from hub.refdata.loader import load_reference_data

_REF = load_reference_data()
_NOT_USED = "is not used by a"


def _carrying(change_type: ChangeType, facts: tuple[str, ...]) -> RegisterChangeIn:
    """A change of `change_type` carrying `facts` (built without validation: only their presence matters)."""
    flags = ("no_fixed_abode", "from_prison")  # booleans: left out is False
    values = {name: None if name not in flags else False for name in OPTIONAL_FACTS}
    values |= {name: "x" if name not in flags else True for name in facts}
    if "dispute" in facts:  # read further when a dispute is resolved
        values["dispute"] = SimpleNamespace(resolved_responsible="x")
    return RegisterChangeIn.model_construct(
        source_system="s", source_message_id="m", change_type=change_type, effective_date=date(2025, 1, 6),
        person=PersonIn.model_construct(nhs_number="9990001006"), **values)


@pytest.mark.parametrize("change_type", list(ChangeType), ids=lambda t: t.value)
def test_every_fact_the_change_type_does_not_take_is_named_in_order(change_type: ChangeType) -> None:
    problems = semantic_problems(_carrying(change_type, OPTIONAL_FACTS), _REF, date(2026, 1, 1))
    named = [p.field for p in problems if _NOT_USED in p.reason]
    assert named == [name for name in OPTIONAL_FACTS if name not in USED_BY_CHANGE[change_type]]
    assert all(f"'{change_type.value}' change" in p.reason for p in problems if _NOT_USED in p.reason)


@pytest.mark.parametrize("change_type", list(ChangeType), ids=lambda t: t.value)
def test_facts_the_change_type_takes_or_leaves_out_are_not_named(change_type: ChangeType) -> None:
    taken = tuple(name for name in OPTIONAL_FACTS if name in USED_BY_CHANGE[change_type])
    for change in (_carrying(change_type, taken), _carrying(change_type, ())):
        assert not [p for p in semantic_problems(change, _REF, date(2026, 1, 1)) if _NOT_USED in p.reason]
