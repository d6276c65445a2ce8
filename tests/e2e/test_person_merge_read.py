"""A merge of two NHS numbers read back, end to end over real HTTP: `s117hub serve` in its own process, its
SQLite store, GET /v1/persons/merges/{merge_id} (hub/merge_reads.py).

Before, a merge was known only from its answer: no route read one back, so the trust that made it could not
see when and by whom it was made, what it moved, nor whether it had been reversed. Now the trust that made it
and the hub operator read it, before and after its reversal; its NHS numbers only under the `identity` field
group of an agreement in force; another trust, a council and an unknown id get one identical 404 no sooner
than the read refusal floor; every read is audited, and nothing personal reaches the hub's log."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from hub.store.db import create_engine
from hub.store.schema import access_decisions
from tests.e2e.test_person_unmerge import _clients, _detained, _no_personal_data
from tests.histories import BUCKS, WORCS
from tests.support import HubProcess
from tests.unit.test_person_merges import nhs_number

pytestmark = pytest.mark.e2e

FLOOR_MS = 150
REASON = "Two patients: twins' records taken for one"


def _sharing(path: Path, trust_groups: list[str]) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "agreements": [{
        "id": "DSA-TEST-MERGE-READ", "valid_from": "2020-01-01", "recipients": [
            {"org_code": "RNU", "events": ["*"], "field_groups": trust_groups},
            {"org_code": BUCKS, "events": ["*"], "field_groups": ["identity", "legal-status"]}]}]}))
    return path


async def _read(http: httpx.AsyncClient, key: str, merge_id: str) -> httpx.Response:
    return await http.get(f"/v1/persons/merges/{merge_id}", headers={"X-API-Key": key})


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _ten_digits(text: str) -> bool:
    """Ten digits in a row outside the ids (a UUID's hex has ten digits in a row about once in a hundred)."""
    return re.search(r"\d{10}", _UUID.sub("-", text)) is not None


def _numbers(body: dict[str, Any]) -> tuple[Any, Any]:
    return body["retained"].get("nhs_number", "absent"), body["superseded"].get("nhs_number", "absent")


async def _reads(db_url: str) -> list[Any]:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(
                select(access_decisions.c.org_code, access_decisions.c.decision, access_decisions.c.person_id,
                       access_decisions.c.field_groups)
                .where(access_decisions.c.channel == "merge", access_decisions.c.action == "read")
                .order_by(access_decisions.c.decision_id))).all())
    finally:
        await engine.dispose()


