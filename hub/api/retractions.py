"""POST /v1/register-changes/{change_id}/retraction: a register change
retracted as recorded in error, by the organisation whose client recorded it
or the hub operator (hub/retraction.py, hub/domain/retraction.py).

Anyone else gets the answer an unknown change id gets (`404`, the same body,
no sooner than the write refusal floor): no oracle of what others recorded.
A change retracted already is answered with the retraction standing (`200`,
`duplicate: true`; once reversed, a retraction asked is a new one).

POST /v1/register-changes/{change_id}/retraction/reversal: a retraction made
in error reversed, the change reinstated under its own id and recorded time
(hub/unretractions.py), by those who may retract it; anyone else and an
unknown id get one identical `404` (no sooner than the write refusal floor).
A change not retracted, or sent again (the same event recorded by the
organisation again and standing: reinstated, it would count twice), or a
case withdrawn since: `409` naming `change_id` (to those who may retract it
only). Asked again while the change stands, the latest reversal's answer
(`duplicate: true`); once it is retracted again, a new reversal."""

from __future__ import annotations

import time

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.api.deps import ClientDep, HubDep, require
from hub.api.problems import ProblemError, correction_answer
from hub.domain.retraction import REASON_MAX
from hub.ingest.contract import FreeText
from hub.observability.logging import bound_correlation_id, new_correlation_id
from hub.retraction import RecordedByACase
from hub.unretractions import NotRetracted, ReinstatementRefused, SentAgain

router = APIRouter(prefix="/v1/register-changes", tags=["register changes"])

NOT_FOUND_DETAIL = "no register change with that id for this client"


class ReasonIn(BaseModel):
    """The body of an undoing of something recorded in error: why, in words (a retraction here, the
    reversal of a merge: hub/api/merges.py)."""

    model_config = ConfigDict(extra="forbid")
    reason: FreeText = Field(min_length=1, max_length=REASON_MAX,
                             description="Why it was recorded or made in error (kept encrypted; never logged)")

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class RetractionIn(ReasonIn):
    """Why the change was recorded in error."""


class RetractionOut(BaseModel):
    change_id: str
    person_id: str
    status: str = Field(description="retracted")
    retracted_at: str
    retracted_by: str = Field(description="the organisation that retracted it")
    correlation_id: str
    event_id: str = Field(description="the event whose dispatch corrects what each body was told")
    duplicate: bool = Field(description="true: retracted already; this is the standing retraction's answer")


@router.post(
    "/{change_id}/retraction", response_model=RetractionOut,
    summary="Retract a register change recorded in error (its source's organisation, or the hub operator)",
    responses={200: {"description": "Retracted (or retracted already: the standing retraction's answer, "
                                    "`duplicate` true)"},
               404: {"description": "No register change with that id this client may retract (the same answer "
                                    "for an unknown id and for another organisation's change)"},
               409: {"description": "The hub's own record for a transfer or dispute case: corrected on the case"}})
async def retract(change_id: str, body: RetractionIn, hub: HubDep, client: ClientDep) -> dict:
    require(client, "register:write")
    started = time.monotonic()
    service = hub.retractions  # the hub's one service (hub/bootstrap.py), as MLLP and FHIR use it
    assert service is not None
    try:
        done = await service.retract(client, change_id, body.reason, bound_correlation_id() or new_correlation_id())
    except RecordedByACase:
        raise ProblemError(409, "recorded-by-a-case", "Recorded by a case",
                           "change_id: this change is the hub's record of a transfer's or dispute's outcome or of a "
                           "party's action on it: correct it on the case (/v1/transfers, /v1/disputes), not by "
                           "retraction", errors=[{"field": "change_id", "reason": "recorded by the hub for a "
                                                  "transfer or dispute case"}]) from None
    return await correction_answer(hub, started, done, NOT_FOUND_DETAIL)


class ReinstatementIn(ReasonIn):
    """Why the retraction was made in error."""


class ReinstatementOut(BaseModel):
    change_id: str
    person_id: str
    status: str = Field(description="reinstated")
    reinstated_at: str
    reinstated_by: str = Field(description="the organisation that reversed the retraction")
    correlation_id: str
    event_id: str = Field(description="the event whose dispatch corrects what each body was told")
    retracted_at: str | None = Field(description="when the retraction reversed was made")
    retracted_by: str | None = Field(description="the organisation that made the retraction reversed")
    retraction_event_id: str = Field(description="the event that told the retraction reversed")
    duplicate: bool = Field(description="true: reversed before; this is the latest reversal's answer")


@router.post(
    "/{change_id}/retraction/reversal", response_model=ReinstatementOut,
    summary="Reverse a retraction made in error: the change counts again under its own id and recorded time "
            "(its source's organisation, or the hub operator)",
    responses={200: {"description": "Reinstated (or reinstated already while the change stands: the latest "
                                    "reversal's answer, `duplicate` true)"},
               404: {"description": "No register change with that id this client may retract (the same answer "
                                    "for an unknown id and for another organisation's change)"},
               409: {"description": "Not retracted (never retracted); sent again (`sent-again`: a change of "
                                    "the same organisation or the hub operator restating it stands in the "
                                    "history, named in `standing` by change_id and source_message_id: retract it "
                                    "first); or not reversible here: a transfer or dispute case was withdrawn or "
                                    "reopened since the retraction"}})
async def reinstate(change_id: str, body: ReinstatementIn, hub: HubDep, client: ClientDep) -> dict:
    require(client, "register:write")
    started = time.monotonic()
    service = hub.retractions  # the hub's one service (hub/bootstrap.py)
    assert service is not None
    try:
        done = await service.reversals.reinstate(client, change_id, body.reason,
                                                 bound_correlation_id() or new_correlation_id())
    except NotRetracted:
        raise ProblemError(409, "not-retracted", "Not retracted", "change_id: this change is not retracted",
                           errors=[{"field": "change_id", "reason": "not retracted"}]) from None
    except SentAgain as exc:
        raise ProblemError(409, "sent-again", "Sent again", f"{exc.field}: {exc.reason}",
                           errors=[{"field": exc.field, "reason": exc.reason}],
                           standing=[{"change_id": cid, "source_message_id": smid}
                                     for cid, smid in exc.standing]) from None
    except ReinstatementRefused as exc:
        raise ProblemError(409, "conflict", "Conflict", f"{exc.field}: {exc.reason}",
                           errors=[{"field": exc.field, "reason": exc.reason}]) from None
    return await correction_answer(hub, started, done, NOT_FOUND_DETAIL)
