"""Council file channel: POST /v1/council-files takes a council case system's
nightly export (adapters/council_files layouts), records each row as its own
register change and answers with a per-row report.

Rows are independent: a bad row is quarantined with its reasons and never
stops the good ones; each accepted row is committed on its own, so nothing
accepted is lost if a later row fails. Re-sending is idempotent per RECORD_ID
(the ingest answers a repeated source message id with its first answer), and a
byte-identical file from the same council is answered from its first receipt
without touching the rows again (so a re-sent file does not fill quarantine
with copies). Every file received is recorded in `file_receipts`.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from adapters.council_files import LAYOUTS, FileMapping, Layout, MappedRow, column_for, map_file
from hub.api.deps import ClientDep, HubDep, own_row, require
from hub.api.problems import PROBLEM_JSON, ProblemError
from hub.bootstrap import Hub
from hub.ingest.service import PROBLEM_BASE, Client, Outcome
from hub.ingest.validation import FieldProblem
from hub.observability.logging import get_logger
from hub.store.schema import file_receipts

router = APIRouter(prefix="/v1", tags=["council files"])
log = get_logger("hub.files")

MAX_FILE = 20 * 1024 * 1024
CHANNEL = "file"
NOT_RESPONSIBLE = ("no one with this NHS number is on the register with this council responsible: a package "
                   "is recorded by the person's responsible council")
CONTENT_TYPES = ("text/csv", "text/plain", "application/octet-stream")


async def _read_limited(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FILE:
        raise ProblemError(413, "too-large", "File too large", f"a council file must be at most {MAX_FILE} bytes; "
                           "split it into several files")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FILE:
            raise ProblemError(413, "too-large", "File too large", f"a council file must be at most {MAX_FILE} "
                               "bytes; split it into several files")
        chunks.append(chunk)
    return b"".join(chunks)


def _entry(row: MappedRow, outcome: Outcome, layout: Layout) -> dict[str, Any]:
    entry: dict[str, Any] = {"row": row.row, "record_id": row.record_id}
    if not outcome.is_problem:
        entry["status"] = "duplicate" if outcome.body.get("duplicate") else "accepted"
        if "package_id" in outcome.body:  # a package record (hub/money), not a register change
            entry["package_id"] = outcome.body["package_id"]
        else:
            entry["change_id"] = outcome.body.get("change_id")
        return entry
    entry["status"] = "rejected"
    entry["errors"] = [_in_file_terms(e, row.row, layout) for e in outcome.body.get("errors", [])]
    if outcome.body.get("quarantine_id"):
        entry["quarantine_id"] = outcome.body["quarantine_id"]
    return entry


def _in_file_terms(error: dict[str, str], row: int, layout: Layout) -> dict[str, str]:
    """The hub's own validation names canonical fields; the council knows its columns."""
    name = error.get("field", "")
    if name.startswith("row "):
        return error
    column = column_for(layout, name)
    return {"field": f"row {row}, column {column}" if column else f"row {row}, field {name}",
            "reason": error.get("reason", "")}


async def _ingest_row(hub: Hub, client: Client, row: MappedRow) -> Outcome:
    if row.data is None:
        return await hub.ingest.reject_unmapped(client, row.original, CHANNEL, list(row.problems), row.record_id)
    if row.data.get("record") == "package" and hub.packages is not None:
        data = {k: v for k, v in row.data.items() if k != "record"}
        outcome = await hub.packages.record(client, data, row.original, CHANNEL)
        if outcome.status_code == 404:  # not on the register, or not this council's: held like any bad row
            problem = FieldProblem(f"row {row.row}, column NHS_NO", NOT_RESPONSIBLE)
            return await hub.ingest.reject_unmapped(client, row.original, CHANNEL, [problem], row.record_id)
        return outcome
    # The access policy before validation: a row about someone not on the
    # register and one about another council's person get one identical
    # row error (no membership oracle), and nothing of either is kept.
    refused = await hub.ingest.write_precheck(client, row.data, CHANNEL)
    if refused is not None:
        return refused
    return await hub.ingest.accept_mapped(client, row.data, row.original, CHANNEL)


def _counts(report: list[dict[str, Any]]) -> dict[str, int]:
    statuses = [e["status"] for e in report]
    return {"rows": len(report), "accepted": statuses.count("accepted"),
            "duplicates": statuses.count("duplicate"), "rejected": statuses.count("rejected")}


async def _save(hub: Hub, **values: Any) -> None:
    counts = values.pop("counts")
    async with hub.engine.begin() as conn:
        await conn.execute(file_receipts.insert().values(
            row_count=counts["rows"], accepted=counts["accepted"], duplicates=counts["duplicates"],
            rejected=counts["rejected"], **values))


