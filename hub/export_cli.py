"""`s117hub export`: build one council register extract by hand (an operator
re-running a council's file, or a first full load), with a progress bar.

Runs against the hub's store directly (settings from S117_* variables), so it
works while the hub is down too; the file lands in the same outbound folder
and is recorded like a scheduled one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from hub.ids import uuid4
from hub.domain.dates import england_day

CLI_CLIENT = "cli:s117hub-export"  # the client the file's audit rows name (no key: an operator's command)


def _bar(done: int, total: int | None, width: int = 30) -> str:
    if not total:
        return f"{done} people"
    filled = int(width * min(done, total) / total)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} people"


async def _run(args: argparse.Namespace) -> dict:
    from hub.agreements_loader import load_agreements
    from hub.cli import NO_STORE, schema_missing, sqlite_store_missing
    from hub.domain.agreements import AgreementBook
    from hub.exports import ExportRequest, ExportService
    from hub.fhir.messages import FIELD_GROUPS
    from hub.sharing import FUNDING
    from hub.refdata.bank_holidays import CalendarError
    from hub.refdata.loader import reference_data, sources_of
    from hub.refdata.ods_files import ReferenceFileError
    from hub.settings import get_settings
    from hub.sharing import SharingAgreements
    from hub.store.db import create_engine, create_schema
    from hub.store.key_check import store_protector

    s = get_settings()
    if sqlite_store_missing(s.database_url):
        sys.exit(f"export: {NO_STORE}")
    engine = create_engine(s.database_url)
    try:
        if await schema_missing(engine):
            sys.exit(f"export: {NO_STORE}")
        await create_schema(engine)
        # The store's key, or nothing is built (hub/store/key_check.py)
        protector = await store_protector(engine, s.data_key, s.data_key_file)
        agreements = (load_agreements(s.area_agreements_path) if s.area_agreements_path.exists()
                      else AgreementBook.default())
        try:
            ref = reference_data(s.bank_holidays_file, sources_of(s))
        except (CalendarError, ReferenceFileError) as exc:  # one line naming the setting, as `serve`
            sys.exit(f"export: {exc}")
        svc = ExportService(engine, ref, agreements,
                            SharingAgreements.load(s.sharing_agreements_path, FIELD_GROUPS | {FUNDING}),
                            protector, s.export_dir,
                            s.export_ack_alert_hours)
        if svc.groups_in_force(args.org, england_day()) is None:
            sys.exit(f"export: no data-sharing agreement in force names {args.org}")
        # Claimed as it is asked for: the hub's worker, if it runs, leaves this one to us.
        builder = uuid4()
        # Its audit rows (one a person it lists) name the command as the client that asked.
        export = await svc.request(ExportRequest(args.org, args.layout, "full", requested_by=CLI_CLIENT),
                                   builder=builder)
        row = await svc.export_row(export["export_id"])
        tty = sys.stderr.isatty()

        def progress(done: int, total: int | None) -> None:
            print(("\r" if tty else "") + _bar(done, total), end="" if tty else "\n", file=sys.stderr, flush=True)

        built = await svc.build(row, progress, builder)
        if tty:
            print(file=sys.stderr)
        done = await svc.export(export["export_id"])
        if not built and done["state"] not in ("ready", "withheld", "acknowledged"):
            # It gave way: another builder took the claim over (this one stalled past the lease). That
            # builder finishes the file; saying `building` with a path to no file, exit 0, misled.
            sys.exit(f"export: another builder took export {export['export_id']} over before this one "
                     f"finished (state {done['state']}); it finishes the file: "
                     f"GET /v1/exports/{export['export_id']}/status shows when it is ready")
        # No file when no agreement was in force by the time it was written (state `withheld`).
        return done | {"path": str(svc.file_path(await svc.export_row(export["export_id"])))
                       if done["file_name"] else None}
    finally:
        await engine.dispose()


def export(args: argparse.Namespace) -> None:
    from hub.store.key_check import DataKeyMismatch

    try:
        print(json.dumps(asyncio.run(_run(args)), indent=2))
    except DataKeyMismatch as exc:
        sys.exit(f"export: {exc}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="build a council's full register extract now, with a progress bar")
    p.add_argument("--org", required=True,
                   help="the organisation's code (a council's GSS, an ICB's or trust's ODS, as its agreement "
                        "names it): its file lists only the people it has a role for or was told of")
    p.add_argument("--layout", default="swift_csv", choices=["swift_csv", "swift_fixed"])
    p.set_defaults(func=export)
