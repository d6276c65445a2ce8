"""The OpenAPI document states what the API answers: every /v1/ operation its shared refusals (the
key, the scope, a refused request, the limits) as RFC 9457 problem details, never FastAPI's own
422 schema (no answer has it); the FHIR endpoints' answers as application/fhir+json; /metrics as
text; and the answers a route gives of its own (404, 409, 415). The fuzz of every operation
(tests/security/test_api_schema_fuzz.py) checks each status and media type it meets against the
document; this checks the statements it may not meet, and real answers against the schema."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from hub.api.app import create_app
from hub.ingest.contract import NHS_NUMBER_FORM, RegisterChangeIn
from hub.ingest.nhs_number import normalise
from tests.conftest import test_settings as make_settings

PROBLEM = "application/problem+json"
FHIR = "application/fhir+json"
PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}
OUTCOME_REF = {"$ref": "#/components/schemas/OperationOutcome"}
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return create_app(make_settings(tmp_path_factory.mktemp("openapi"))).openapi()


def _operations(doc: dict, prefix: str = "/v1/"):  # noqa: ANN202
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS and path.startswith(prefix):
                yield path, method, operation


def test_every_v1_operation_states_the_key_and_scope_refusals(doc: dict) -> None:
    operations = list(_operations(doc))
    assert len(operations) > 60
    for path, method, op in operations:
        for status in ("401", "403", "422", "503"):
            assert status in op["responses"], (method, path, status)
        # Problem details; under /v1/fhir/ every refusal an OperationOutcome (its clients read nothing else).
        fhir = path.startswith("/v1/fhir/")
        media, ref = (FHIR, OUTCOME_REF) if fhir else (PROBLEM, PROBLEM_REF)
        assert op["responses"]["401"]["content"] == {media: {"schema": ref}}, (method, path)
        assert op["responses"]["403"]["content"][media] == {"schema": ref}, (method, path)
        if fhir:
            assert PROBLEM not in str(op["responses"]), (method, path)
        if method in ("post", "put", "patch"):  # the limits' refusals of a body
            assert media in op["responses"]["413"]["content"], (method, path)
            assert media in op["responses"]["408"]["content"], (method, path)


def test_no_answer_is_stated_as_fastapis_validation_error(doc: dict) -> None:
    """Every 422 is problem details (hub/api/problems.py): FastAPI's HTTPValidationError, as
    application/json, was the document's 422 on every route, and no answer ever had it."""
    assert "HTTPValidationError" not in str(doc)
    for path, method, op in _operations(doc):
        content = op["responses"]["422"]["content"]
        assert "application/json" not in content, (method, path)
        if not path.startswith("/v1/fhir/"):
            assert content == {PROBLEM: {"schema": PROBLEM_REF}}, (method, path)
    for path, method in (("/v1/quarantine", "get"), ("/v1/subscriptions", "post"), ("/v1/persons/lookup", "post"),
                         ("/v1/ops/flows", "get"), ("/v1/statements", "get"), ("/v1/disputes", "post")):
        assert doc["paths"][path][method]["responses"]["422"]["content"] == {PROBLEM: {"schema": PROBLEM_REF}}


