"""POST /v1/register-changes/{change_id}/retraction: a register change
retracted as recorded in error, by the organisation whose client recorded it
or the hub operator (hub/retraction.py, hub/domain/retraction.py).

Anyone else gets the answer an unknown change id gets (`404`, the same body,
no sooner than the write refusal floor): no oracle of what others recorded.
A change retracted already is answered with the first retraction (`200`,
`duplicate: true`)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.access import no_sooner_than
from hub.api.deps import ClientDep, HubDep, require
from hub.api.problems import ProblemError
from hub.domain.retraction import REASON_MAX
from hub.ingest.contract import FreeText
from hub.observability.logging import bound_correlation_id, new_correlation_id
from hub.retraction import RecordedByACase

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
    duplicate: bool = Field(description="true: retracted before; this is the first retraction's answer")


@router.post(
    "/{change_id}/retraction", response_model=RetractionOut,
    summary="Retract a register change recorded in error (its source's organisation, or the hub operator)",
    responses={404: {"description": "No register change with that id this client may retract (the same answer "
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
    if done is None:
        await no_sooner_than(started, hub.settings.write_refusal_floor_ms / 1000)
        raise ProblemError(404, "not-found", "Not found", NOT_FOUND_DETAIL)
    return {**done.body, "duplicate": done.duplicate}
