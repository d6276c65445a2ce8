"""Council file channel: POST /v1/council-files takes a council case system's
nightly export (adapters/council_files layouts), checks it as a whole, stores
it and answers 202 with its id; its rows are then recorded in the background
(hub/file_jobs.py), each as its own register change, a chunk of rows per
transaction (ingest's bulk path), and
GET /v1/council-files/{id} shows the progress and, when done, the per-row report.

Rows are independent: a bad row is quarantined with its reasons and never
stops the good ones; each accepted row is committed with its chunk, so nothing
accepted is lost if a later row fails. Re-sending is idempotent per RECORD_ID
(the ingest answers a repeated source message id with its first answer), and a
byte-identical file from the same council is answered from its first receipt
without touching the rows again (so a re-sent file does not fill quarantine
with copies). Every file received is recorded in `file_receipts`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.requests import ClientDisconnect

from adapters.council_files import LAYOUTS, FileStream, Layout, open_file
from hub.ids import uuid4
from hub.api.deps import ClientDep, HubDep, require
from hub.api.problems import PROBLEM_JSON, ProblemError
from hub.bootstrap import Hub
from hub.file_jobs import CHANNEL, counts, report_of
from hub.ingest.service import PROBLEM_BASE, Client
from hub.observability.logging import get_logger
from hub.store.db import read_only
from hub.store.schema import file_receipts, file_rows

router = APIRouter(prefix="/v1", tags=["council files"])
log = get_logger("hub.files")

MAX_FILE = 20 * 1024 * 1024
CONTENT_TYPES = ("text/csv", "text/plain", "application/octet-stream")


# The character sets a council file may declare (`Content-Type: text/csv; charset=...`): UTF-8 (the
# default, and ASCII within it), or the Windows and ISO Latin-1 sets SWIFT and older case systems export
# in, read as declared and kept as UTF-8. Another is refused naming Content-Type, never guessed.
_UTF8 = {"utf-8", "utf8", "us-ascii", "ascii"}
_LATIN = {"windows-1252": "cp1252", "cp1252": "cp1252", "iso-8859-1": "latin-1", "latin-1": "latin-1",
          "latin1": "latin-1", "iso-8859-15": "iso8859-15"}


def _charset(content_type: str) -> str:
    """The declared charset, lower case ("utf-8" when none), or a 415 naming Content-Type."""
    declared = "utf-8"
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            declared = value.strip().strip('"').lower()
    if declared not in _UTF8 and declared not in _LATIN:
        raise ProblemError(415, "unsupported-media-type", "Unsupported media type",
                           "send the file in UTF-8, windows-1252 or ISO-8859-1, and say which in the Content-Type",
                           errors=[{"field": "Content-Type", "reason": "charset must be utf-8, windows-1252, "
                                    "iso-8859-1 or iso-8859-15"}])
    return declared


def _as_utf8(raw: bytes, charset: str) -> bytes:
    """The file read in the charset it declared, as UTF-8 (what is stored, compared and mapped): a byte
    the set does not define is the file's 422, naming its line (never the byte's neighbours)."""
    try:
        return raw.decode(_LATIN[charset]).encode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ProblemError(422, "invalid-council-file", "Council file rejected",
                           f"the whole file was rejected and no row was recorded: line {line} holds a byte "
                           f"{charset} does not define",
                           errors=[{"field": "(file)", "reason": f"line {line}: a byte {charset} does not define"}]
                           ) from None


async def _read_limited(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FILE:
        raise ProblemError(413, "too-large", "File too large", f"a council file must be at most {MAX_FILE} bytes; "
                           "split it into several files")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_FILE:
                raise ProblemError(413, "too-large", "File too large", f"a council file must be at most {MAX_FILE} "
                                   "bytes; split it into several files")
            chunks.append(chunk)
    except ClientDisconnect:
        # The upload cut off (the sender's job killed, a dropped link): nothing of it is kept, and it is the
        # client's doing, answered (to no one, but logged and counted) as a body that did not arrive, not a 500.
        raise ProblemError(408, "body-incomplete", "Request body incomplete",
                           "the connection closed before the whole file arrived: nothing was recorded; send the "
                           "file again", errors=[{"field": "(body)", "reason": "ended before the whole file arrived"}]
                           ) from None
    return b"".join(chunks)


async def _save(hub: Hub, **values: Any) -> None:
    counts = values.pop("counts")
    async with hub.engine.begin() as conn:
        await conn.execute(file_receipts.insert().values(
            row_count=counts["rows"], accepted=counts["accepted"], duplicates=counts["duplicates"],
            rejected=counts["rejected"], **values))


async def _previous(hub: Hub, client: Client, sha256: str) -> Any:
    """The receipt this file's rows are (being) recorded under, if an identical file came first: the one
    holding the claim (unique per source: migration 0028)."""
    q = select(*_RECEIPT).where(file_receipts.c.source == client.client_id, file_receipts.c.claim == sha256)
    async with hub.engine.connect() as conn:
        row = (await conn.execute(q)).first()
        await conn.rollback()
    return row


def _file_problems(mapping: FileStream, layout: Layout, client: Client) -> list[tuple[str, str]]:
    problems = [(p.code, p.reason) for p in mapping.problems]
    if not problems and mapping.sender is not None and mapping.sender != client.org_code:
        problems.append(("sender", "header record: COUNCIL_GSS is not the council of the sending client"))
    return problems


@router.post(
    "/council-files",
    summary="A council case system's nightly export of s117 register changes; 202, rows recorded in the background",
    responses={
        202: {"description": "Stored; its rows are being recorded: GET /v1/council-files/{file_id} for progress and "
                     "the per-row report", "content": {"application/json": {}}},
        200: {"description": "The same file again: the first file's per-row report, accepted rows as duplicates"},
        413: {"description": "File larger than 20 MB"},
        415: {"description": "A Content-Type other than the file formats taken"},
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
                           "send the file as " + ", ".join(CONTENT_TYPES),
                           errors=[{"field": "Content-Type", "reason": "must be one of " + ", ".join(CONTENT_TYPES)
                                    + " (the file itself as the body, not a form upload)"}])
    # A Content-Encoding (gzip, say) is refused before the key by the limits in front (hub/api/limits.py), on
    # every route: read as it came, a compressed file would be refused as "not UTF-8" or read as the wrong text.
    charset = _charset(request.headers.get("content-type", ""))
    raw = await _read_limited(request)
    if charset not in _UTF8:
        raw = _as_utf8(raw, charset)
    now = datetime.now(UTC)
    file_id = uuid4()
    sha256 = hashlib.sha256(raw).hexdigest()
    receipt = {"file_id": file_id, "source": client.client_id, "format": layout.name, "sha256": sha256,
               "size_bytes": len(raw), "received_at": now}

    previous = await _previous(hub, client, sha256)
    if previous is not None:
        return await _answered_from(hub, client, previous, receipt)

    # Checked as a whole (rows are mapped by the job, a chunk at a time), in a worker thread: seconds of pure
    # Python for a large file with quoted fields, during which the event loop goes on answering.
    mapping = await asyncio.to_thread(open_file, raw, layout)
    problems = _file_problems(mapping, layout, client)
    if problems:
        errors = [{"field": "(file)", "reason": reason} for _code, reason in problems]
        await _save(hub, **receipt, status="rejected", counts=counts([]), problems=errors)
        log.info("council file rejected", source=client.client_id, channel=CHANNEL, status="rejected",
                 reason_codes=[code for code, _ in problems])
        return JSONResponse(
            {"type": PROBLEM_BASE + "invalid-council-file", "title": "Council file rejected", "status": 422,
             "detail": f"the whole file was rejected and no row was recorded: {problems[0][1]}",
             "errors": errors, "file_id": file_id, "format": layout.name},
            status_code=422, media_type=PROBLEM_JSON)

    rows = mapping.count
    del mapping
    await _before_claim(hub, file_id)
    try:
        # The claim (unique per source and sha256) makes the look above and this insert one step: of two
        # identical files arriving at once, one receipt records the rows, the other is answered from it.
        await _save(hub, **receipt, status="processing", counts={**counts([]), "rows": rows},
                    rows_done=0, content=hub.protector.encrypt(raw), claim=sha256)
    except IntegrityError:
        previous = await _previous(hub, client, sha256)
        if previous is None:  # not the claim (or its holder given up meanwhile): not answered as a repeat
            raise
        return await _answered_from(hub, client, previous, receipt)
    del raw
    hub.files.start(file_id)
    log.info("council file accepted", source=client.client_id, channel=CHANNEL, status="processing",
             count=rows, file_id=file_id)
    return JSONResponse({"file_id": file_id, "format": layout.name, "status": "processing",
                         "rows": rows, "rows_done": 0},
                        status_code=202, headers={"Location": f"/v1/council-files/{file_id}"})


async def _before_claim(hub: Hub, file_id: str) -> None:
    """Nothing: a test holds a file here, between its look for an earlier receipt and its claim."""


async def _answered_from(hub: Hub, client: Client, previous: Any, receipt: dict[str, Any]) -> JSONResponse:
    """A byte-identical file of the same council's: answered from the first receipt, its rows untouched."""
    if previous.status == "processing":
        # Sent again while the first is still being recorded: that one's id.
        return JSONResponse(_progress(previous) | {"duplicate": True}, status_code=202,
                            headers={"Location": f"/v1/council-files/{previous.file_id}"})
    report = [{**e, "status": "duplicate"} if e["status"] == "accepted" else e
              for e in await report_of(hub.engine, previous)]
    counts_ = counts(report)
    await _save(hub, **receipt, status="replayed", counts=counts_, replay_of=previous.file_id,
                report=report if previous.report is not None else None)  # a receipt from before file_rows
    log.info("council file answered from its first receipt", source=client.client_id, channel=CHANNEL,
             status="replayed", count=counts_["rows"])
    return JSONResponse({"file_id": receipt["file_id"], "format": receipt["format"], "status": "replayed",
                         **counts_, "duplicate": True, "replay_of": previous.file_id, "report": report})