def test_problem_details_schema_names_the_fields_and_reasons(doc: dict) -> None:
    schemas = doc["components"]["schemas"]
    problem = schemas["ProblemDetails"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    assert problem["additionalProperties"] is True  # extension members: rule, state, quarantine_id...
    assert problem["properties"]["errors"]["items"] == {"$ref": "#/components/schemas/FieldProblem"}
    assert set(schemas["FieldProblem"]["required"]) == {"field", "reason"}
    assert schemas["OperationOutcome"]["properties"]["resourceType"] == {"const": "OperationOutcome"}
    for name, schema in schemas.items():  # each a valid JSON Schema 2020-12 (OpenAPI 3.1's dialect)
        Draft202012Validator.check_schema(schema)


def test_non_json_answers_are_stated_with_their_media_types(doc: dict) -> None:
    paths = doc["paths"]
    assert doc["openapi"].startswith("3.1.")
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert list(paths["/v1/fhir/SubscriptionTopic"]["get"]["responses"]["200"]["content"]) == [FHIR]
    for path, method, op in _operations(doc, "/v1/fhir/"):
        for status, answer in op["responses"].items():
            if status.startswith("2"):
                assert list(answer["content"]) == [FHIR], (method, path, status)
    assert set(paths["/v1/exports/{export_id}"]["get"]["responses"]["200"]["content"]) == {"text/csv", "text/plain"}
    # Every FHIR endpoint's own refusals are OperationOutcomes.
    assert paths["/v1/fhir/Subscription/{subscription_id}"]["get"]["responses"]["404"]["content"] == \
        {FHIR: {"schema": OUTCOME_REF}}
    assert paths["/v1/fhir/$process-message"]["post"]["responses"]["422"]["content"] == {FHIR: {"schema": OUTCOME_REF}}


@pytest.mark.parametrize(("path", "method", "statuses"), [
    ("/v1/quarantine/{quarantine_id}/resubmit", "post", {"404", "409"}),
    ("/v1/quarantine/{quarantine_id}/discard", "post", {"404", "409"}),
    ("/v1/subscriptions/{subscription_id}/resume", "post", {"404", "409"}),
    ("/v1/ops/subscriptions/{subscription_id}/resume", "post", {"404", "409"}),
    ("/v1/exports/{export_id}", "get", {"404", "409", "410"}),
    ("/v1/exports/{export_id}/ack", "post", {"404", "409"}),
    ("/v1/fhir/$process-message", "post", {"409", "413", "415"}),
    ("/v1/reconciliations", "post", {"415"}),
    ("/v1/register-changes", "post", {"409", "413", "415"}),
    ("/v1/persons/{person_id}/s117", "get", {"404"}),
    ("/v1/persons/merges/{merge_id}", "get", {"404"}),
])
def test_a_routes_own_answers_are_stated(doc: dict, path: str, method: str, statuses: set[str]) -> None:
    responses = doc["paths"][path][method]["responses"]
    assert statuses <= set(responses)
    for status in statuses:
        assert responses[status]["content"], (path, status)


async def test_real_refusals_match_the_documented_schema(app_hub) -> None:  # noqa: ANN001
    """The answers themselves: a missing key, a scope not held and a parameter refused, each as the
    document states it (its media type, and a body valid against ProblemDetails)."""
    doc = (await app_hub.http.get("/openapi.json")).json()
    validator = Draft202012Validator({**PROBLEM_REF, "components": doc["components"]})
    council = {"X-API-Key": app_hub.keys["E06000060"]}
    trust = {"X-API-Key": app_hub.keys["trust"]}
    for status, r in ((401, await app_hub.http.get("/v1/quarantine")),
                      (403, await app_hub.http.get("/v1/quarantine", headers=council)),
                      (422, await app_hub.http.get("/v1/quarantine?limit=0", headers=trust))):
        assert r.status_code == status
        media = r.headers["content-type"].split(";")[0]
        assert media in doc["paths"]["/v1/quarantine"]["get"]["responses"][str(status)]["content"]
        assert not list(validator.iter_errors(r.json())), r.text
    assert r.json()["errors"] == [{"field": "limit", "reason": "Input should be greater than or equal to 1"}]


def test_the_contract_states_an_nhs_numbers_form_without_changing_what_is_read() -> None:
    """The register change's `person.nhs_number` is a string of ten digits, spaces anywhere
    (hub/ingest/nhs_number.py `normalise`): stated as a JSON Schema pattern, so a schema-valid body is
    not one refused for its form; pydantic does not run it (the reasons stay hub/ingest's own)."""
    person = RegisterChangeIn.model_json_schema()["$defs"]["PersonIn"]["properties"]["nhs_number"]
    assert person["pattern"] == NHS_NUMBER_FORM
    form = re.compile(NHS_NUMBER_FORM)
    for text in ("9434765919", "943 476 5919", " 943 476 5919 ", "9 4 3 4 7 6 5 9 1 9"):
        assert form.match(text) and len(normalise(text)) == 10
    for text in ("943476591", "94347659190", "943-476-5919", "943\t476 5919", "９４３４７６５９１９", ""):
        assert not form.match(text)
    from hub.ingest.contract import PersonIn  # noqa: PLC0415
    assert PersonIn(nhs_number="not a number").nhs_number == "not a number"  # refused later, with its reason
