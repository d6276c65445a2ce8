"""A refusal as a FHIR R4 OperationOutcome: what the FHIR endpoints' clients read, whoever refuses
(the limits in front, hub/api/limits.py; the shared handlers, hub/api/problems.py)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

FHIR_JSON = "application/fhir+json"

# An issue's code (FHIR R4 IssueType) for a refusal's status.
OUTCOME_CODES = {400: "structure", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported", 406: "not-supported",
                 408: "timeout", 409: "conflict", 410: "deleted", 413: "too-long", 415: "not-supported",
                 422: "invalid", 429: "throttled", 503: "timeout"}


def outcome_body(status: int, detail: str, errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """One issue naming each refused field (`{"field", "reason"}`: its expression and why), else one
    with the detail; the code from the status."""
    code = OUTCOME_CODES.get(status, "exception" if status >= 500 else "processing")
    issues = [{"severity": "error", "code": code, "diagnostics": e["reason"], "expression": [e["field"]]}
              for e in errors or ()] or [{"severity": "error", "code": code, "diagnostics": detail}]
    return {"resourceType": "OperationOutcome", "issue": issues}


def issue(severity: str, code: str, diagnostics: str, expression: str | None = None) -> dict[str, Any]:
    """One OperationOutcome issue: its IssueType `code` and, where one element is at fault, its `expression`."""
    out: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        out["expression"] = [expression]
    return out


def outcome_of(status: int, issues: list[dict[str, Any]]) -> JSONResponse:
    """A route's own answer of several issues (`issue`): $process-message, the FHIR subscriptions."""
    return JSONResponse({"resourceType": "OperationOutcome", "issue": issues}, status_code=status,
                        media_type=FHIR_JSON)


def outcome(status: int, code: str, diagnostics: str, expression: str | None = None) -> JSONResponse:
    """A route's own refusal: one error issue with its IssueType `code` and, where one element is at
    fault, its `expression` (the FHIR Task and metadata routes)."""
    return outcome_of(status, [issue("error", code, diagnostics, expression)])