def _progress(row: Any) -> dict[str, Any]:
    return {"file_id": row.file_id, "format": row.format, "status": row.status, "rows": row.row_count,
            "rows_done": row.row_count if row.rows_done is None else row.rows_done}


@router.get("/council-files/{file_id}",
            summary="A council file's receipt: progress (rows done / total), counts and, when done, the per-row report",
            responses={404: {"description": "No council file with that id for this client"}})
async def get_council_file(file_id: Annotated[str, Path(max_length=36)], hub: HubDep, client: ClientDep) -> Response:
    require(client, "register:write")
    async with read_only(hub.engine) as conn:  # not the stored file itself (up to 20 MB, encrypted)
        row = (await conn.execute(select(*_RECEIPT).where(file_receipts.c.file_id == file_id))).first()
    if row is None or (row.source != client.client_id and "hub:admin" not in client.scopes):
        raise ProblemError(404, "not-found", "Not found", "no council file with that id for this client")
    body = {**_progress(row), "sha256": row.sha256, "size_bytes": row.size_bytes,
            "received_at": row.received_at.isoformat(), "accepted": row.accepted,
            "duplicates": row.duplicates, "rejected": row.rejected, "replay_of": row.replay_of,
            "problems": row.problems}
    if row.replay_of:
        body["duplicate"] = True
    # The report once every row is in it (while processing, GET shows progress only).
    if row.status == "processing" or row.report is not None:
        body["report"] = [] if row.status == "processing" else list(row.report)
        return JSONResponse(body)
    # Streamed from file_rows a page at a time: a file's report is never held whole.
    return StreamingResponse(_streamed(hub, body, row), media_type="application/json")


REPORT_PAGE = 1000
_RECEIPT = [c for c in file_receipts.c if c.name != "content"]


async def _streamed(hub: Hub, body: dict[str, Any], receipt: Any) -> AsyncIterator[bytes]:
    yield orjson.dumps(body)[:-1] + b',"report":['
    file_id = receipt.replay_of if receipt.status == "replayed" else receipt.file_id
    replayed = receipt.status == "replayed"
    after, first = 0, True
    while True:
        async with read_only(hub.engine) as conn:
            page = (await conn.execute(
                select(file_rows.c.row, file_rows.c.entry)
                .where(file_rows.c.file_id == file_id, file_rows.c.row > after)
                .order_by(file_rows.c.row).limit(REPORT_PAGE))).all()
        if not page:
            break
        entries = [{**e, "status": "duplicate"} if replayed and e["status"] == "accepted" else e
                   for _, e in page]
        yield (b"" if first else b",") + b",".join(orjson.dumps(e) for e in entries)
        first, after = False, page[-1].row
    yield b"]}"