async def test_the_trust_reads_its_merge_before_and_after_its_reversal_and_no_one_else_can_tell_it_exists(
        tmp_path: Path) -> None:
    """B detained from Worcestershire, A from Buckinghamshire; the trust merges A into B, and reads the merge:
    who, when, both hub persons, one change moved, not reversed, and no NHS number (its agreement does not
    grant `identity`), as the hub operator reads it with both numbers. Another trust, a council with a
    writing key and an unknown id: one identical 404, no sooner than the floor. Reversed: the trust reads the
    reversal (by whom, why, what went back); the operator still reads both numbers (each person holds its
    own again). The trust's agreement then grants `identity`: its next read shows them. Each read audited
    (an allowed one naming both persons); the log names neither number, name nor reason."""
    sharing = _sharing(tmp_path / "sharing.yaml", ["legal-status", "responsibility"])
    hub = HubProcess(tmp_path, sharing_path=sharing, S117_READ_REFUSAL_FLOOR_MS=str(FLOOR_MS),
                     S117_AGREEMENTS_RELOAD_SECONDS="0.2")
    keys = await _clients(hub.db_url)
    await hub.start()
    a, b = nhs_number(87_001), nhs_number(87_019)
    trust, operator = keys["trust"], keys["operator"]
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=15) as http:
            ids = {}
            for nhs, run, on, council, name in ((b, "rb", "2025-01-06", WORCS, "Grace"),
                                                (a, "ra", "2025-05-01", BUCKS, "Hope")):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": trust},
                                    json=_detained(nhs, run, on, council, given_name=name))
                assert r.status_code == 202, r.text
                ids[nhs] = r.json()["person_id"]
            kept, gone = ids[b], ids[a]
            r = await http.post("/v1/persons/merge", headers={"X-API-Key": trust},
                                json={"retained_nhs_number": b, "superseded_nhs_number": a})
            assert r.status_code == 200, r.text
            merged = r.json()
            merge_id = merged["merge_id"]

            r = await _read(http, trust, merge_id)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["status"] == "merged" and body["reversal"] is None
            assert (body["merged_by"], body["merged_at"], body["channel"], body["forced"]) == \
                ("RNU", merged["merged_at"], "rest", False)
            assert body["retained"] == {"person_id": kept} and body["superseded"] == {"person_id": gone}
            assert body["moved"] == {"changes": 1, "cases": 0, "care_package_lines": 0, "split_decisions": 0}
            assert body["event_id"] == merged["event_id"]
            assert a not in r.text and b not in r.text and not _ten_digits(r.text)
            r = await _read(http, operator, merge_id)
            assert r.status_code == 200 and _numbers(r.json()) == (b, a), r.text

            refusals = []
            for key, target in ((keys["other-trust"], merge_id), (keys["council-writer"], merge_id),
                                (trust, "00000000-0000-4000-8000-000000000000")):
                started = time.monotonic()
                r = await _read(http, key, target)
                assert time.monotonic() - started >= FLOOR_MS / 1000
                assert r.status_code == 404, r.text
                refusals.append({k: v for k, v in r.json().items() if k not in ("correlation_id", "instance")})
            assert refusals[0] == refusals[1] == refusals[2]

            r = await http.post(f"/v1/persons/merges/{merge_id}/reversal", headers={"X-API-Key": trust},
                                json={"reason": REASON})
            assert r.status_code == 200, r.text
            reversed_ = r.json()
            r = await _read(http, trust, merge_id)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["status"] == "reversed" and body["merged_at"] == merged["merged_at"]
            assert body["retained"] == {"person_id": kept} and body["superseded"] == {"person_id": gone}
            assert body["moved"]["changes"] == 1
            assert body["reversal"] == {
                "reversed_at": reversed_["reversed_at"], "reversed_by": "RNU", "reason": REASON,
                "moved_back": {"changes": 1, "cases": 0, "care_package_lines": 0, "split_decisions": 0},
                "unattributed_changes": [], "event_ids": reversed_["event_ids"]}
            assert not _ten_digits(r.text)
            r = await _read(http, operator, merge_id)
            assert r.status_code == 200 and _numbers(r.json()) == (b, a), r.text
            started = time.monotonic()
            r = await _read(http, keys["other-trust"], merge_id)
            assert time.monotonic() - started >= FLOOR_MS / 1000
            assert r.status_code == 404
            assert {k: v for k, v in r.json().items() if k not in ("correlation_id", "instance")} == refusals[0]

            # The trust's agreement now grants `identity` (the hub reloads the file while it runs).
            _sharing(sharing, ["identity", "legal-status", "responsibility"])
            deadline = time.monotonic() + 15
            while _numbers((r := await _read(http, trust, merge_id)).json()) != (b, a):
                assert time.monotonic() < deadline, r.text
                await asyncio.sleep(0.1)
    finally:
        hub.stop()
    reads = await _reads(hub.db_url)
    denied = [r for r in reads if r.decision == "denied"]
    assert [(r.org_code, r.person_id) for r in denied] == [("RXT", None), (BUCKS, None), ("RNU", None),
                                                           ("RXT", None)]
    allowed = [r for r in reads if r.decision == "allowed"]
    assert allowed and all(r.person_id in (kept, gone) for r in allowed)
    assert {(r.org_code, r.person_id) for r in allowed} == {(o, p) for o in ("RNU", "HUB") for p in (kept, gone)}
    # The trust's and the operator's reads before the agreement changed (two rows each: one a person), then
    # the trust's with `identity` granted.
    assert [(r.org_code, r.field_groups) for r in allowed[:8]] == \
        [("RNU", [])] * 2 + [("HUB", ["identity"])] * 2 + [("RNU", [])] * 2 + [("HUB", ["identity"])] * 2
    assert [(r.org_code, r.field_groups) for r in allowed[-2:]] == [("RNU", ["identity"])] * 2
    _no_personal_data(hub.logs(), a, b, "Okafor", "Grace", "Hope", "1990-07-21", REASON)
