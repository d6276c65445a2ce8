"""Query a person's s117 position: GET /v1/persons/{person_id}/s117.

`person_id` is the hub's own identifier: NHS numbers never go in a URL (URLs
end up in access logs). Finding a person by NHS number is a POST with the
number in the body. The one access policy (hub/access.py) decides who may
read: a body with a role in the person's care now, or one that was a party on
the `as_of` date asked (its own period, nothing later) or was notified of the
person up to that date; writing about someone never makes a reader. The
answer carries only the field groups the caller's data-sharing agreement in
force allows (the same groups as the push messages). Transfers are only the
caller's own cases, and the funding part only the lines charged to a pair it
belongs to; with `as_of`, both as they stood then (nothing opened, begun or
done later). Every read, allowed or refused, is recorded in
`access_decisions`. "No such person", "not yours" and "no agreement" are one
identical 404.

The id of a person whose NHS number a merge superseded (hub/merges.py; their
history is the retained person's now) answers `410 Gone` problem details with
`merged_into`, the retained person's id, to a caller the policy lets read the
retained person (the read recorded as that person's); to anyone else the one
404 (no oracle). A 410 rather than a redirect: the id is not moved but
replaced (FHIR Patient.link `replaced-by`), and a client told of it must
update what it holds, not follow it silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select

from hub.access import (NOT_FOUND_DETAIL, AccessPolicy, ReadGrant, caller_of, filter_status, no_sooner_than,
                        record_decision)
from hub.domain.access import Decision, Role, Rule, decide_read
from hub.fhir.messages import IDENTITY
from hub.api.deps import ClientDep, HubDep, QueryDate, person_id_for_nhs_number, require
from hub.api.problems import ProblemError
from hub.codec import from_jsonable, to_jsonable
from hub.domain.model import RegisterChange, S117Status
from hub.domain.rules import evaluate
from hub.domain.views import RESPONSIBILITY_UNDETERMINED, undetermined_bodies
from hub.domain.workflows.model import Case
from hub.domain.working_days import add_working_days
from hub.ingest.service import Client
from hub.money.view import funding_view
from hub.sharing import FUNDING
from hub.store import merged
from hub.store.schema import disclosures, not_retracted, register_changes, service_levels
from hub.workflows.distribution import transfers_for_person
from hub.domain.dates import england_day

router = APIRouter(prefix="/v1/persons", tags=["persons"])


class LookupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nhs_number: str


def _not_found() -> ProblemError:
    return ProblemError(404, "not-found", "Not found", NOT_FOUND_DETAIL)


def _gone(retained_person_id: str) -> ProblemError:
    return ProblemError(410, "person-merged", "Gone",
                        "this hub person's NHS number was superseded by a merge (PDS): their register history is "
                        "the retained person's, merged_into; use that id from now on",
                        merged_into=retained_person_id)


async def _successor(hub, person_id: str) -> str | None:  # noqa: ANN001
    """The retained person's id, for the id of a person whose NHS number a merge superseded."""
    async with hub.engine.connect() as conn:
        found = await merged.successor(conn, person_id)
        await conn.rollback()
    return found


@router.post("/lookup", summary="Find the hub's person id for an NHS number (number in the body, never the URL)",
             responses={404: {"description": "No one on the register with that NHS number, or not yours to read "
                                             "(one answer)"}})
async def lookup(body: LookupIn, hub: HubDep, client: ClientDep) -> dict:
    require(client, "s117:read")
    grant = AccessPolicy.read_grant(hub.sharing, client, england_day())
    # Without `identity` the number is not even looked up (`_authorise` refuses and audits).
    person_id = await person_id_for_nhs_number(hub, body.nhs_number) if IDENTITY in grant.groups else None
    # Confirming who an NHS number belongs to discloses identity: the
    # agreement must grant it, like the NHS number in a push.
    await _authorise(hub, client, person_id, None, "lookup", needs=IDENTITY)
    return {"person_id": person_id}


