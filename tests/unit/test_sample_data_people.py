"""The demo's and the tests' synthetic patients (hub/sample_data.py): one NHS number is one patient.

Numbers are drawn from about 900,000, so a long `make run` or a busy test draws one again. Drawn at random
each time, the details made a second patient of the same number, which the hub rightly holds as a change
about someone else (hub/ingest/identity.py): tests/e2e/test_backup_restore.py's trust was refused 422
person.birth_date mid-run."""

from __future__ import annotations

import random

import hub.sample_data as sample_data


def test_one_nhs_number_is_one_synthetic_patient(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(sample_data, "synthetic_nhs_number", lambda rng: "9990000018")
    first, again = sample_data.person(random.Random(1)), sample_data.person(random.Random(2))
    assert first == again and first["nhs_number"] == "9990000018"


def test_the_numbers_drawn_are_as_before() -> None:
    """Callers' sequences (the tests' seeds, the demo's runs) draw the same numbers as they did."""
    rng, expected = random.Random(117), random.Random(117)
    for _ in range(5):
        number = sample_data.synthetic_nhs_number(expected)
        expected.choice(sample_data.GIVEN), expected.choice(sample_data.FAMILY), expected.randint(0, 15000)
        assert sample_data.person(rng)["nhs_number"] == number
