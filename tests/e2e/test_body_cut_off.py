"""A request whose body is cut off mid-way (the sender's process killed, a dropped link; a declared
length, or chunked) on each route that takes a body, over real HTTP against a real hub process: the
hub logs a 408 (or the limits' refusal), never an unhandled error and a 500 that an operator's 5xx
alert would page on; nothing is recorded."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from tests.e2e.conftest import make_clients
from tests.support import HubProcess, cut_off_uploads

pytestmark = pytest.mark.e2e

ROUTES = [("/v1/register-changes", "application/json", "trust"),
          ("/v1/fhir/$process-message", "application/fhir+json", "trust"),
          ("/v1/packages", "application/json", "E06000060"),
          ("/v1/subscriptions", "application/json", "E06000060"),
          ("/v1/persons/lookup", "application/json", "E06000060"),
          ("/v1/disputes", "application/json", "E06000060"),
          ("/v1/split-decisions", "application/json", "E06000060")]


async def test_a_body_cut_off_on_any_route_is_not_a_server_error(tmp_path, sharing_file):  # noqa: ANN001
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    await hub.start()
    body = b'{"source_system": "RiO", "source_message_id": "cut-1", "change_type": "detained", ' + b" " * 3000 + b"}"
    sent = 0
    try:
        for path, media_type, who in ROUTES:
            sent += await cut_off_uploads(hub.port, path, f"X-API-Key: {keys[who]}\r\nContent-Type: {media_type}\r\n",
                                          body, pause=0.2)
        for _ in range(100):
            if hub.logs().count('"event":"request"') + hub.logs().count("request refused by limits") >= sent:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    finally:
        hub.stop()
    logs = hub.logs()
    assert "unhandled error" not in logs and "ClientDisconnect" not in logs and "Traceback" not in logs
    assert '"status_code":500' not in logs
    db = sqlite3.connect(str(tmp_path / "hub.db"))
    for table in ("register_changes", "care_packages", "quarantine", "workflow_cases", "split_decisions"):
        assert db.execute(f"select count(*) from {table}").fetchone() == (0,), table  # noqa: S608
    assert db.execute("select count(*) from subscriptions").fetchone() == (0,)
    db.close()