async def _changes(hub, person_id: str) -> tuple[list[RegisterChange], dict[str, Any]]:  # noqa: ANN001
    """The person's changes and each one's service level (`received_at` among its facts: when the hub
    had it, for a read limited to what a body was told)."""
    async with hub.engine.connect() as conn:
        rows = (await conn.execute(
            select(register_changes.c.canonical, register_changes.c.received_at, service_levels.c.state,
                   service_levels.c.deadline)
            .join(service_levels, service_levels.c.change_id == register_changes.c.change_id, isouter=True)
            .where(register_changes.c.person_id == person_id, not_retracted())
        )).all()
        await conn.rollback()
    changes = [from_jsonable(RegisterChange, r.canonical) for r in rows]
    levels = {r.canonical["change_id"]: {"state": r.state, "deadline": r.deadline.isoformat() if r.deadline else None,
                                         "received_at": _instant(r.received_at)}
              for r in rows}
    return changes, levels


def _instant(at: datetime | str) -> datetime:
    """A stored instant, in UTC (SQLite hands back a naive or ISO value)."""
    at = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


async def _last_notified(hub, client: Client, person_id: str) -> datetime | None:  # noqa: ANN001
    """When the hub last told the caller's organisation of the person (an allowed disclosure)."""
    async with hub.engine.connect() as conn:
        at = (await conn.execute(select(func.max(disclosures.c.at)).where(
            disclosures.c.person_id == person_id, disclosures.c.recipient_org == client.org_code,
            disclosures.c.decision == "allowed"))).scalar_one_or_none()
        await conn.rollback()
    return None if at is None else _instant(at)


async def _authorise(
    hub, client: Client, person_id: str | None, as_of: date | None, channel: str,  # noqa: ANN001
    needs: str | None = None,
) -> tuple[list[RegisterChange], dict[str, Any], S117Status, ReadGrant]:
    """The person's changes, service levels, status at `as_of` (today if not
    given) and the field groups the caller may see; otherwise the one 404.
    Audited either way."""
    started = time.monotonic()
    today = england_day()
    grant = AccessPolicy.read_grant(hub.sharing, client, today)
    # No agreement (or none granting what the read needs): refused before the
    # person is read, so the answer's time says nothing of who is on the register.
    unentitled = not grant.groups or (needs is not None and needs not in grant.groups)
    changes, levels = await _changes(hub, person_id) if person_id and not unentitled else ([], {})
    if not changes and person_id and not unentitled and (retained := await _successor(hub, person_id)):
        # A superseded person's id: where they went, to a caller who may read the retained person (that read
        # recorded as any is); anyone else the one 404, as for an unknown id.
        await _authorise(hub, client, retained, as_of, channel, needs)
        raise _gone(retained)
    decision = Decision(False, Rule.NO_AGREEMENT if unentitled else Rule.NO_RELATIONSHIP)
    status = None
    if changes:
        policy = hub.ingest.access
        status_now = evaluate(person_id, changes, hub.ref, hub.agreements, today)
        status = status_now
        at_as_of = None
        if as_of is not None and as_of != today:
            status = evaluate(person_id, changes, hub.ref, hub.agreements, as_of)
            at_as_of = policy.facts(status, changes, up_to=as_of)
        facts_now = policy.facts(status_now, changes)
        decision = decide_read(caller_of(client), facts_now, at_as_of, as_of is not None, as_of or today, None)
        if not decision.allowed:
            # A body the hub told of the person reads it up to the day it was last
            # told: asked with no date, the date is today, as if as_of=today.
            told_at = await _last_notified(hub, client, person_id)
            decision = decide_read(caller_of(client), facts_now, at_as_of, True, as_of or today,
                                   england_day(told_at) if told_at else None)
            if decision.allowed and decision.role is Role.NOTIFIED:
                # Told of the person, no part in their care: the register as the hub had it when it
                # last told the body, never a change it received after (the same day's, or a late
                # report about an earlier day).
                changes = [c for c in changes if levels[c.change_id]["received_at"] <= told_at]
                status = evaluate(person_id, changes, hub.ref, hub.agreements, as_of or today)
        if decision.allowed and (not grant.groups or (needs is not None and needs not in grant.groups)):
            decision = Decision(False, Rule.NO_AGREEMENT, decision.role)
    async with hub.engine.begin() as conn:
        await record_decision(conn, client, channel=channel, action="read", decision=decision,
                              person_id=person_id if changes else None, agreement_id=grant.agreement_id,
                              field_groups=grant.groups if decision.allowed else (), as_of=as_of)
    if not decision.allowed or status is None:
        # The same answer as "not found": do not confirm who is on the register,
        # not even by the time it took (S117_READ_REFUSAL_FLOOR_MS).
        await no_sooner_than(started, hub.settings.read_refusal_floor_ms / 1000)
        raise _not_found()
    return changes, levels, status, grant


