"""A reconciliation snapshot whose upload is cut off mid-body (the sending job killed, a dropped link;
a declared length, or chunked), over real HTTP against a real hub process: the snapshot is failed
naming `(body)`, never left `receiving` for ever, and the hub logs a 408, not an unhandled error and a
500. Before, the snapshot stayed `receiving` and ClientDisconnect escaped as a 500."""

from __future__ import annotations

import asyncio
import sqlite3

import httpx
import pytest

from tests.e2e.conftest import make_clients
from tests.support import HubProcess, cut_off_uploads

pytestmark = pytest.mark.e2e

HEADER = "NHS_NO,LOCAL_ID,S117_FLAG,RESP_LA_GSS,RESP_ICB_ODS,S117_START,S117_END,NEXT_REVIEW,FUNDING"


async def test_a_snapshot_cut_off_mid_body_is_failed_not_left_receiving(tmp_path, sharing_file):  # noqa: ANN001
    hub = HubProcess(tmp_path, sharing_path=sharing_file)
    keys = await make_clients(hub.db_url)
    await hub.start()
    try:
        body = (HEADER + "\n" + "".join(f"9991100016,L{i},Y,E06000060,QU9,01/02/2025,,,\n"
                                        for i in range(20000))).encode()
        await cut_off_uploads(hub.port, "/v1/reconciliations?format=swift_snapshot_csv",
                              f"X-API-Key: {keys['E06000060']}\r\nContent-Type: text/csv\r\n", body, pause=0.5)
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30):
            for _ in range(100):  # both requests logged
                if hub.logs().count('"path":"/v1/reconciliations"') >= 2:
                    break
                await asyncio.sleep(0.1)
    finally:
        hub.stop()
    logs = [line for line in hub.logs().splitlines() if '"path":"/v1/reconciliations"' in line]
    assert len(logs) == 2 and all('"status_code":408' in line for line in logs), logs
    assert "ClientDisconnect" not in hub.logs() and "unhandled error" not in hub.logs()
    db = sqlite3.connect(str(tmp_path / "hub.db"))
    states = db.execute("select state, problems from reconciliation_snapshots").fetchall()
    rows = db.execute("select count(*) from reconciliation_rows").fetchone()
    db.close()
    assert [s for s, _ in states] == ["failed", "failed"], states
    assert all('"(body)"' in p and "ended before the whole snapshot arrived" in p for _, p in states), states
    assert rows == (0,)
