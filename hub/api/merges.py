"""POST /v1/persons/merge: two NHS numbers of one patient merged (PDS), the
superseded number's register history joined to the retained number's person
(hub/merges.py). The numbers go in the body, never the URL.

Allowed to the hub operator and to a trust with a role for every hub person
the merge joins (the one access policy: `hub.domain.access.decide_merge`); a
number pair not on the register and a person the trust has no role for get
one identical `403` (no sooner than the write refusal floor). The same merge
again is answered with the first answer (`duplicate: true`).

POST /v1/persons/merges/{merge_id}/reversal: a merge made in error (two
patients, not one) reversed (hub/unmerges.py), by the organisation whose
client recorded it or the hub operator; anyone else and an unknown id get one
identical `404` (no sooner than the write refusal floor). The same reversal
again is answered with the first answer (`duplicate: true`).

GET /v1/persons/merges/{merge_id}: the merge read back (hub/merge_reads.py),
with its reversal if one was made, by those who may reverse it (the
organisation whose client recorded it, the hub operator); the NHS numbers
only under the `identity` field group of an agreement in force. Anyone else
and an unknown id get one identical `404` (no sooner than the read refusal
floor)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from hub.access import AccessPolicy, no_sooner_than
from hub.api.deps import ClientDep, HubDep, require
from hub.api.problems import ProblemError, correction_answer
from hub.api.retractions import ReasonIn
from hub.domain.access import Rule
from hub.domain.dates import england_day
from hub.merge_reads import read_merge
from hub.merges import MergeDenied, MergeRefused
from hub.unmerges import ReversalRefused
from hub.observability.logging import bound_correlation_id, new_correlation_id

router = APIRouter(prefix="/v1/persons", tags=["persons"])


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retained_nhs_number: str = Field(max_length=32, description="The NHS number PDS kept (HL7 A40: PID-3)")
    superseded_nhs_number: str = Field(max_length=32, description="The NHS number PDS superseded (HL7 A40: MRG-1)")
    force: bool = Field(False, description="Hub operator only: merge although the two persons' dates of birth "
                                           "differ (recorded with the merge)")


class MergeOut(BaseModel):
    merge_id: str
    status: str = Field(description="merged")
    retained_person_id: str | None = Field(description="The hub person both numbers now resolve to (null: "
                                                       "neither number is on the register yet)")
    superseded_person_id: str | None = Field(description="The hub person the superseded number held, if any: "
                                                         "its register history joined the retained person's")
    moved_changes: int = Field(description="Register changes joined to the retained person's history")
    moved_cases: int = Field(description="Transfer and dispute cases of the superseded person given to the "
                                         "retained person (each with a `merge` step in its history)")
    forced: bool
    merged_at: str
    merged_by: str = Field(description="the organisation that merged them")
    correlation_id: str
    event_id: str | None = Field(description="The event whose dispatch tells every body told of either person "
                                             "(null: no body was told of the superseded number)")
    duplicate: bool = Field(description="true: merged before; this is the first merge's answer")


@router.post(
    "/merge", response_model=MergeOut,
    summary="Merge two NHS numbers of one patient (PDS): the superseded number's history joins the retained one's",
    responses={403: {"description": "Refused by the access policy (the rule named): the same answer for numbers "
                                    "not on the register and for a person this trust has no role for"},
               409: {"description": "The superseded number was merged into another number already"},
               422: {"description": "A number invalid, the two the same, the retained number itself superseded, "
                                    "or dates of birth that differ (the field named)"}})
async def merge(body: MergeIn, hub: HubDep, client: ClientDep) -> dict:
    require(client, "register:write")
    started = time.monotonic()
    service = hub.merges  # the hub's one service (hub/bootstrap.py), as MLLP uses it
    assert service is not None
    try:
        done = await service.merge(client, body.retained_nhs_number, body.superseded_nhs_number,
                                   bound_correlation_id() or new_correlation_id(), force=body.force)
    except MergeRefused as exc:
        title = "Conflict" if exc.status == 409 else "Request rejected"
        raise ProblemError(exc.status, exc.kind, title, f"{exc.field} {exc.reason}",
                           errors=[{"field": exc.field, "reason": exc.reason}]) from None
    except MergeDenied as exc:
        if exc.decision.rule is Rule.NO_RELATIONSHIP:
            await no_sooner_than(started, hub.settings.write_refusal_floor_ms / 1000)
        raise ProblemError(403, "forbidden", "Not permitted", exc.text, rule=exc.decision.rule.value,
                           errors=[{"field": "(body)", "reason": exc.text}]) from None
    return {**done.body, "duplicate": done.duplicate}


NOT_FOUND_DETAIL = "no merge with that id this client may reverse"


class ReversalIn(ReasonIn):
    """Why the merge was made in error."""


class ReversalOut(BaseModel):
    merge_id: str
    status: str = Field(description="reversed")
    retained_person_id: str | None = Field(description="The hub person the retained number holds")
    superseded_person_id: str | None = Field(description="The hub person the superseded number holds again (null: "
                                                         "it held none when merged)")
    moved_back_changes: int = Field(description="Register changes given back to the superseded person")
    moved_back_cases: int = Field(description="Transfer and dispute cases given back (each with an `unmerge` step)")
    moved_back_care_package_lines: int
    moved_back_split_decisions: int
    unattributed_changes: list[str] = Field(description="Register changes recorded since the merge under either "
                                                        "number: the hub cannot tell which number was sent, so they "
                                                        "stay with the retained number's person; check each, and "
                                                        "retract and resend one that was the other patient's")
    unattributed_care_package_lines: list[int] = Field(description="Care package lines recorded since the merge "
                                                                   "(not a version of a package it moved): as above")
    unattributed_split_decisions: list[str] = Field(description="Split decisions proposed since the merge: as above")
    merged_at: str | None
    merged_by: str | None = Field(description="the organisation that merged them")
    reversed_at: str
    reversed_by: str = Field(description="the organisation that reversed the merge")
    correlation_id: str
    event_id: str | None = Field(description="The event telling the retained number's person's corrected position "
                                             "(null: the merge had changed no person)")
    event_ids: list[str] = Field(description="Every event the reversal published (one a person it changed)")
    duplicate: bool = Field(description="true: reversed before; this is the first reversal's answer")


@router.post(
    "/merges/{merge_id}/reversal", response_model=ReversalOut,
    summary="Reverse a merge of two NHS numbers made in error (its organisation, or the hub operator)",
    responses={404: {"description": "No merge with that id this client may reverse (the same answer for an "
                                    "unknown id and for another organisation's merge)"},
               409: {"description": "Not reversible here: the retained number merged into another since (reverse "
                                    "that first), or a merge recorded before the hub kept what a reversal needs"}})
async def reverse(merge_id: str, body: ReversalIn, hub: HubDep, client: ClientDep) -> dict:
    require(client, "register:write")
    started = time.monotonic()
    service = hub.merges  # the hub's one service (hub/bootstrap.py)
    assert service is not None
    try:
        done = await service.reversals.reverse(client, merge_id, body.reason,
                                               bound_correlation_id() or new_correlation_id())
    except ReversalRefused as exc:
        raise ProblemError(409, "conflict", "Conflict", f"{exc.field}: {exc.reason}",
                           errors=[{"field": exc.field, "reason": exc.reason}]) from None
    return await correction_answer(hub, started, done, NOT_FOUND_DETAIL)


READ_NOT_FOUND_DETAIL = "no merge with that id this client may read"


class IdentityOut(BaseModel):
    person_id: str | None = Field(description="The hub person (null: the number held none)")
    nhs_number: str | None = Field(None, description="Only with the `identity` field group of an agreement in "
                                                     "force (absent otherwise); null: the hub keeps this number "
                                                     "nowhere now (a reversed link of numbers no person held)")


class MovedOut(BaseModel):
    changes: int | None = Field(description="Register changes (null: not recorded, a merge before migration 0039)")
    cases: int | None = Field(description="Transfer and dispute cases")
    care_package_lines: int | None
    split_decisions: int | None


class ReversalRecordOut(BaseModel):
    reversed_at: str
    reversed_by: str = Field(description="the organisation that reversed the merge")
    reason: str = Field(description="Why the merge was made in error, as the reversal gave it")
    moved_back: MovedOut = Field(description="What went back to the superseded person")
    unattributed_changes: list[str] = Field(description="Register changes recorded since the merge under either "
                                                        "number, left with the retained number's person")
    event_ids: list[str] = Field(description="The events that told the reversal")


class MergeRecordOut(BaseModel):
    merge_id: str
    status: str = Field(description="merged, or reversed")
    merged_at: str | None
    merged_by: str | None = Field(description="the organisation that merged them")
    channel: str | None = Field(description="rest, mllp (HL7 A40) or fhir")
    forced: bool = Field(description="Dates of birth differed and the hub operator forced it")
    retained: IdentityOut = Field(description="The retained NHS number's identity")
    superseded: IdentityOut = Field(description="The superseded NHS number's identity")
    moved: MovedOut = Field(description="What the merge joined to the retained person")
    event_id: str | None = Field(description="The event that told the merge (null: no body was told)")
    reversal: ReversalRecordOut | None = Field(description="The reversal of a merge made in error (null: none)")


@router.get(
    "/merges/{merge_id}", response_model=MergeRecordOut, response_model_exclude_unset=True,
    summary="A merge of two NHS numbers and its reversal if any (its organisation, or the hub operator)",
    responses={404: {"description": "No merge with that id this client may read (the same answer for an unknown "
                                    "id and for another organisation's merge)"}})
async def read(merge_id: Annotated[str, Path(max_length=36)], hub: HubDep, client: ClientDep) -> dict:
    require(client, "register:write")
    started = time.monotonic()
    grant = AccessPolicy.read_grant(hub.sharing, client, england_day())
    body = await read_merge(hub.engine, hub.protector, client, merge_id, grant, bound_correlation_id())
    if body is None:
        # The same answer as an unknown id, no sooner than a read that found one (S117_READ_REFUSAL_FLOOR_MS).
        await no_sooner_than(started, hub.settings.read_refusal_floor_ms / 1000)
        raise ProblemError(404, "not-found", "Not found", READ_NOT_FOUND_DETAIL)
    return body
