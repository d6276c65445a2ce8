"""`s117hub send-snapshot`: a body's nightly job sends its whole s117 list for
reconciliation, shows progress while the hub compares, and prints the report.

Exit 0: compared, no open differences and no row rejected; 3: compared, open
differences or rejected rows listed (a rejected row's person is not compared:
the body must correct the row); 1: refused, failed or the hub could not be
reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

CHUNK = 256 * 1024
CONTENT_TYPES = {"ndjson": "application/x-ndjson", "json": "application/json", "swift_snapshot_csv": "text/csv"}


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _bar(done: int, total: int | None, width: int = 30) -> str:
    if not total:
        return f"[{'?' * width}] {done}"
    filled = int(width * min(done, total) / total)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def send_snapshot(args: argparse.Namespace) -> None:
    import httpx

    from hub.cli import json_object

    key = args.api_key or os.environ.get("S117_API_KEY")
    if not key:
        sys.exit("send-snapshot: give --api-key or set S117_API_KEY")
    if not args.file.is_file():
        sys.exit("send-snapshot: cannot read the file")
    base = args.url.rstrip("/")
    headers = {"X-API-Key": key, "Content-Type": CONTENT_TYPES[args.format]}
    tty = sys.stderr.isatty()
    try:
        with httpx.Client(base_url=base, timeout=args.timeout) as http:
            r = http.post("/v1/reconciliations", params={"format": args.format}, content=_chunks(args.file),
                          headers=headers)
            body = json_object(r) or {"status": r.status_code,
                                       "detail": "the hub answered with something other than a JSON object"}
            if r.status_code != 202 or not isinstance(body.get("snapshot_id"), str):
                # Refused, or a reverse proxy's page with a JSON type: what came, exit 1, not a traceback.
                print(json.dumps(body, indent=2))
                sys.exit(1)
            sid = body["snapshot_id"]
            deadline = time.monotonic() + args.timeout
            first = True
            # The report (with its items) comes from GET: read it at least once, even when the
            # comparison finished before the POST answered.
            while (first or body.get("state") in ("receiving", "comparing")) and time.monotonic() < deadline:
                if not first:
                    time.sleep(args.poll)
                first = False
                got = http.get(f"/v1/reconciliations/{sid}", headers={"X-API-Key": key})
                try:
                    body = got.json()
                except ValueError:  # a proxy's error page, a hub restarting: exit 1 with what came, not a traceback
                    body = {"snapshot_id": sid, "status": got.status_code,
                            "detail": "the hub answered with something other than JSON"}
                    break
                # Progress through the body's own list (persons_total: its rows; never the register's size).
                line = (f"rows {body.get('rows_read')} read, persons "
                        f"{_bar(body.get('persons_compared') or 0, body.get('persons_total'))}, "
                        f"{body.get('differences_found')} differences")
                print(("\r" if tty else "") + line, end="" if tty else "\n", file=sys.stderr, flush=True)
            if tty:
                print(file=sys.stderr)
    except httpx.HTTPError as exc:
        print(json.dumps({"error": type(exc).__name__, "detail": "could not reach the hub"}))
        sys.exit(1)
    print(json.dumps(body, indent=2))
    if body.get("state") != "done":
        sys.exit(1)
    live = [i for i in body.get("items", []) if i.get("state") in ("open", "explained")]
    sys.exit(3 if live or body.get("rows_rejected") else 0)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("send-snapshot", help="send the body's whole s117 list for reconciliation; print the drift report")
    p.add_argument("--url", default="http://127.0.0.1:8117", help="the hub's base URL")
    p.add_argument("--api-key", help="the body's API key (default: S117_API_KEY)")
    p.add_argument("--format", required=True, choices=sorted(CONTENT_TYPES))
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the report")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between progress checks")
    p.add_argument("file", type=Path)
    p.set_defaults(func=send_snapshot)
