"""GET /v1/persons/merges/{merge_id} (hub/merge_reads.py): who may read a merge, and which NHS numbers the
hub can still show once it is reversed. In process over the API, a real SQLite store; the whole story over
a real socket is tests/e2e/test_person_merge_read.py."""

from __future__ import annotations

import pytest

from hub.clients import add_client
from hub.domain.access import Caller, Role, Rule, decide_merge_read
from tests.e2e.test_person_unmerge import _detained
from tests.histories import BUCKS
from tests.unit.test_person_merges import nhs_number

REASON = "two patients, not one"


@pytest.mark.parametrize(("caller", "allowed", "role"), [
    (Caller("HUB", "hub-operator", admin=True), True, Role.HUB_OPERATOR),
    (Caller("RNU", "trust"), True, None),  # the organisation that recorded it (any of its keys)
    (Caller("RXT", "trust"), False, None),
    (Caller(BUCKS, "council"), False, None),  # told of a person merged, not the merge's
    (Caller("QU9", "icb"), False, None),
])
def test_a_merge_is_read_by_who_may_reverse_it_and_no_one_else(caller: Caller, allowed: bool,
                                                               role: Role | None) -> None:
    decision = decide_merge_read(caller, "RNU")
    assert (decision.allowed, decision.role) == (allowed, role)
    assert decision.rule is (Rule.ALLOWED if allowed else Rule.NO_RELATIONSHIP)
    unknown = decide_merge_read(caller, None)  # no such merge: the same refusal, even for the operator
    assert (unknown.allowed, unknown.rule) == (False, Rule.NO_RELATIONSHIP)


async def test_after_a_reversal_a_number_is_shown_while_a_person_holds_it_and_null_when_none_does(
        app_hub) -> None:  # noqa: ANN001
    """Only A had a person (the merge gave it B): reversed, A's person holds A again and B no one, so the
    read shows A and null for B. A link of two numbers no one held (C into D): shown while it stands (the
    merge row keeps both, encrypted), both null once reversed (the reversal keeps no number)."""
    http, hub = app_hub.http, app_hub.hub
    operator = {"X-API-Key": (await add_client(hub.engine, "Operator", "HUB", "hub-operator",
                                               ["hub:admin", "register:write"]))[1]}
    a, b, c, d = (nhs_number(86_003 + 37 * i) for i in range(4))
    r = await http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                        json=_detained(a, "mr-a", "2025-03-03", BUCKS))
    assert r.status_code == 202, r.text
    person = r.json()["person_id"]

    async def merged_then_reversed(retained: str, superseded: str) -> tuple[dict, dict]:
        r = await http.post("/v1/persons/merge", headers=operator,
                            json={"retained_nhs_number": retained, "superseded_nhs_number": superseded})
        assert r.status_code == 200, r.text
        merge_id = r.json()["merge_id"]
        before = (await http.get(f"/v1/persons/merges/{merge_id}", headers=operator)).json()
        r = await http.post(f"/v1/persons/merges/{merge_id}/reversal", headers=operator, json={"reason": REASON})
        assert r.status_code == 200, r.text
        after = await http.get(f"/v1/persons/merges/{merge_id}", headers=operator)
        assert after.status_code == 200, after.text
        return before, after.json()

    before, after = await merged_then_reversed(b, a)
    assert before["retained"] == {"person_id": person, "nhs_number": b}
    assert before["superseded"] == {"person_id": person, "nhs_number": a}
    assert after["retained"] == {"person_id": person, "nhs_number": None}
    assert after["superseded"] == {"person_id": person, "nhs_number": a}
    assert after["reversal"]["reason"] == REASON and after["reversal"]["reversed_by"] == "HUB"

    before, after = await merged_then_reversed(d, c)
    assert before["retained"] == {"person_id": None, "nhs_number": d}
    assert before["superseded"] == {"person_id": None, "nhs_number": c}
    assert after["retained"] == after["superseded"] == {"person_id": None, "nhs_number": None}
    assert after["moved"] == {"changes": 0, "cases": 0, "care_package_lines": 0, "split_decisions": 0}
