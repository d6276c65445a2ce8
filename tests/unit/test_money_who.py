"""The package event's person is read once (`_person_in`), by both of the
access policy's early readings: `_who_and_when` (action, person, day: decided
on the line's day) and `_who` (the person alone, well formed: decided as of
today). Their answers are pinned against the readings as they were written
separately before (a review's refactor: behaviour unchanged)."""

from __future__ import annotations

from datetime import date
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.ingest.nhs_number import nhs_number_problem
from hub.money.service import FIRST_DAY, LAST_DAY, _who, _who_and_when


def _who_and_when_before(data: dict[str, Any]) -> tuple | None:
    action, pid, person, day = (data.get("action"), data.get("person_id"), data.get("person"),
                                data.get("effective_date"))
    if action not in ("start", "change", "end") or (pid is None) == (person is None) or not isinstance(day, str):
        return None
    nhs = person.get("nhs_number") if isinstance(person, dict) else None
    if (pid is not None and (not isinstance(pid, str) or len(pid) > 36)) or (person is not None and
                                                                            not isinstance(nhs, str)):
        return None
    try:
        on = date.fromisoformat(day)
    except ValueError:
        return None
    if not FIRST_DAY <= on <= LAST_DAY:
        return None
    return action, pid, nhs, on


def _who_before(data: dict[str, Any]) -> tuple | None:
    pid, person = data.get("person_id"), data.get("person")
    if pid is not None and person is None:
        return (pid, None) if isinstance(pid, str) and 0 < len(pid) <= 36 else None
    nhs = person.get("nhs_number") if isinstance(person, dict) and pid is None else None
    return (None, nhs) if isinstance(nhs, str) and nhs_number_problem(nhs) is None else None


GOOD_NHS, BAD_NHS = "9434765919", "9434765918"
scalars = st.one_of(st.none(), st.integers(), st.booleans(), st.text(max_size=40),
                    st.sampled_from(["", "p-1", "x" * 36, "x" * 37, GOOD_NHS, BAD_NHS, "943 476 5919"]))
persons = st.one_of(scalars, st.lists(scalars, max_size=2),
                    st.dictionaries(st.sampled_from(["nhs_number", "given_name"]), scalars, max_size=2))
days = st.one_of(scalars, st.sampled_from(["2026-10-01", "1999-12-31", "2101-01-01", "2026-02-30", "2026-1-1"]))
actions = st.one_of(scalars, st.sampled_from(["start", "change", "end", "stop"]))
MISSING = object()


@st.composite
def events(draw) -> dict[str, Any]:  # noqa: ANN001
    fields = {"action": draw(actions), "person_id": draw(scalars), "person": draw(persons),
              "effective_date": draw(days)}
    # Each field given (perhaps as null) or absent.
    return {k: v for k, v in fields.items() if draw(st.booleans())}


@settings(max_examples=1500, deadline=None)
@given(events())
def test_the_two_readings_answer_as_before(data):
    assert _who_and_when(data) == _who_and_when_before(data)
    assert _who(data) == _who_before(data)


def test_the_edges_by_hand():
    both = {"person_id": "p-1", "person": {"nhs_number": GOOD_NHS}}
    for data, when, who in [
        ({"action": "start", "person_id": "p-1", "effective_date": "2026-10-01"},
         ("start", "p-1", None, date(2026, 10, 1)), ("p-1", None)),
        ({"action": "end", "person_id": "", "effective_date": "2026-10-01"},  # empty: read for the day, not alone
         ("end", "", None, date(2026, 10, 1)), None),
        ({"action": "change", "person": {"nhs_number": BAD_NHS}, "effective_date": "2026-10-01"},
         ("change", None, BAD_NHS, date(2026, 10, 1)), None),  # check digit: asked alone only
        ({"person": {"nhs_number": GOOD_NHS}}, None, (None, GOOD_NHS)),
        ({"action": "start", **both, "effective_date": "2026-10-01"}, None, None),
        ({"action": "start", "person_id": "x" * 37, "effective_date": "2026-10-01"}, None, None),
        ({"action": "start", "person_id": "p-1", "effective_date": "2101-01-01"}, None, ("p-1", None)),
        ({"person": [GOOD_NHS]}, None, None),
    ]:
        assert (_who_and_when(data), _who(data)) == (when, who), data
