"""`s117hub`: serve the hub, run the demo, manage API clients, write contracts."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from hub.observability.logging import configure_logging
from hub.settings import REPO_ROOT, get_settings


def _serve(args: argparse.Namespace) -> None:
    from hub.observability.multiproc import share_between_processes
    from hub.worker_process import processes, serving_layout, usable_cores

    given, cores = get_settings(), usable_cores()
    settings = serving_layout(given, cores)  # the processes, where S117_SEPARATE_WORKERS / _DELIVERY are unset
    share_between_processes(settings)  # before any metric is made: the worker processes' on /metrics too

    import uvicorn

    from hub.api.app import create_app
    from hub.server import uvicorn_config

    configure_logging(settings.log_level, settings.log_json)
    from hub.observability.logging import get_logger

    chosen = "auto" if given.separate_workers is None and given.separate_delivery is None else "set"
    get_logger("hub.cli").info("hub layout", processes=processes(settings), usable_cores=cores, chosen=chosen)
    _refuse_another_key(settings)
    _refuse_unreadable_calendar(settings)
    uvicorn.Server(uvicorn_config(create_app(settings), settings, host=args.host, port=args.port)).run()


def _refuse_another_key(settings: Any) -> None:
    """Before serving: stop with one plain line (exit 2) if the data key is not the one the store was
    written under (hub/store/key_check.py), rather than a start-up traceback. The store is migrated here,
    as the hub's start would (again a no-op there)."""
    from hub.observability.logging import get_logger
    from hub.store.db import STORE_FAULTS, create_engine, create_schema, engine_options, store_fault
    from hub.store.key_check import DataKeyMismatch, store_protector

    async def check() -> None:
        engine = create_engine(settings.database_url, **engine_options(settings))
        try:
            await create_schema(engine)
            await store_protector(engine, settings.data_key, settings.data_key_file)
        finally:
            await engine.dispose()

    async def check_when_reachable() -> None:
        # PostgreSQL not up yet (the host booting, a restart, a failover): wait for it, a line a try,
        # rather than a traceback and systemd's restarts; given up after STORE_START_WAIT_SECONDS.
        deadline, attempt = time.monotonic() + STORE_START_WAIT_SECONDS, 0
        while True:
            try:
                return await check()
            except Exception as exc:
                if store_fault(exc) not in WAITED_FOR or time.monotonic() >= deadline:
                    raise
                attempt += 1
                pause = min(10.0, 0.5 * 2 ** attempt)
                get_logger("hub.cli").warning("store not reachable at start; waiting", attempt=attempt,
                                              exc_type=type(exc).__name__, next_attempt_in=pause)
                await asyncio.sleep(pause)

    try:
        asyncio.run(check_when_reachable())
    except DataKeyMismatch as exc:
        get_logger("hub.cli").error("hub not started", error_kind="data-key-mismatch")
        print(f"s117hub serve: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        kind = store_fault(exc)
        if kind not in WAITED_FOR:
            raise
        get_logger("hub.cli").error("hub not started", error_kind=kind, exc_type=type(exc).__name__)
        print(f"s117hub serve: {STORE_FAULTS[kind]} (S117_DATABASE_URL) after {STORE_START_WAIT_SECONDS} s",
              file=sys.stderr)
        sys.exit(1)


# How long `s117hub serve` waits at start for a PostgreSQL store it cannot reach before it exits 1
# (systemd's Restart=on-failure then starts it again).
STORE_START_WAIT_SECONDS = 120
WAITED_FOR = ("unreachable", "connections", "no-answer", "pool")  # store faults a start waits out


def _refuse_unreadable_calendar(settings: Any) -> None:
    """Before serving: stop with one plain line (exit 2) naming the setting and the element, line or
    column if `S117_BANK_HOLIDAYS_FILE` is not GOV.UK's document (hub/refdata/bank_holidays.py), or
    `S117_ODS_EPRACCUR_FILE` / `S117_GP_PRACTICE_MAP_FILE` not NHS England's format
    (hub/refdata/ods_files.py), or `S117_LOCAL_AUTHORITIES_FILE` not mySociety's
    (hub/refdata/council_files.py), rather than a start-up traceback."""
    from hub.observability.logging import get_logger
    from hub.refdata.bank_holidays import CalendarError
    from hub.refdata.loader import reference_data, sources_of
    from hub.refdata.ods_files import ReferenceFileError

    try:
        reference_data(settings.bank_holidays_file, sources_of(settings))
    except CalendarError as exc:
        get_logger("hub.cli").error("hub not started", error_kind="bank-holidays-file")
        print(f"s117hub serve: {exc}", file=sys.stderr)
        sys.exit(2)
    except ReferenceFileError as exc:
        get_logger("hub.cli").error("hub not started", error_kind="reference-data-file")
        print(f"s117hub serve: {exc}", file=sys.stderr)
        sys.exit(2)


def _workers(_args: argparse.Namespace) -> None:
    from hub.worker_process import run_workers, worker_settings

    from hub.store.key_check import DataKeyMismatch

    settings = worker_settings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        run_loop(run_workers(settings))
    except DataKeyMismatch as exc:  # run by hand on a store with another key: one plain line, as serve
        print(f"s117hub workers: {exc}", file=sys.stderr)
        sys.exit(2)


def run_loop(main: Any) -> Any:
    """`asyncio.run(main)` on uvloop where it is installed (uvicorn[standard]
    brings it on Linux and macOS), as uvicorn runs the hub's front: the
    worker process's webhook deliveries and SQL round trips are I/O callbacks,
    and the pure-Python loop's own frames were a few percent of its samples."""
    try:
        import uvloop
    except ImportError:  # Windows: the standard loop
        return asyncio.run(main)
    return uvloop.run(main)


def _demo(args: argparse.Namespace) -> None:
    from hub.demo import run_demo

    configure_logging("WARNING" if not args.verbose else "INFO", json=True)
    try:
        asyncio.run(run_demo(port=args.port, receiver_port=args.receiver_port, duration=args.duration,
                             interval=args.interval, data_dir=args.data_dir))
    except KeyboardInterrupt:
        print("stopped")


def _add_client(args: argparse.Namespace) -> None:
    from hub.clients import SCOPES, add_client
    from hub.store.db import create_engine, create_schema, engine_options

    # Checked before the store is touched: an unknown scope was a ValueError traceback, and an org code
    # that is blank or not in capitals made a client (`-1a2b3c4d`, `rnu-...`) whose org matches nothing.
    unknown = [scope for scope in args.scopes if scope not in SCOPES]
    if unknown:
        sys.exit(f"add-client: --scopes: unknown {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not ORG_CODE.fullmatch(args.org):
        sys.exit("add-client: --org: must be the organisation's ODS or GSS code, 2-12 capital letters and "
                 "digits (e.g. RNU, QU9, E06000060)")

    async def go() -> tuple[str, str]:
        settings = get_settings()
        engine = create_engine(settings.database_url, **engine_options(settings))
        await create_schema(engine)
        try:
            return await add_client(engine, args.name, args.org, args.kind, args.scopes)
        finally:
            await engine.dispose()

    client_id, key = asyncio.run(go())
    print(json.dumps({"client_id": client_id, "api_key": key, "note": "the key is shown once; only its hash is kept"}))


def _contracts(_args: argparse.Namespace) -> None:
    from hub.ingest.contract import RegisterChangeIn

    path = REPO_ROOT / "contracts" / "register-change.schema.json"
    path.write_text(json.dumps(contract_schema(RegisterChangeIn), indent=2) + "\n")
    print(f"wrote {path.relative_to(REPO_ROOT)}")


def _send_file(args: argparse.Namespace) -> None:
    """POST a council file; while the hub records its rows, show a progress bar
    (stderr); then print the hub's per-row report (stdout). Exit 0 if every
    row was accepted (or was a duplicate), 3 if some rows were rejected, 1 if
    the whole file was refused, given up by the hub (`failed`: send it again)
    or the hub could not be reached or answered other than JSON: a nightly job's signal."""
    import os
    import time

    import httpx

    key = args.api_key or os.environ.get("S117_API_KEY")
    if not key:
        sys.exit("send-file: give --api-key or set S117_API_KEY")
    content_type = ("text/csv" if args.format.endswith("csv") else "text/plain") + f"; charset={args.charset}"
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        sys.exit(f"send-file: cannot read the file ({type(exc).__name__})")
    base = args.url.rstrip("/")
    headers = {"X-API-Key": key}
    deadline = time.monotonic() + args.timeout
    file_id = None
    try:
        r = httpx.post(base + "/v1/council-files", params={"format": args.format}, content=data,
                       timeout=args.timeout, headers={**headers, "Content-Type": content_type})
        while r.status_code in (200, 202):
            body = json_object(r)
            if body is None:  # a reverse proxy's page, a hub restarting: say what is known, not a traceback
                print(json.dumps({"error": "not-json", "file_id": file_id, "status": r.status_code,
                                  "detail": "the hub answered with something other than JSON; "
                                            "GET /v1/council-files/{id} later"}))
                sys.exit(1)
            if r.status_code == 200 and body.get("status") != "processing":
                break
            file_id = body.get("file_id", file_id)
            _progress_bar(body.get("rows_done", 0), body.get("rows", 0))
            if time.monotonic() > deadline:
                print(json.dumps({"error": "timeout", "file_id": body.get("file_id"),
                                  "detail": "the hub is still recording the file; GET /v1/council-files/{id} later"}))
                sys.exit(1)
            time.sleep(0.5)
            r = httpx.get(f"{base}/v1/council-files/{file_id}", timeout=args.timeout, headers=headers)
    except httpx.HTTPError as exc:
        print(json.dumps({"error": type(exc).__name__, "detail": "could not reach the hub"}))
        sys.exit(1)
    try:
        body = r.json()
    except ValueError:
        body = {"status": r.status_code, "detail": "the hub answered with something other than JSON"}
    if r.status_code == 200 and body.get("rows"):
        _progress_bar(body["rows"], body["rows"])
        print(file=sys.stderr)
    print(json.dumps(body, indent=2))
    warned = [e.get("row") for e in body.get("report") or () if isinstance(e, dict) and e.get("warnings")]
    if warned:  # recorded, but it changed nothing it named: the operator should look (row numbers only)
        print(f"send-file: {len(warned)} row(s) recorded with a warning (rows {', '.join(map(str, warned[:20]))}"
              f"{', ...' if len(warned) > 20 else ''}): each names the column and why, under \"warnings\" in the "
              "report", file=sys.stderr)
    if r.status_code != 200 or body.get("status") == "failed":  # refused, or given up by the hub: send it again
        sys.exit(1)
    sys.exit(3 if body.get("rejected") else 0)


def json_object(r: Any) -> dict | None:
    """The answer's JSON object, or None if it is not one."""
    try:
        body = r.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def write_fhir_package(out: Path, canonical_base: str | None = None, endpoint: str | None = None,
                       tgz: Path | None = None) -> list[Path]:
    """Write the hub's FHIR NPM package (``out/package/...``); optionally a .tgz of it too."""
    import tarfile

    from hub.fhir.conformance import build_package
    from hub.fhir.namespaces import DEFAULT_CANONICAL_BASE, Namespaces

    ns = Namespaces.for_base(canonical_base or DEFAULT_CANONICAL_BASE)
    files = build_package(ns, endpoint)
    pkg = out / "package"
    if pkg.exists():  # a stale file (a renamed profile) must not survive
        for old in sorted(pkg.rglob("*"), reverse=True):
            if old.is_file():
                old.unlink()
    written = []
    for rel, text in sorted(files.items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    if tgz is not None:
        with tarfile.open(tgz, "w:gz") as tar:
            for path in written:
                tar.add(path, arcname=str(path.relative_to(out)))
    return written


def _fhir_package(args: argparse.Namespace) -> None:
    base = args.canonical_base
    endpoint = None
    if base is None:
        settings = get_settings()
        base, endpoint = settings.canonical_base, settings.hub_endpoint
    elif not _canonical_base_ok(base):  # as S117_CANONICAL_BASE is checked (hub/settings.py)
        sys.exit("fhir-package: --canonical-base: must be an absolute http(s) URL without query or fragment")
    try:
        written = write_fhir_package(Path(args.out), base, endpoint, Path(args.tgz) if args.tgz else None)
    except OSError as exc:  # a folder that cannot be made, a .tgz in no folder: one line, not a traceback
        sys.exit(f"fhir-package: cannot write {exc.filename} ({exc.strerror or type(exc).__name__})")
    print(f"{len(written)} files under {Path(args.out) / 'package'}" + (f"; {args.tgz}" if args.tgz else ""))


ORG_CODE = re.compile(r"[A-Z0-9]{2,12}")
NO_STORE = ("S117_DATABASE_URL names no hub store (no schema there; a mistyped path or URL?): "
            "nothing was read or made")


def sqlite_store_missing(database_url: str) -> bool:
    """A SQLite store whose file does not exist: checked before an engine is made (making one creates
    the file and its folder). `audit` and `export` read a store the hub has written; on a path or URL
    it has not, they made an empty one and answered from it (`audit verify`: ok, exit 0; `export`: a
    full extract listing no one, put where the council collects it)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    return (url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
            and not Path(url.database).exists())


async def schema_missing(engine: Any) -> bool:
    """A database with no hub schema in it (PostgreSQL: one the hub has never migrated)."""
    from sqlalchemy import inspect

    async with engine.connect() as conn:
        return not await conn.run_sync(lambda sync: inspect(sync).has_table("alembic_version"))


def _canonical_base_ok(base: str) -> bool:
    return base.startswith(("https://", "http://")) and "?" not in base and "#" not in base


def _settings_problems(exc: Exception) -> list[str] | None:
    """One line per problem of the S117_* settings (a pydantic ValidationError of Settings), naming the
    variable and the reason and never the value: pydantic's own message quotes the input, which for a
    check of the whole model is every setting given, S117_DATA_KEY and S117_DATABASE_URL included.
    None if `exc` is not about the settings."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError) or exc.title != "Settings":
        return None
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        reason = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        loc = err.get("loc") or ()
        lines.append(f"S117_{str(loc[0]).upper()}: {reason}" if loc else reason)
    return lines


def _progress_bar(done: int, total: int, width: int = 30) -> None:
    filled = width * done // total if total else width
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} rows")
    sys.stderr.flush()


def contract_schema(model) -> dict:  # noqa: ANN001
    from hub.fhir.namespaces import HUB_BASE

    schema = model.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{HUB_BASE}/contracts/register-change.schema.json", **schema}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="s117hub", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the hub (settings from S117_* environment variables)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=_serve)
    p = sub.add_parser("workers", help="run the hub's background workers only (started by `serve` when "
                                       "S117_SEPARATE_WORKERS=true; settings from S117_* variables)")
    p.set_defaults(func=_workers)
    p = sub.add_parser("demo", help="run the hub with a sample trust and a sample council receiver")
    p.add_argument("--port", type=int, default=8117)
    p.add_argument("--receiver-port", type=int, default=8118)
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between synthetic people")
    p.add_argument("--verbose", action="store_true", help="show the hub's JSON logs too")
    p.add_argument("--data-dir", type=Path, default=None, help="where the demo keeps its database (default var/demo)")
    p.set_defaults(func=_demo)
    p = sub.add_parser("add-client", help="register an API client and print its key once")
    p.add_argument("--name", required=True)
    p.add_argument("--org", required=True, help="ODS or GSS code of the client's organisation")
    p.add_argument("--kind", required=True, choices=["trust", "council", "icb", "hub-operator"])
    p.add_argument("--scopes", nargs="+", required=True,
                   help="one or more of the hub's scopes (hub/clients.py SCOPES); an unknown one is refused, "
                        "naming them")
    p.set_defaults(func=_add_client)
    p = sub.add_parser("contracts", help="regenerate contracts/register-change.schema.json")
    p.set_defaults(func=_contracts)
    p = sub.add_parser("fhir-package", help="write the hub's FHIR package (profiles, extensions, "
                       "terminology, message definitions, CapabilityStatement, examples)")
    p.add_argument("--out", default=str(REPO_ROOT / "schemas" / "fhir-package"),
                   help="folder to write package/ into (default: schemas/fhir-package)")
    p.add_argument("--canonical-base", help="default: S117_CANONICAL_BASE (hub/settings.py)")
    p.add_argument("--tgz", help="also write the package as a .tgz (FHIR NPM package format)")
    p.set_defaults(func=_fhir_package)
    p = sub.add_parser("send-file", help="send a council file (a nightly export) and print the per-row report")
    p.add_argument("--url", default="http://127.0.0.1:8117", help="the hub's base URL")
    p.add_argument("--api-key", help="the council's API key (default: S117_API_KEY)")
    p.add_argument("--format", required=True, choices=["swift_csv", "swift_fixed"])
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the report")
    p.add_argument("--charset", default="utf-8", choices=["utf-8", "windows-1252", "iso-8859-1", "iso-8859-15"],
                   help="the file's character set, as the case system exported it (default utf-8)")
    p.add_argument("file", type=Path)
    p.set_defaults(func=_send_file)
    from hub.snapshot_cli import add_parser as add_snapshot_parser

    add_snapshot_parser(sub)
    from hub.export_cli import add_parser as add_export_parser

    add_export_parser(sub)
    from hub.audit_cli import add_parser as add_audit_parser

    add_audit_parser(sub)
    from hub.backup_cli import add_parser as add_backup_parser

    add_backup_parser(sub)
    from hub.restore_cli import add_parser as add_restore_parser

    add_restore_parser(sub)
    from hub.rekey_cli import add_parser as add_rekey_parser

    add_rekey_parser(sub)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except BrokenPipeError:
        # The reader went away (`s117hub audit verify | head`): exit 1 as a Unix tool does, without the
        # traceback (and, at exit, the second one flushing stdout gave).
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except Exception as exc:
        problems = _settings_problems(exc)
        if problems is None:
            raise
        for line in problems:  # a setting that does not validate: exit 2 as serve's other refusals, no traceback
            print(f"s117hub {args.command}: setting {line}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.exit(main())