async def _previous(hub: Hub, client: Client, sha256: str) -> Any:
    q = (select(file_receipts).where(file_receipts.c.source == client.client_id,
                                     file_receipts.c.sha256 == sha256, file_receipts.c.status == "processed")
         .order_by(file_receipts.c.received_at).limit(1))
    async with hub.engine.connect() as conn:
        row = (await conn.execute(q)).first()
        await conn.rollback()
    return row


def _file_problems(mapping: FileMapping, layout: Layout, client: Client) -> list[tuple[str, str]]:
    problems = [(p.code, p.reason) for p in mapping.problems]
    if not problems and mapping.sender is not None and mapping.sender != client.org_code:
        problems.append(("sender", "header record: COUNCIL_GSS is not the council of the sending client"))
    return problems


@router.post(
    "/council-files",
    summary="A council case system's nightly export of s117 register changes; answered row by row",
    responses={
        200: {"description": "Per-row report: accepted, duplicate (first answer replayed) or rejected (quarantined)"},
        413: {"description": "File larger than 20 MB"},
        422: {"description": "The whole file was rejected (empty, not UTF-8, bad header, trailer count wrong)"},
    },
)
async def post_council_file(
    request: Request, hub: HubDep, client: ClientDep,
    format: Annotated[str, Query(description="swift_csv or swift_fixed (adapters/council_files/README.md)")],
) -> JSONResponse:
    require(client, "register:write")
    if client.org_kind != "council":
        raise ProblemError(403, "forbidden", "Not permitted", "council files are sent by councils")
    layout = LAYOUTS.get(format)
    if layout is None:
        raise ProblemError(422, "invalid-request", "Request rejected", "unknown file format",
                           errors=[{"field": "format", "reason": "must be one of " + ", ".join(LAYOUTS)}])
    media_type = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
    if media_type not in CONTENT_TYPES:
        raise ProblemError(415, "unsupported-media-type", "Unsupported media type",
                           "send the file as " + ", ".join(CONTENT_TYPES))
    raw = await _read_limited(request)
    now = datetime.now(UTC)
    file_id = str(uuid.uuid4())
    sha256 = hashlib.sha256(raw).hexdigest()
    receipt = {"file_id": file_id, "source": client.client_id, "format": layout.name, "sha256": sha256,
               "size_bytes": len(raw), "received_at": now}

    previous = await _previous(hub, client, sha256)
    if previous is not None:
        report = [{**e, "status": "duplicate"} if e["status"] == "accepted" else e for e in previous.report]
        counts = _counts(report)
        await _save(hub, **receipt, status="replayed", counts=counts, replay_of=previous.file_id, report=report)
        log.info("council file answered from its first receipt", source=client.client_id, channel=CHANNEL,
                 status="replayed", count=counts["rows"])
        return JSONResponse({"file_id": file_id, "format": layout.name, **counts, "duplicate": True,
                             "replay_of": previous.file_id, "report": report})

    mapping = map_file(raw, layout)
    problems = _file_problems(mapping, layout, client)
    if problems:
        errors = [{"field": "(file)", "reason": reason} for _code, reason in problems]
        await _save(hub, **receipt, status="rejected", counts=_counts([]), problems=errors)
        log.info("council file rejected", source=client.client_id, channel=CHANNEL, status="rejected",
                 reason_codes=[code for code, _ in problems])
        return JSONResponse(
            {"type": PROBLEM_BASE + "invalid-council-file", "title": "Council file rejected", "status": 422,
             "detail": f"the whole file was rejected and no row was recorded: {problems[0][1]}",
             "errors": errors, "file_id": file_id, "format": layout.name},
            status_code=422, media_type=PROBLEM_JSON)

    report = []
    for row in mapping.rows:
        report.append(_entry(row, await _ingest_row(hub, client, row), layout))
    counts = _counts(report)
    await _save(hub, **receipt, status="processed", counts=counts, report=report)
    log.info("council file processed", source=client.client_id, channel=CHANNEL, status="processed",
             count=counts["rows"])
    return JSONResponse({"file_id": file_id, "format": layout.name, **counts, "report": report})


@router.get("/council-files/{file_id}", summary="A council file's receipt: counts and the per-row report")
async def get_council_file(file_id: Annotated[str, Path(max_length=36)], hub: HubDep, client: ClientDep) -> dict:
    require(client, "register:write")
    row = await own_row(hub, client, file_receipts, file_receipts.c.file_id, file_id, "council file")
    return {"file_id": row.file_id, "format": row.format, "status": row.status, "sha256": row.sha256,
            "size_bytes": row.size_bytes, "received_at": row.received_at.isoformat(), "rows": row.row_count,
            "accepted": row.accepted, "duplicates": row.duplicates, "rejected": row.rejected,
            "replay_of": row.replay_of, "problems": row.problems, "report": row.report or []}
