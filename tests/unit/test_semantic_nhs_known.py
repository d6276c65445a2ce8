"""semantic_problems with the NHS number's problem given (ingest's bulk path
has checked the number for its access precheck) gives what it gives when it
checks the number itself."""

from __future__ import annotations

import random
from datetime import date

import pytest

from hub.refdata.loader import load_reference_data
from hub.ingest.contract import RegisterChangeIn
from hub.ingest.nhs_number import nhs_number_problem
from hub.ingest.validation import semantic_problems
from hub.sample_data import detention_to_move_scenario

REF = load_reference_data()


@pytest.mark.parametrize("nhs", ["9434765919", "943 476 5919", "9434765918", "0000000000", "12345", "94347659１9"])
def test_the_same_problems_with_the_numbers_problem_given(nhs: str) -> None:
    for data in detention_to_move_scenario(random.Random(3), "v", date(2025, 1, 6)):
        change = RegisterChangeIn.model_validate({**data, "person": {**data["person"], "nhs_number": nhs}})
        today = date(2026, 12, 1)
        assert [p.as_dict() for p in semantic_problems(change, REF, today,
                                                        nhs_problem=nhs_number_problem(nhs))] == \
            [p.as_dict() for p in semantic_problems(change, REF, today)]
