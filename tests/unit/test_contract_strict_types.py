"""Dates and flags are taken as the contract says (string, format date;
boolean), not coerced: Unix time, a datetime or "20250106" as a date, "yes" /
1 / "on" as true were accepted before."""

from __future__ import annotations

import pytest

from tests.unit.contract_inputs import change, only, problems, with_person

DATE_REASON = "must be a date written YYYY-MM-DD"


def test_every_date_of_the_contract_is_told_as_one():
    from pydantic import BaseModel

    from hub.ingest.contract import RegisterChangeIn
    from hub.ingest.validation import DATE_FIELDS

    def dates(model: type[BaseModel], prefix: str = "") -> set[str]:
        found = set()
        for name, info in model.model_fields.items():
            inner = [a for a in getattr(info.annotation, "__args__", ()) if isinstance(a, type)]
            for t in [info.annotation, *inner]:
                if isinstance(t, type) and issubclass(t, BaseModel):
                    found |= dates(t, f"{prefix}{name}.")
            if "datetime.date" in str(info.annotation):
                found.add(prefix + name)
        return found

    assert dates(RegisterChangeIn) == DATE_FIELDS == {"effective_date", "notified_on", "person.birth_date"}


@pytest.mark.parametrize("value", [1736121600, 1736121600.0, "2025-01-06T00:00:00Z", "2025-01-06T00:00:00",
                                   "20250106", "2025-1-6", "06/01/2025", "2025-02-30", True, "",
                                   "\uff12\uff10\uff12\uff15-01-06"])
@pytest.mark.parametrize("field", ["effective_date", "notified_on", "person.birth_date"])
def test_a_date_is_only_an_iso_calendar_date_string(field, value):
    data = with_person(birth_date=value) if field == "person.birth_date" else change(**{field: value})
    reason = only(data, field)
    assert reason.startswith(DATE_REASON), reason
    assert "zero time" not in reason


@pytest.mark.parametrize("value", ["yes", "on", "true", "Y", 1, 0, 1.0, "1", None])
@pytest.mark.parametrize("field", ["no_fixed_abode", "from_prison"])
def test_a_flag_is_only_true_or_false(field, value):
    data = change(**{field: value})
    if field == "no_fixed_abode":
        data.pop("residence_la_gss")
    assert only(data, field) == "must be true or false"


def test_discharge_flags_are_only_true_or_false():
    decision = {"council_agrees": "yes", "commissioner_agrees": 1, "person_involved": True,
                "reasons": ["no-longer-needs-services"], "participants": ["AMHP"]}
    data = {"source_system": "RiO", "source_message_id": "d-1", "change_type": "s117-discharge-decided",
            "effective_date": "2025-01-06", "person": {"nhs_number": "9990001006"}, "discharge": decision}
    found = problems(data)
    assert [(p.field, p.reason) for p in found] == [("discharge.council_agrees", "must be true or false"),
                                                    ("discharge.commissioner_agrees", "must be true or false")]


def test_true_and_false_are_accepted():
    data = change(no_fixed_abode=True, from_prison=False)
    data.pop("residence_la_gss")
    assert problems(data) == []
