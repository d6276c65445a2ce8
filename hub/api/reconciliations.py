"""Reconciliation: a body sends its whole list; the hub answers with the
differences from the register and who must act on each.

POST /v1/reconciliations?format=ndjson|json|swift_snapshot_csv streams the list
in (any size, bounded memory) and answers 202 with the snapshot id; the
comparison runs in the background. GET shows progress, then the report (JSON,
or CSV for the body's own team). A snapshot never changes the register.

A body sees only differences about people it has a part in, and the hub's
side of them only within its data-sharing agreement: the responsible bodies
need `responsibility`, the register's reasons `explanations`. A person the
body has no part in is reported exactly as one the hub has never heard of.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from adapters.snapshots import FORMATS
from hub.access import AccessPolicy, record_decision
from hub.api.deps import ClientDep, HubDep, QueryDate, require
from hub.api.problems import ProblemError
from hub.domain.access import Rule
from hub.domain.reconciliation import ItemState
from hub.ingest.contract import FREE_TEXT
from hub.ingest.validation import PATTERN_REASONS
from hub.ingest.service import Client
from hub.drift_alerts import alert_overview
from hub.observability.logging import bound_correlation_id
from hub.reconciliation import Body, drift_history, items_csv_lines
from hub.domain.dates import england_day

router = APIRouter(prefix="/v1/reconciliations", tags=["reconciliation"])
ops_router = APIRouter(prefix="/v1/ops", tags=["operations"])

SCOPE = "s117:read"
MAX_SNAPSHOT = 200 * 1024 * 1024  # 100,000 rows is about 20 MB of NDJSON
CONTENT_FORMATS = {"application/x-ndjson": "ndjson", "application/json": "json", "text/csv": "swift_snapshot_csv"}
NOT_FOUND = ("no reconciliation with that id for this client")
_FREE_TEXT = re.compile(FREE_TEXT)
SnapshotId = Annotated[str, Path(min_length=36, max_length=36, pattern=r"^[0-9a-f-]{36}$")]


def _agreement_groups(hub: Any, client: Client, on: date) -> frozenset[str] | None:
    """The field groups the caller's agreements in force grant (None: none in force)."""
    if "hub:admin" in client.scopes:
        return frozenset({"responsibility", "explanations"})
    grants = [g for g in hub.sharing.grants_for(client.org_code) if g.in_force(on)]
    if not grants:
        return None
    return frozenset().union(*(g.field_groups for g in grants))


async def _limited(request: Request) -> AsyncIterator[bytes]:
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_SNAPSHOT:
                raise ProblemError(413, "too-large", "Snapshot too large",
                                   f"a snapshot must be at most {MAX_SNAPSHOT} bytes")
            yield chunk
    except ClientDisconnect:
        # The upload cut off (the sender's job killed, a dropped link): the snapshot is failed naming
        # (body) (hub/reconciliation.py), answered as a body that did not arrive, not a 500.
        raise ProblemError(408, "body-incomplete", "Request body incomplete",
                           "the connection closed before the whole snapshot arrived: send it again",
                           errors=[{"field": "(body)", "reason": "ended before the whole snapshot arrived"}]
                           ) from None


@router.post("", status_code=202,
             summary="Send the body's whole s117 list for reconciliation (NDJSON, JSON array or CSV); never changes the register",
             responses={415: {"description": "A snapshot format other than the ones taken"}})
async def send_snapshot(
    request: Request, hub: HubDep, client: ClientDep,
    format: Annotated[Literal["ndjson", "json", "swift_snapshot_csv"] | None, Query(
        description="default from Content-Type")] = None,
    as_of: Annotated[QueryDate | None, Query(description="the date the list describes; default today")] = None,
) -> dict:
    require(client, SCOPE)
    today = england_day()
    if _agreement_groups(hub, client, today) is None:
        raise ProblemError(403, "forbidden", "Not permitted",
                           "no data-sharing agreement in force names this organisation")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_SNAPSHOT:
        raise ProblemError(413, "too-large", "Snapshot too large", f"a snapshot must be at most {MAX_SNAPSHOT} bytes")
    fmt = format or CONTENT_FORMATS.get(request.headers.get("content-type", "").split(";")[0].strip().lower())
    if fmt not in FORMATS:
        raise ProblemError(415, "unsupported-media-type", "Unsupported snapshot format",
                           "send application/x-ndjson, application/json or text/csv, or name the format",
                           errors=[{"field": "format", "reason": f"must be one of {list(FORMATS)}"}])
    if as_of is not None and as_of > today:
        raise ProblemError(422, "invalid-request", "Request rejected", "as_of is in the future",
                           errors=[{"field": "as_of", "reason": "must not be in the future"}])
    body = Body(client.client_id, client.org_code, client.org_kind)
    return await hub.reconciliation.receive(body, fmt, _limited(request), as_of or today)


# Reads of a report, its CSV and an item decision's answer in `access_decisions` (channel
# `reconciliation`, action `read`; what was read in the change type).
CHANNEL = "reconciliation"
REPORT, REPORT_CSV, ITEM = "report", "report-csv", "item-decision"


