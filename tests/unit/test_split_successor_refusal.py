"""A `moved` change naming the successor of a split council (hazard H-03) from a body with no role for the
person gets the access policy's one `no-relationship` refusal, whoever sends it: the abolished county itself,
either successor (before it is named, neither is responsible or coordinating), a council with nothing to do
with the person, and anyone about a person not on the register. The same whole answer (no caller may tell
from it whether the person exists, or that a split awaits them), audited, and nothing of it kept. REST and
FHIR here; council files: tests/unit/test_split_successor_channels.py."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from hub.clients import add_client
from hub.store.schema import access_decisions, persons, quarantine, register_changes
from tests.unit.test_split_successor_channels import (
    CUMBERLAND, CUMBRIA, NHS, URL, WESTMORLAND, moved, position, split_person,
)

BUCKS = "E06000060"  # a council in place today with no role for the person
UNKNOWN_NHS = "9990000018"  # valid, on no register
# The senders: the abolished county, each successor, a council with no role.
SENDERS = {CUMBRIA: "Cumbria", CUMBERLAND: "Cumberland", WESTMORLAND: "Westmorland and Furness",
           BUCKS: "Buckinghamshire"}
PER_REQUEST = ("correlation_id", "instance")  # ids an answer may carry that differ request by request


@pytest.fixture
async def senders(app_hub) -> dict[str, dict[str, str]]:  # noqa: ANN001
    """Each sender's case system, allowed to write to the register (its org code -> its headers)."""
    return {code: {"X-API-Key": (await add_client(app_hub.hub.engine, name, code, "council", ["register:write"]))[1]}
            for code, name in SENDERS.items()}


def without_ids(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in PER_REQUEST}


async def kept(app_hub) -> tuple[int, int, int]:  # noqa: ANN001
    """What the register holds: people, register changes, quarantined inputs."""
    async with app_hub.hub.engine.connect() as conn:
        return tuple([(await conn.execute(select(func.count()).select_from(t))).scalar_one()  # type: ignore[return-value]
                      for t in (persons, register_changes, quarantine)])


async def refusals_audited(app_hub, channel: str) -> list[tuple[str, str, str, str, str | None]]:  # noqa: ANN001
    async with app_hub.hub.engine.connect() as conn:
        rows = (await conn.execute(
            select(access_decisions.c.org_code, access_decisions.c.decision, access_decisions.c.rule,
                   access_decisions.c.change_type, access_decisions.c.person_id)
            .where(access_decisions.c.channel == channel, access_decisions.c.decision != "allowed")
            .order_by(access_decisions.c.decision_id))).all()
    return [tuple(r) for r in rows]


def expected_audit(person_id: str) -> list[tuple[str, str, str, str, str | None]]:
    """One denial per sender about the person, then Cumberland's about no one (the unknown NHS number)."""
    return [*((code, "denied", "no-relationship", "moved", person_id) for code in SENDERS),
            (CUMBERLAND, "denied", "no-relationship", "moved", None)]


async def test_rest_every_sender_with_no_role_gets_one_identical_refusal_audited_nothing_kept(app_hub, senders):
    person_id = await split_person(app_hub)
    before = await kept(app_hub)
    answers: dict[str, tuple[int, str, dict[str, Any]]] = {}

    async def post(who: str, headers: dict[str, str], nhs: str, smid: str) -> None:
        r = await app_hub.http.post("/v1/register-changes", headers=headers, json={
            "source_system": "CaseSys", "source_message_id": smid, "change_type": "moved",
            "effective_date": "2026-01-05", "person": {"nhs_number": nhs},
            "residence_before_detention_la_gss": CUMBERLAND})
        answers[who] = (r.status_code, r.headers["content-type"], without_ids(r.json()))

    for n, code in enumerate(SENDERS):
        await post(code, senders[code], NHS, f"refused-{n}")
    await post("unknown person", senders[CUMBERLAND], UNKNOWN_NHS, "refused-unknown")
    first = answers[CUMBRIA]
    assert first[0] == 403 and first[1] == "application/problem+json", first
    assert first[2]["rule"] == "no-relationship" and [e["field"] for e in first[2]["errors"]] == ["person.nhs_number"]
    assert {who: a for who, a in answers.items() if a != first} == {}
    assert await refusals_audited(app_hub, "rest") == expected_audit(person_id)
    assert await kept(app_hub) == before
    assert (await position(app_hub, person_id))["responsible_council"] is None


async def test_fhir_every_sender_with_no_role_gets_one_identical_refusal_audited_nothing_kept(app_hub, senders):
    person_id = await split_person(app_hub)
    before = await kept(app_hub)
    answers: dict[str, tuple[int, str, dict[str, Any]]] = {}

    async def post(who: str, headers: dict[str, str], bundle: dict[str, Any]) -> None:
        r = await app_hub.http.post(URL, content=orjson.dumps(bundle),
                                    headers={**headers, "Content-Type": "application/fhir+json"})
        answers[who] = (r.status_code, r.headers["content-type"], without_ids(r.json()))

    for n, code in enumerate(SENDERS):
        await post(code, senders[code], moved(council=CUMBERLAND, message_id=f"refused-fhir-{n}"))
    unknown = moved(council=CUMBERLAND, message_id="refused-fhir-unknown")
    unknown["entry"][1]["resource"]["identifier"][0]["value"] = UNKNOWN_NHS
    await post("unknown person", senders[CUMBERLAND], unknown)
    first = answers[CUMBRIA]
    assert first[0] == 403 and first[1].startswith("application/fhir+json"), first
    assert first[2]["resourceType"] == "OperationOutcome"
    assert [(i["severity"], i["code"]) for i in first[2]["issue"]] == [("error", "forbidden")]
    assert first[2]["issue"][0]["diagnostics"].startswith("no-relationship: ")
    assert {who: a for who, a in answers.items() if a != first} == {}
    assert await refusals_audited(app_hub, "fhir") == expected_audit(person_id)
    assert await kept(app_hub) == before
    assert (await position(app_hub, person_id))["responsible_council"] is None
