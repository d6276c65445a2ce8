"""The quarantine's reads find their rows through an index (migration 0034): an input sent again is one
look-up of its source and source message id (ingest `_held_copy`), not a read of every row its source ever
had quarantined; the operator's newest-first list (the console's quarantine panel asks it every few
seconds) walks `received_at` rather than sorting the whole table. SQLite's plan for each statement as the
hub ran it."""

from __future__ import annotations

import sqlite3

import orjson
from sqlalchemy import event

from sqlalchemy.dialects import sqlite

from hub.clients import add_client
from hub.ingest.service import _HELD

BAD = {"source_system": "RiO (demo)", "change_type": "detained", "effective_date": "2025-01-10",
       "legal_status_code": "11", "hospital_ods": "RNU", "residence_la_gss": "E06000060",
       "person": {"nhs_number": "9990001006", "given_name": "Test", "family_name": "Index"}}


async def _plans(app_hub, run) -> dict[str, list[str]]:  # noqa: ANN001
    engine = app_hub.hub.engine
    ran: list[tuple[str, tuple]] = []

    def seen(_conn, _cursor, statement, parameters, _context, _many):  # noqa: ANN001, ANN202
        if "FROM quarantine" in statement and statement.lstrip().upper().startswith("SELECT"):
            ran.append((statement, tuple(parameters)))

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        await run()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
    db = sqlite3.connect(engine.url.database)
    try:
        return {statement: [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + statement, params)]
                for statement, params in ran}
    finally:
        db.close()


async def _quarantine(app_hub, smid: str) -> dict:  # noqa: ANN001
    r = await app_hub.http.post("/v1/register-changes", content=orjson.dumps({**BAD, "source_message_id": smid}),
                                headers={"X-API-Key": app_hub.keys["trust"], "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    return r.json()


async def test_an_input_sent_again_is_found_by_its_source_message_id_through_an_index(app_hub):
    for n in range(5):
        await _quarantine(app_hub, f"ix-{n}")
    first = await _quarantine(app_hub, "ix-again")
    assert (await _quarantine(app_hub, "ix-again"))["quarantine_id"] == first["quarantine_id"]
    # `_HELD` runs on the driver (`execute_prepared`), past SQLAlchemy's events: its SQL as SQLite runs it.
    compiled = _HELD.statement.compile(dialect=sqlite.dialect())
    values = {"source": "rnu", "channel": "rest", "smid": "ix-again"}
    params = [compiled.params[name] if name not in values else values[name] for name in compiled.positiontup]
    db = sqlite3.connect(app_hub.hub.engine.url.database)
    try:
        plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + str(compiled), params)]
    finally:
        db.close()
    assert any("ix_quarantine_message" in step for step in plan), plan


async def test_the_operators_newest_first_list_walks_an_index_of_received_at(app_hub):
    for n in range(3):
        await _quarantine(app_hub, f"list-{n}")
    admin = (await add_client(app_hub.hub.engine, "Hub operations", "HUBOPS", "hub",
                              ["register:write", "hub:admin"]))[1]
    listed: list[dict] = []

    async def newest_first() -> None:
        r = await app_hub.http.get("/v1/quarantine?limit=200", headers={"X-API-Key": admin})
        assert r.status_code == 200, r.text
        listed.append(r.json())

    plans = await _plans(app_hub, newest_first)
    assert len(listed[0]["items"]) == 3
    (plan,) = [plan for statement, plan in plans.items() if "ORDER BY quarantine.received_at DESC" in statement]
    assert any("ix_quarantine_received" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
