"""`s117hub audit verify` (exit 0 intact, 2 problems found) and
`s117hub audit person` (the NHS number read from standard input, never an
argument: arguments show in the process list)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys


async def _run(args: argparse.Namespace) -> int:
    from hub.audit import AuditChain, audit_events_bundle, audit_key
    from hub.cli import NO_STORE, schema_missing, sqlite_store_missing
    from hub.ingest.nhs_number import nhs_number_problem, normalise
    from hub.settings import get_settings
    from hub.store.db import create_engine, create_schema
    from hub.store.key_check import store_protector
    from hub.store.merged import person_id_by_index

    s = get_settings()
    if sqlite_store_missing(s.database_url):
        print(f"audit: {NO_STORE}", file=sys.stderr)
        return 2
    engine = create_engine(s.database_url)
    try:
        if await schema_missing(engine):
            print(f"audit: {NO_STORE}", file=sys.stderr)
            return 2
        await create_schema(engine)
        protector = await store_protector(engine, s.data_key, s.data_key_file)
        chain = AuditChain(engine, audit_key(s.audit_key, protector.index))
        while await chain.extend():
            pass
        if args.audit_command == "verify":
            result = await chain.verify()
            print(json.dumps(result, indent=2))
            return 0 if result["ok"] else 2
        if sys.stdin.isatty():  # typed at a terminal: asked for (it waited without a word), not echoed
            import getpass

            nhs = getpass.getpass("NHS number (not shown): ", stream=sys.stderr).strip()
        else:
            nhs = sys.stdin.readline().strip()
        reason = nhs_number_problem(nhs)
        if reason:
            print(json.dumps({"field": "nhs_number", "reason": reason}))
            return 1
        async with engine.connect() as conn:
            # A number superseded by a merge: the retained person's (hub/store/merged.py).
            person_id = await person_id_by_index(conn, protector.index(normalise(nhs)))
        if person_id is None:
            print(json.dumps({"detail": "no person with that NHS number is on the register"}))
            return 1
        entries = await chain.person(person_id)
        out = (audit_events_bundle(person_id, entries, s.hub_endpoint) if args.fhir
               else {"person_id": person_id, "disclosures": entries})
        print(json.dumps(out, indent=2))
        return 0
    finally:
        await engine.dispose()


def audit(args: argparse.Namespace) -> None:
    from hub.store.key_check import DataKeyMismatch

    try:
        code = asyncio.run(_run(args))
    except DataKeyMismatch as exc:  # nothing checked under a key that is not the store's: a problem (2)
        print(f"audit: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="verify the tamper-evident audit chain; who was told what about a person")
    a = p.add_subparsers(dest="audit_command", required=True)
    a.add_parser("verify", help="check every entry, link, source record and signed checkpoint")
    pp = a.add_parser("person", help="read an NHS number from standard input; print who was told what")
    pp.add_argument("--fhir", action="store_true", help="as FHIR AuditEvent resources")
    p.set_defaults(func=audit)