@router.get("/{person_id}/s117", summary="Entitlement, responsible bodies with explanations, reviews, disputes, history",
            responses={404: {"description": "No one on the register with that id, or not yours to read (one answer)"},
                       410: {"description": "The id of a person whose NHS number a merge superseded: `merged_into` "
                                            "names the retained person (only to a caller who may read them)"}})
async def s117_position(
    person_id: Annotated[str, Path(max_length=36)], hub: HubDep, client: ClientDep, as_of: QueryDate | None = None,
) -> dict:
    require(client, "s117:read")
    changes, levels, status, grant = await _authorise(hub, client, person_id, as_of, "query")
    body = to_jsonable(status)
    # A responsible body owed and not determined, said (H-03): `responsible_council` null alone
    # cannot tell it from "not disclosed". Always a list (empty: none); only with `responsibility`.
    body[RESPONSIBILITY_UNDETERMINED] = list(undetermined_bodies(status))
    if "workflow" in grant.groups:
        # Transfer pending / accepted (hub/workflows/distribution.py): the caller's own cases
        # (every case for the hub operator), as they stood on `as_of`, nothing later.
        async with hub.engine.connect() as conn:
            body["transfers"] = await transfers_for_person(
                conn, person_id, as_of=as_of, party=None if "hub:admin" in client.scopes else client.org_code,
                acknowledge_by=_acknowledge_by(hub))
            await conn.rollback()
    body["register_service_level"] = [
        {"change_id": c.change_id, "change_type": c.change_type.value, "notified_on": c.notified_on.isoformat(),
         "recorded_on": c.recorded_on.isoformat(),
         **{k: v for k, v in levels.get(c.change_id, {}).items() if k != "received_at"}}
        for c in sorted(changes, key=lambda c: (c.recorded_on, c.change_id))
        if as_of is None or c.effective_date <= as_of
    ]
    await _add_funding(hub, client, person_id, status, body, as_of)
    return filter_status(body, grant.groups)


def _acknowledge_by(hub) -> Callable[[Case], date]:  # noqa: ANN001
    """A transfer's acknowledgement deadline from its area agreement (as the
    workflows set its clock), for a case whose clock has since stopped."""
    book = hub.agreements
    areas = {a.name: a for a in (book.default_area, *book.areas.values())}

    def due(case: Case) -> date:
        area = areas.get(case.area, book.default_area)
        return add_working_days(case.opened_on, area.acknowledgement_working_days, hub.ref.bank_holidays())
    return due


async def _add_funding(hub, client: Client, person_id: str, status: S117Status, body: dict,  # noqa: ANN001
                       as_of: date | None) -> None:
    """Costs, providers, the split with its citation and agreed interim
    dispute shares: only for bodies an agreement grants the `funding` field
    group (hub/money/view.py), and of those only the lines charged to a pair
    the caller belongs to, begun by `as_of` (hub/money/service.py
    `funding_for`; for the hub operator no pair filter, the date's still)."""
    today = england_day()
    admin = "hub:admin" in client.scopes
    if hub.packages is None or not (admin or hub.sharing.grants_group(client.org_code, FUNDING, today)):
        return
    lines, decisions, interims = await hub.packages.funding_for(person_id, None if admin else client.org_code,
                                                                as_of)
    body["funding"] = funding_view(status, hub.agreements, lines, decisions, status.as_of, interims)
