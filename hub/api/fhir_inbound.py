"""Trust push as FHIR R4 (UK Core) messaging: POST /v1/fhir/$process-message.

The body is a message Bundle whose MessageHeader.eventCoding is a code of the
hub's s117-register-change-type CodeSystem; adapters/fhir_inbound maps it to
the canonical register change, and IngestService records it exactly as for
REST. Answers (FHIR messaging, synchronous):

* accepted, or a duplicate of an accepted message: 200 with a response
  message Bundle (MessageHeader.response.code "ok", response.identifier = the
  request's MessageHeader.id, details -> an OperationOutcome information issue,
  and a `warning` issue at the extension for a successor of a split council
  named to no effect; MessageHeader.focus names the change id and the hub's
  person id);
* invalid: 422 with an OperationOutcome, one error issue per problem
  (expression = the FHIR location, diagnostics = the reason); the input is
  held in quarantine (GET /v1/quarantine);
* a focused Encounter entered-in-error whose event is `detained` or `left-hospital`: the one change it
  names retracted (hub/retraction.py `retract_cancelled`, as an HL7 A11 / A13 is): 200 with a response
  message naming the change retracted (or retracted before); none or more than one: 422, quarantined;
* a merge of two NHS numbers by PDS (eventCoding `nhs-numbers-merged` of the hub's s117-person-event
  CodeSystem; the focused Patient's NHS number retained, its `link` of type `replaces` the superseded one):
  merged by hub/merges.py as HL7 A40 and POST /v1/persons/merge merge them (one access policy, channel
  `fhir`): 200 with a response message naming the retained person (the same merge again: the first answer,
  marked duplicate); refused for what it asks (a number invalid, the two the same, the retained number itself
  superseded, dates of birth that differ: 422; the superseded number merged into another: 409): an
  OperationOutcome naming the element, held in quarantine;
* refused by the access policy (hub/access.py): 403 with an OperationOutcome
  issue "forbidden" naming the rule; audited, nothing recorded;
* 413 / 415: an OperationOutcome, nothing recorded (415 also for a Content-Type fhirVersion other than
  4.0); 406 for a request asking for an answer other than FHIR R4 JSON (`_format`, `Accept`), and 422 for
  `async=true` (the hub answers synchronously only): nothing recorded.

No answer quotes a value from the message (no NHS number, no name).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
import orjson

from adapters.fhir_inbound import MappingResult, map_message
from adapters.fhir_inbound.mapping import BUSINESS_RULE, INVALID, REQUIRED, VALUE
from hub.access import no_sooner_than, refused_by_policy
from hub.api.deps import ClientDep, HubDep, require
from hub.api.outcomes import FHIR_JSON, issue, outcome_of
from hub.api.problems import answer
from hub.fhir.namespaces import NHS_NUMBER_SYSTEM, Namespaces
from hub.fhir.negotiation import body_media_refusal, format_refusal
from hub.bootstrap import Hub
from hub.ids import uuid5
from hub.ingest.nhs_number import nhs_number_problem
from hub.ingest.service import Client
from hub.ingest.validation import FieldProblem
from hub.observability.logging import bound_correlation_id, get_logger, new_correlation_id
from hub.domain.access import Rule
from hub.merges import MergeDenied, MergeRefused
from hub.retraction import CANCEL_ALREADY, CANCEL_AMBIGUOUS, CANCEL_KEY_REUSED, CANCEL_RETRACTED, Cancellation

log = get_logger("hub.api.fhir_inbound")
router = APIRouter(prefix="/v1/fhir", tags=["register"])
MAX_BODY = 256 * 1024
ACCEPTED_MEDIA_TYPES = frozenset({FHIR_JSON, "application/json"})
CHANNEL = "fhir"
RESPONSE_NAMESPACE = uuid.UUID("0f6d8a8e-5c47-4f57-a3f6-117117117118")


def _code_for(reason: str) -> str:
    return REQUIRED if reason.startswith("is required") else VALUE


def _refused(body: dict[str, Any]) -> JSONResponse:
    """The access policy's refusal (audited, not quarantined): the rule named, one identical answer
    for "not on the register" and "not yours"."""
    return outcome_of(403, [issue("error", "forbidden", f"{body['rule']}: {body['detail']}")])


def _about(raw: bytes, ns: Namespaces) -> dict[str, Any] | None:
    """What a message that did not map is about, as far as the access policy asks: the change type
    (MessageHeader.eventCoding, a code of the hub's CodeSystem) and the NHS number when the Bundle's
    Patients name exactly one. Read from the JSON alone (the mapping stopped at the first problem);
    the hospital is not read (`write_precheck(partial=True)`). None when neither can be read."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    entries = data.get("entry") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return None
    resources = [e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    about: dict[str, Any] = {}
    header = resources[0] if resources and resources[0].get("resourceType") == "MessageHeader" else {}
    coding = header.get("eventCoding")
    if isinstance(coding, dict) and coding.get("system") == ns.change_type_codesystem:
        about["change_type"] = coding.get("code")
    numbers = {i["value"].replace(" ", "") for r in resources if r.get("resourceType") == "Patient"
               and isinstance(r.get("identifier"), list) for i in r["identifier"]
               if isinstance(i, dict) and i.get("system") == NHS_NUMBER_SYSTEM and isinstance(i.get("value"), str)
               and i["value"].strip()}
    if len(numbers) == 1:
        about["person"] = {"nhs_number": numbers.pop()}
    return about or None


def _rejected(body: dict[str, Any], issues: list[dict[str, Any]], status: int = 422) -> JSONResponse:
    note = "The message is held in quarantine"
    if body.get("quarantine_id"):
        note += f" (quarantine id {body['quarantine_id']}; GET /v1/quarantine)"
    if body.get("correlation_id"):
        note += f"; correlation id {body['correlation_id']}"
    return outcome_of(status, [*issues, issue("information", "informational", note + ".")])


def _ok_bundle(request: Request, mapped: MappingResult, ns: Namespaces, key: str, text: str, duplicate: bool,
               focus: list[dict[str, Any]], system: str | None = None,
               warnings: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A FHIR response message `ok` to the request's MessageHeader, with an information issue `text` (and
    one saying it is a duplicate), then the `warnings` (issues of severity `warning`: accepted, but the sender
    should know). Its ids derive from `key`, so the same message again gets the same answer."""
    header_id = uuid5(RESPONSE_NAMESPACE, f"{key}/header")
    outcome_id = uuid5(RESPONSE_NAMESPACE, f"{key}/outcome")
    issues = [issue("information", "informational", text)]
    if duplicate:
        issues.append(issue("information", "informational", "Duplicate: this message was processed before; "
                             "the first answer is repeated and nothing new was recorded."))
    if warnings:
        issues.extend(warnings)
    header: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "id": header_id,
        "eventCoding": {"system": system or ns.change_type_codesystem, "code": mapped.event_code},
        "source": {"name": "S117 Hub", "endpoint": str(request.url)},
        "response": {"identifier": mapped.message_header_id, "code": "ok",
                     "details": {"reference": f"urn:uuid:{outcome_id}"}},
    }
    if focus:
        header["focus"] = focus
    if mapped.source_endpoint:
        header["destination"] = [{"endpoint": mapped.source_endpoint}]
    return {
        "resourceType": "Bundle",
        "id": uuid5(RESPONSE_NAMESPACE, f"{key}/bundle"),
        "type": "message",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "entry": [
            {"fullUrl": f"urn:uuid:{header_id}", "resource": header},
            {"fullUrl": f"urn:uuid:{outcome_id}",
             "resource": {"resourceType": "OperationOutcome", "id": outcome_id, "issue": issues}},
        ],
    }


def _response_bundle(request: Request, mapped: MappingResult, body: dict[str, Any],
                     ns: Namespaces) -> dict[str, Any]:
    """The FHIR response message for an accepted register change; each of the 202 body's `warnings` (a
    successor of a split council named to no effect: hub/ingest/service.py `successor_warnings`) a `warning`
    issue at the element the field came from (`business-rule`: recorded, but it changed nothing)."""
    change_id, person_id = body["change_id"], body["person_id"]
    sl = body.get("service_level") or {}
    text = (f"Register change accepted: change id {change_id}, person id {person_id}; "
            f"{len(body.get('events') or [])} event(s); register service level {sl.get('state', 'unknown')}"
            f" (deadline {sl.get('deadline', 'unknown')}).")
    warnings = [issue("warning", BUSINESS_RULE, w["reason"], mapped.location_of(w["field"]))
                for w in body.get("warnings") or ()]
    return _ok_bundle(request, mapped, ns, change_id, text, bool(body.get("duplicate")), [
        {"type": "Patient", "identifier": {"system": ns.person_id_system, "value": person_id}},
        {"identifier": {"system": ns.change_id_system, "value": change_id}},
    ], warnings=warnings)


def _retraction_bundle(request: Request, mapped: MappingResult, change_id: str, status: str, replay: bool,
                       ns: Namespaces) -> dict[str, Any]:
    """The FHIR response message for an Encounter entered in error: the change it named, retracted (or
    retracted before)."""
    text = ("Register change retracted (the Encounter was entered in error): change id " if status == CANCEL_RETRACTED
            else "Register change already retracted (the Encounter was entered in error): change id ") + change_id + "."
    return _ok_bundle(request, mapped, ns, f"{change_id}/retracted", text, replay,
                      [{"identifier": {"system": ns.change_id_system, "value": change_id}}])


async def _retract_in_error(request: Request, hub: Hub, client: Client, mapped: MappingResult, raw: bytes,
                            started: float, ns: Namespaces) -> JSONResponse:
    """A focused Encounter entered in error, its event `detained` or `left-hospital`: the access policy first,
    as for any message (nothing of one about someone the trust has no role for is kept); then the one change
    it names retracted, as an HL7 A11 / A13 retracts it (hub/retraction.py `retract_cancelled`): the person
    by NHS number, the change type, recorded by this client's organisation, not retracted, on the date the
    Encounter gives (period.start for a detention, period.end for a discharge, or the event-occurred
    extension) at its hospital. None or more than one: 422 business-rule, held in quarantine."""
    assert mapped.change is not None and mapped.entered_in_error is not None
    change = mapped.change
    refused = await hub.ingest.write_precheck(client, change, CHANNEL)
    if refused is not None:
        if refused_by_policy(refused):
            await no_sooner_than(started, hub.settings.write_refusal_floor_ms / 1000)
        return _refused(refused.body)
    where = mapped.entered_in_error

    async def held(location: str, code: str, reason: str, reason_code: str) -> JSONResponse:
        log.info("fhir entered-in-error held", source=client.client_id, status=422, reason_codes=[reason_code],
                 channel=CHANNEL)
        outcome = await hub.ingest.reject_unmapped(client, raw, CHANNEL, [FieldProblem(location, reason)],
                                                   source_message_id=mapped.source_message_id)
        return _rejected(outcome.body, [issue("error", code, reason, location)])

    nhs = (change.get("person") or {}).get("nhs_number")
    if not isinstance(nhs, str) or nhs_number_problem(nhs) is not None:
        return await held(mapped.location_of("person.nhs_number"), VALUE, "is not a valid NHS number: the change "
                          "the Encounter entered in error withdraws cannot be found", "no-nhs-number")
    try:
        on = date.fromisoformat(str(change.get("effective_date")))
    except ValueError:
        return await held(mapped.location_of("effective_date"), VALUE, "is not a valid date: the change the "
                          "Encounter entered in error withdraws cannot be found", "no-date")
    change_type = str(change["change_type"])
    message_id = mapped.message_header_id or mapped.source_message_id or ""
    cancel = Cancellation(message_id=mapped.source_message_id or message_id, change_type=change_type,
                          nhs_number=nhs, effective_date=on, hospital_ods=change.get("hospital_ods"),
                          reason=f"FHIR entered-in-error {message_id}"[:1000])
    service = hub.retractions  # the hub's one service (hub/bootstrap.py)
    assert service is not None
    done = await service.retract_cancelled(client, cancel, bound_correlation_id() or new_correlation_id(), CHANNEL)
    if done.status in (CANCEL_RETRACTED, CANCEL_ALREADY):
        assert done.change_id is not None
        return JSONResponse(_retraction_bundle(request, mapped, done.change_id, done.status, done.replay, ns),
                            status_code=200, media_type=FHIR_JSON)
    if done.status == CANCEL_KEY_REUSED:  # the message id was used for another message: nothing recorded
        return outcome_of(409, [issue("error", "duplicate", "was already used by this source for a different "
                                      "message; nothing was recorded", mapped.location_of("source_message_id"))])
    what = "detention" if change_type == "detained" else "discharge"
    found = "more than one" if done.status == CANCEL_AMBIGUOUS else "no"
    reason = (f"the Encounter was entered in error, but {found} {what} recorded by this trust and not retracted "
              f"matches the person ({mapped.location_of('person.nhs_number')}), the hospital "
              f"({mapped.location_of('hospital_ods') if 'hospital_ods' in mapped.origins else 'none named'}) and "
              f"the date ({mapped.location_of('effective_date')}): no change retracted")
    return await held(where, BUSINESS_RULE, reason, done.status)


async def _merge(request: Request, hub: Hub, client: Client, mapped: MappingResult, raw: bytes, started: float,
                 ns: Namespaces) -> JSONResponse:
    """A merge of two NHS numbers (the focused Patient's retained, its link `replaces` superseded): through the
    one merge service (hub/merges.py), as HL7 A40 and POST /v1/persons/merge. Refused for what it asks: the
    element named, held in quarantine (as an A40's AE is); by the access policy: 403 naming the rule, nothing
    kept (no sooner than the write refusal floor for no-relationship, whoever the numbers are)."""
    assert mapped.merge is not None
    service = hub.merges  # the hub's one service (hub/bootstrap.py)
    assert service is not None
    try:
        done = await service.merge(client, mapped.merge["retained"], mapped.merge["superseded"],
                                   bound_correlation_id() or new_correlation_id(), channel=CHANNEL)
    except MergeDenied as exc:
        if exc.decision.rule is Rule.NO_RELATIONSHIP:
            await no_sooner_than(started, hub.settings.write_refusal_floor_ms / 1000)
        return _refused({"rule": exc.decision.rule.value, "detail": exc.text})
    except MergeRefused as exc:
        location = mapped.location_of(exc.field)
        log.info("fhir merge held", source=client.client_id, status=exc.status, reason_codes=[exc.kind],
                 channel=CHANNEL)
        outcome = await hub.ingest.reject_unmapped(client, raw, CHANNEL, [FieldProblem(location, exc.reason)],
                                                   source_message_id=mapped.source_message_id)
        # A number that is not one, or the two the same: the value; the rest are the register's rules.
        code = "conflict" if exc.status == 409 else (
            BUSINESS_RULE if exc.field == "birth_date" or exc.reason.startswith("was itself superseded") else VALUE)
        return _rejected(outcome.body, [issue("error", code, exc.reason, location)], exc.status)
    body = done.body
    kept, gone = body["retained_person_id"], body["superseded_person_id"]
    text = ("NHS numbers merged: " + (f"retained person id {kept}" if kept else "neither number is on the register "
                                      "yet; a change under either will be one person")
            + (f"; superseded person id {gone}" if gone and gone != kept else "")
            + f"; {body['moved_changes']} register change(s) and {body['moved_cases']} case(s) joined.")
    focus = [{"type": "Patient", "identifier": {"system": ns.person_id_system, "value": kept}}] if kept else []
    return JSONResponse(_ok_bundle(request, mapped, ns, f"merge/{body['merge_id']}", text, done.duplicate, focus,
                                   ns.person_event_codesystem), status_code=200, media_type=FHIR_JSON)


@router.post(
    "/$process-message",
    status_code=200,
    summary="Record a register change sent as a FHIR R4 (UK Core) message Bundle",
    responses={
        200: {"description": "Accepted (or a duplicate of an accepted message), or the change a focused Encounter "
                             "entered-in-error names retracted: a FHIR response message Bundle (its "
                             "OperationOutcome a `warning` issue at the element of a value recorded that changed "
                             "nothing it named)",
              "content": {FHIR_JSON: {}}},
        403: answer("Refused by the access policy: an OperationOutcome naming the rule (or a key without the "
                    "register:write scope)", problem=False, fhir=True),
        409: answer("The message id was used for another change: nothing recorded; or a merge's superseded NHS "
                    "number was merged into another number already (held in quarantine)", problem=False, fhir=True),
        413: answer("The message is over 256 KB: nothing recorded", problem=False, fhir=True),
        406: answer("An answer other than FHIR R4 JSON was asked for (_format, Accept): nothing recorded",
                    problem=False, fhir=True),
        415: answer("A Content-Type other than application/fhir+json or application/json, or a fhirVersion "
                    "other than 4.0: nothing recorded", problem=False, fhir=True),
        422: answer("Rejected and quarantined: an OperationOutcome naming each FHIR location (an Encounter "
                    "entered-in-error matching no change, or more than one: business-rule; async other than "
                    "false: refused, nothing recorded)", problem=False, fhir=True),
    },
)
async def process_message(request: Request, hub: HubDep, client: ClientDep) -> JSONResponse:
    require(client, "register:write")
    # Before anything is read or recorded: a message in another format or FHIR version, an answer the
    # client cannot read, or an asynchronous exchange the hub does not offer (it would have been recorded,
    # then answered in a way the sender does not expect).
    unsendable = body_media_refusal(request.headers.get("content-type", ""), ACCEPTED_MEDIA_TYPES,
                                    "the message Bundle as application/fhir+json (or application/json)")
    if unsendable is not None:
        return outcome_of(415, [issue("error", "not-supported", *unsendable)])
    unreadable = format_refusal(request)
    if unreadable is not None:
        return outcome_of(406, [issue("error", "not-supported", *unreadable)])
    mode = request.query_params.get("async")
    if mode is not None and mode != "false":
        return outcome_of(422, [issue("error", "not-supported" if mode == "true" else VALUE,
                                     "the hub processes a message synchronously only: the answer to this request "
                                     "is the response message; send async=false or no async" if mode == "true"
                                     else "must be true or false (and the hub supports false only)", "async")])
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return outcome_of(413, [issue("error", "too-long", f"a message must be under {MAX_BODY} bytes")])

    started = time.monotonic()
    floor = hub.settings.write_refusal_floor_ms / 1000
    ns = hub.settings.namespaces()
    mapped = map_message(raw, ns)
    if not mapped.ok:
        # The access policy before anything of it is kept: a message about someone the trust has no role
        # for gets the refusal a well-formed one gets (a change that maps is asked by accept_mapped).
        about = _about(raw, ns)
        refused = await hub.ingest.write_precheck(client, about, CHANNEL, partial=True) if about else None
        if refused is not None:
            if refused_by_policy(refused):  # unknown and not-yours alike, in time too
                await no_sooner_than(started, floor)
            return _refused(refused.body)
        problems = list(mapped.problems)
        outcome = await hub.ingest.reject_unmapped(
            client, raw, CHANNEL, [FieldProblem(p.location, p.reason) for p in problems],
            source_message_id=mapped.source_message_id,
        )
        return _rejected(outcome.body, [issue("error", p.code, p.reason, p.location) for p in problems])

    if mapped.merge is not None:
        return await _merge(request, hub, client, mapped, raw, started, ns)
    assert mapped.change is not None
    if mapped.entered_in_error is not None:
        return await _retract_in_error(request, hub, client, mapped, raw, started, ns)
    outcome = await hub.ingest.accept_mapped(client, mapped.change, raw, CHANNEL)
    if outcome.status_code == 409:  # the message id was used for another change: nothing recorded
        return outcome_of(409, [issue("error", "duplicate", e["reason"], mapped.location_of(e["field"]))
                              for e in outcome.body.get("errors", [])])
    if outcome.status_code == 403:
        if refused_by_policy(outcome):
            await no_sooner_than(started, floor)
        return _refused(outcome.body)
    if outcome.is_problem:
        errors = outcome.body.get("errors") or []
        if not errors:
            errors = [{"field": "(body)", "reason": str(outcome.body.get("detail", "rejected"))}]
        issues = [
            issue("error", _code_for(e["reason"]) if e["field"] != "(body)" else INVALID, e["reason"],
                   mapped.location_of(e["field"]))
            for e in errors
        ]
        return _rejected(outcome.body, issues)
    return JSONResponse(_response_bundle(request, mapped, outcome.body, ns), status_code=200, media_type=FHIR_JSON)
