"""Facts refused together or against the reference data: residence and no
fixed abode on one change (council files refused the pair, REST took it),
and an `already_receiving_s117_from` that is not an NHS commissioner."""

from __future__ import annotations

import pytest

from tests.unit.contract_inputs import change, only, problems

@pytest.mark.parametrize("change_type", ["detained", "moved"])
def test_residence_and_no_fixed_abode_together_are_refused(change_type):
    data = change(change_type=change_type, no_fixed_abode=True)
    if change_type == "moved":
        for name in ("legal_status_code", "hospital_ods"):
            data.pop(name)
    reason = only(data, "residence_la_gss")
    assert "no_fixed_abode" in reason


@pytest.mark.parametrize("code", ["ZZZ", "RNU", "K82001"])
def test_already_receiving_from_must_be_a_commissioner(code):
    reason = only(change(already_receiving_s117_from=code), "already_receiving_s117_from")
    assert "commissioner" in reason and code not in reason


@pytest.mark.parametrize("code", ["QU9", "14Y", "X24"])  # an ICB, a CCG (now its ICB), NHS England
def test_known_commissioners_are_accepted(code):
    assert problems(change(already_receiving_s117_from=code)) == []