async def _audit_read(hub: Any, client: Client, *, allowed: bool, what: str,
                      person_ids: Iterable[str | None] = (), groups: frozenset[str] = frozenset()) -> None:
    """A read recorded, allowed or refused: one row for each hub person the answer names (so a
    subject-access look-up, `POST /v1/ops/audit/person`, finds the body's every read of the person),
    or one row naming no one (a report in progress, one naming only people the hub does not know, a
    refusal). A report's rows go in one statement (executemany): a body reading its report of 5,000
    people writes 5,000 rows, as 5,000 person queries would, in one transaction."""
    grant = AccessPolicy.read_grant(hub.sharing, client, england_day())
    people = sorted({p for p in person_ids if p})
    async with hub.engine.begin() as conn:
        await record_decision(conn, client, channel=CHANNEL, action="read", allowed=allowed,
                              rule=Rule.ALLOWED if allowed else Rule.NO_RELATIONSHIP, change_type=what,
                              person_ids=people or None, agreement_id=grant.agreement_id if allowed else None,
                              field_groups=groups if allowed else (), correlation_id=bound_correlation_id())


async def _own(hub: Any, client: Client, snapshot_id: str, what: str) -> Any:
    snap = await hub.reconciliation.snapshot_row(snapshot_id)
    if snap is None or (snap.body_org != client.org_code and "hub:admin" not in client.scopes):
        await _audit_read(hub, client, allowed=False, what=what)  # another body's report, or none: refused
        raise ProblemError(404, "not-found", "Not found", NOT_FOUND)
    return snap


def _within_agreement(item: dict[str, Any], groups: frozenset[str]) -> dict[str, Any]:
    out = dict(item)
    if item["field"] in ("responsible_council", "responsible_icb") and "responsibility" not in groups:
        out["hub_says"] = None
    if "explanations" not in groups:
        out["explanation"] = None
    return out


@router.get("/{snapshot_id}", summary="Progress, then the drift report (JSON, or CSV with ?format=csv)",
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
                       404: {"description": "No snapshot with that id for this client"}})
async def report(
    snapshot_id: SnapshotId, hub: HubDep, client: ClientDep,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Any:
    require(client, SCOPE)
    snap = await _own(hub, client, snapshot_id, REPORT_CSV if format == "csv" else REPORT)
    groups = _agreement_groups(hub, client, england_day()) or frozenset()
    body = await hub.reconciliation.snapshot(snapshot_id)
    # The state of this read, not of the ownership check's earlier one: a comparison finishing in
    # between must not answer "done" with no items (its items commit with the state).
    done = body["state"] == "done"
    items = [_within_agreement(i, groups) for i in await hub.reconciliation.items_for_snapshot(snap)] if done else []
    # People the body listed in rows rejected for a field other than the NHS number: "row rejected" with the
    # row's errors, not compared (never reported missing from the list). The row is the body's own: telling it
    # says nothing about the register. Read from the done snapshot (its summary holds the rows).
    rejected = await hub.reconciliation.rejected_for_snapshot(
        await hub.reconciliation.snapshot_row(snapshot_id)) if done else []
    # Recorded before any of it is sent: each hub person the report names (the rejected rows are the
    # body's own, naming no one the hub knows).
    await _audit_read(hub, client, allowed=True, what=REPORT_CSV if format == "csv" else REPORT,
                      person_ids=[i["person_id"] for i in items], groups=groups)
    if format == "csv":
        return StreamingResponse(iter(items_csv_lines(items, rejected)), media_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="reconciliation-{snapshot_id}.csv"'})
    return body | {"items": items, "rejected_rows": rejected}


class ItemDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Literal["open", "explained", "accepted"]
    # Shown in the report (JSON and CSV) and the console: no control or bidirectional formatting character but
    # tab, CR and LF, as the register change contract's free text (review_reason).
    reason: str | None = Field(default=None, max_length=500)

    @field_validator("reason")
    @classmethod
    def _free_text(cls, v: str | None) -> str | None:
        if v is not None and not _FREE_TEXT.match(v):
            raise PydanticCustomError("free_text", PATTERN_REASONS[FREE_TEXT])  # the reason, no "Value error, "
        return v


@router.post("/items/{item_id}", summary="Explain, accept as is (with a reason) or reopen one difference",
             responses={404: {"description": "No reconciliation item with that id for this client"},
                        409: {"description": "Not a transition the item's state allows"}})
async def decide_item(item_id: SnapshotId, decision: ItemDecision, hub: HubDep, client: ClientDep) -> dict:
    require(client, SCOPE)
    try:
        item = await hub.reconciliation.set_item_state(client.org_code, item_id, ItemState(decision.state),
                                                       decision.reason, "hub:admin" in client.scopes)
    except ValueError as exc:
        field, _, reason = str(exc).partition(": ")
        raise ProblemError(409 if field == "state" else 422, "invalid-transition" if field == "state" else "invalid-request",
                           "Item not changed", str(exc), errors=[{"field": field, "reason": reason}]) from exc
    if item is None:
        await _audit_read(hub, client, allowed=False, what=ITEM)
        raise ProblemError(404, "not-found", "Not found", "no reconciliation item with that id for this client")
    # The answer shows the item as the report does: a read of the person it names, recorded, and within
    # the body's agreement (without `explanations`, no explanation; without `responsibility`, not the
    # register's responsible body).
    groups = _agreement_groups(hub, client, england_day()) or frozenset()
    await _audit_read(hub, client, allowed=True, what=ITEM, person_ids=[item["person_id"]], groups=groups)
    return _within_agreement(item, groups)


@ops_router.get("/reconciliation", summary="Differences per body and kind for each compared snapshot (console)")
async def reconciliation_overview(hub: HubDep, client: ClientDep) -> dict:
    require(client, "hub:admin")
    return {"snapshots": await drift_history(hub.engine),
            "alerts": await alert_overview(hub.engine, hub.sharing, england_day())}
