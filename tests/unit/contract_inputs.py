"""Shared by the contract's bad-input tests (test_contract_*.py,
test_validation_contradictions.py): a valid canonical detention and what
ingest answers for a variant of it, without a hub."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import ValidationError

from hub.ingest.contract import RegisterChangeIn
from hub.ingest.validation import FieldProblem, problems_from_pydantic, semantic_problems
from hub.refdata.loader import load_reference_data

REF = load_reference_data()
TODAY = date(2026, 1, 1)


def change(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "source_system": "RiO", "source_message_id": "m-1", "change_type": "detained",
        "effective_date": "2025-01-06", "legal_status_code": "03", "hospital_ods": "RNU",
        "gp_practice_ods": "K82001", "residence_la_gss": "E06000060",
        "person": {"nhs_number": "9990001006", "given_name": "Alex", "family_name": "Testpatient"}}
    return {**base, **overrides}


def with_person(**person: Any) -> dict[str, Any]:
    c = change()
    return {**c, "person": {**c["person"], **person}}


def problems(data: dict[str, Any]) -> list[FieldProblem]:
    """What ingest answers for `data` (IngestService.accept_mapped's checks)."""
    try:
        parsed = RegisterChangeIn.model_validate(data)
    except ValidationError as exc:
        return problems_from_pydantic(exc)
    return semantic_problems(parsed, REF, TODAY)


def only(data: dict[str, Any], field: str) -> str:
    """The one problem `data` has, which must be about `field`: its reason."""
    found = problems(data)
    assert [p.field for p in found] == [field], found
    return found[0].reason


def trust(app_hub) -> dict[str, str]:  # noqa: ANN001
    return {"X-API-Key": app_hub.keys["trust"]}
