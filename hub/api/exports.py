"""Council register extracts: build one on demand, list, download (streamed),
acknowledge. A council sees only its own files; anyone else gets the same 404
as for an id that does not exist."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from hub.access import record_decision
from hub.api.deps import ClientDep, HubDep, require
from hub.api.problems import ProblemError
from hub.audit import record_operator_action
from hub.domain.access import Rule
from hub.exports import ExportRequest
from hub.ingest.service import Client
from hub.observability.logging import bound_correlation_id
from hub.store.schema import council_exports
from hub.domain.dates import england_day

router = APIRouter(prefix="/v1/exports", tags=["council files out"])
ops_router = APIRouter(prefix="/v1/ops", tags=["operations"])
SCOPE = "subscriptions:write"
NARROWED = "agreement-narrowed"  # the refusal's rule: a group the file was built with is no longer granted
ExportId = Annotated[str, PathParam(min_length=36, max_length=36, pattern=r"^[0-9a-f-]{36}$")]


class ExportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layout: Literal["swift_csv", "swift_fixed"] = "swift_csv"
    mode: Literal["full"] = "full"


async def _own(hub: Any, client: Client, export_id: str) -> Any:
    row = await hub.exports.export_row(export_id)
    if row is None or (row.org_code != client.org_code and "hub:admin" not in client.scopes):
        raise ProblemError(404, "not-found", "Not found", "no export with that id for this organisation")
    return row


@router.post("", status_code=202, summary="Build a full extract for the caller's council now (built in the background)")
async def request_export(body: ExportIn, hub: HubDep, client: ClientDep) -> dict:
    require(client, SCOPE)
    if hub.exports.groups_in_force(client.org_code, england_day()) is None:
        await _audit_download(hub, client, allowed=False, rule=Rule.NO_AGREEMENT)  # a refused read, audited
        raise ProblemError(403, "forbidden", "Not permitted",
                           "no data-sharing agreement in force names this organisation", rule="no-agreement")
    return await hub.exports.request(ExportRequest(client.org_code, body.layout, body.mode,
                                                   requested_by=client.client_id))


@router.get("", summary="The caller's council files, newest first")
async def list_exports(hub: HubDep, client: ClientDep,
                       state: Literal["queued", "building", "ready", "acknowledged", "withheld"] | None = None) -> dict:
    require(client, SCOPE)
    q = select(council_exports.c.export_id).where(council_exports.c.org_code == client.org_code)
    if state:
        q = q.where(council_exports.c.state == state)
    async with hub.engine.connect() as conn:
        ids = (await conn.execute(q.order_by(council_exports.c.created_at.desc()).limit(200))).scalars().all()
        await conn.rollback()
    return {"items": [await hub.exports.export(i) for i in ids]}


@router.get("/{export_id}/status", summary="State, record count (progress while building), checksum",
            responses={404: {"description": "No export with that id for this organisation"}})
async def export_status(export_id: ExportId, hub: HubDep, client: ClientDep) -> dict:
    require(client, SCOPE)
    await _own(hub, client, export_id)
    return await hub.exports.export(export_id)


def _stream(f: BinaryIO) -> Iterator[bytes]:
    with f:
        while chunk := f.read(256 * 1024):
            yield chunk


@router.get("/{export_id}", summary="Download the file (streamed); the SHA-256 is in the S117-SHA256 header",
            response_class=StreamingResponse,
            responses={200: {"description": "The file, streamed (CSV, or fixed-width text)",
                             "content": {"text/csv": {"schema": {"type": "string"}},
                                         "text/plain": {"schema": {"type": "string"}}}},
                       403: {"description": "The key lacks the scope; no data-sharing agreement is in force "
                                            "(`no-agreement`); or the agreement in force no longer grants a field "
                                            "group the file was built with (`agreement-narrowed`, naming them)"},
                       404: {"description": "No export with that id for this organisation"},
                       409: {"description": "The file is not ready yet"},
                       410: {"description": "The file has been removed from the export directory"}})
async def download(export_id: ExportId, hub: HubDep, client: ClientDep) -> StreamingResponse:
    require(client, SCOPE)
    try:
        row = await _own(hub, client, export_id)
    except ProblemError:
        await _audit_download(hub, client, allowed=False)
        raise
    # Its own file, but no agreement in force any more: no read (as POST /v1/exports refuses to build one).
    if "hub:admin" not in client.scopes and hub.exports.groups_in_force(client.org_code,
                                                                        england_day()) is None:
        await _audit_download(hub, client, allowed=False, rule=Rule.NO_AGREEMENT)
        raise ProblemError(403, "forbidden", "Not permitted",
                           "no data-sharing agreement in force names this organisation", rule="no-agreement")
    if row.state not in ("ready", "acknowledged"):
        raise ProblemError(409, "not-ready", "Not ready", f"the file is {row.state}; see /status for progress")
    # Built while the agreement granted groups it no longer does (NHS numbers once `identity` is
    # withdrawn...): sending the file now would disclose them. A file built before its groups were
    # recorded counts as built with every group its layout can carry (hub/exports.py `built_with`).
    today = england_day()
    withdrawn = set() if "hub:admin" in client.scopes else hub.exports.groups_withdrawn(row, today)
    if withdrawn:
        names = sorted(withdrawn)
        await _audit_download(hub, client, allowed=False, rule=NARROWED, row=row)
        raise ProblemError(403, "forbidden", "Not permitted",
                           "the file was built with field groups the data-sharing agreement in force no longer "
                           f"grants this organisation ({', '.join(names)}): ask for a new file (POST /v1/exports, "
                           "or the subscription's next)", rule=NARROWED, withdrawn_field_groups=names)
    f = hub.exports.open_file(row)  # never through a link the council's SFTP account put in its place
    if f is None:
        raise ProblemError(410, "gone", "Gone", "the file has been removed from the export directory")
    # Audited as a read once there is a file to send: a 409 or 410 disclosed nothing.
    try:
        await _audit_download(hub, client, allowed=True, row=row)
    except BaseException:
        f.close()
        raise
    media = "text/csv" if row.file_name.endswith(".csv") else "text/plain"
    return StreamingResponse(_stream(f), media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{row.file_name}"', "S117-SHA256": row.sha256,
        "S117-Record-Count": str(row.record_count),
        # A register extract (NHS numbers, for every person): kept by no cache on the way, never sniffed as a page.
        "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


async def _audit_download(hub, client, *, allowed: bool, rule: Rule | str | None = None,  # noqa: ANN001
                          row: Any = None) -> None:
    """A download of a register extract (many people: no one person; the file's people were each
    recorded when it was written, correlation id the export's id) in `access_decisions`: with the
    file's field groups and the agreements in force, when there is a file of the caller's to name."""
    groups = agreement = None
    if row is not None:
        groups = hub.exports.built_with(row)
        agreement = hub.exports.agreement_in_force(client.org_code, england_day())
    async with hub.engine.begin() as conn:
        await record_decision(conn, client, channel="export", action="read", allowed=allowed,
                              rule=rule or (Rule.ALLOWED if allowed else Rule.NO_RELATIONSHIP),
                              agreement_id=agreement, field_groups=groups,
                              correlation_id=bound_correlation_id())


@router.post("/{export_id}/ack", summary="Acknowledge the file: the council has imported it",
             responses={404: {"description": "No export with that id for this organisation"},
                        409: {"description": "Only a ready file is acknowledged"}})
async def acknowledge(export_id: ExportId, hub: HubDep, client: ClientDep) -> dict:
    require(client, SCOPE)
    row = await _own(hub, client, export_id)
    if row.state == "acknowledged":
        return await hub.exports.export(export_id)
    if row.state != "ready":
        raise ProblemError(409, "not-ready", "Not ready", f"the file is {row.state}: only a ready file is acknowledged")
    return await hub.exports.acknowledge(export_id, "api")


@ops_router.get("/exports", summary="Council files not yet acknowledged (overdue ones raise an alert)")
async def unacknowledged(hub: HubDep, client: ClientDep) -> dict:
    require(client, "hub:admin")
    return {"items": await hub.exports.unacknowledged()}


@ops_router.post("/subscriptions/{subscription_id}/council-file/run", status_code=202,
                 summary="Write a council-file subscription's next file now",
                 responses={404: {"description": "No council-file subscription with that id"}})
async def run_now(subscription_id: ExportId, hub: HubDep, client: ClientDep) -> dict:
    require(client, "hub:admin")
    export = await hub.exports.run_now(subscription_id)
    if export is None:
        raise ProblemError(404, "not-found", "Not found", "no council-file subscription with that id")
    async with hub.engine.begin() as conn:
        await record_operator_action(conn, client.client_id, "council-file-run", subscription_id,
                                     {"export_id": export["export_id"]})
    return export
