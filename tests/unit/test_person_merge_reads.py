"""The superseded person's hub id after an NHS number merge (hub/merges.py): GET /v1/persons/{id}/s117.

Before, the id of a person whose number a merge superseded answered 404 as if they had never been on
the register: a body holding that id (it was told of it in earlier messages) could not learn where the
person went. Now it answers `410 Gone` problem details with `merged_into` (the retained person's id)
to a caller the access policy lets read the retained person, and the one 404 of an unknown id to anyone
else (no oracle). Real ingest and API on SQLite, in process."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from hub.clients import add_client
from hub.store.schema import access_decisions
from tests.support import detention
from tests.unit.test_person_merges import nhs_number


async def _on_register(app_hub, nhs: str, run: str) -> str:  # noqa: ANN001
    for change in detention(nhs, run):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json=change)
        assert r.status_code == 202, r.text
    return r.json()["person_id"]


async def _merge(app_hub, retained: str, superseded: str) -> dict:  # noqa: ANN001
    r = await app_hub.http.post("/v1/persons/merge", headers={"X-API-Key": app_hub.keys["trust"]},
                                json={"retained_nhs_number": retained, "superseded_nhs_number": superseded})
    assert r.status_code == 200, r.text
    return r.json()


async def test_the_superseded_persons_id_answers_gone_with_the_retained_person_to_a_reader_of_them(app_hub) -> None:  # noqa: ANN001
    a, b, c = nhs_number(7101), nhs_number(7103), nhs_number(7107)
    gone, kept = await _on_register(app_hub, a, "a"), await _on_register(app_hub, b, "b")
    assert (await _merge(app_hub, b, a))["superseded_person_id"] == gone
    bucks, brum = {"X-API-Key": app_hub.keys["E06000060"]}, {"X-API-Key": app_hub.keys["E08000025"]}
    # Worcestershire: an agreement in force, no part in this person's care (the policy refuses the read).
    worcs = {"X-API-Key": (await add_client(app_hub.hub.engine, "Worcs", "E10000034", "council", ["s117:read"]))[1]}

    r = await app_hub.http.get(f"/v1/persons/{gone}/s117", headers=bucks)
    assert r.status_code == 410, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 410 and body["merged_into"] == kept and body["type"].endswith("/person-merged")
    assert a not in r.text and b not in r.text  # never a number
    assert (await app_hub.http.get(f"/v1/persons/{kept}/s117", headers=bucks)).status_code == 200
    r = await app_hub.http.get(f"/v1/persons/{gone}/s117", headers=bucks, params={"as_of": "2025-05-01"})
    assert r.status_code == 410 and r.json()["merged_into"] == kept, r.text

    # A caller who may not read the retained person: the 404 of an id never on the register, word for word.
    for who in (brum, worcs):
        unknown = await app_hub.http.get(f"/v1/persons/{uuid.uuid4()}/s117", headers=who)
        refused = await app_hub.http.get(f"/v1/persons/{gone}/s117", headers=who)
        assert refused.status_code == unknown.status_code == 404, refused.text
        assert refused.json() == unknown.json() and kept not in refused.text
    async with app_hub.hub.engine.connect() as conn:  # each read on record, as the retained person's
        reads = (await conn.execute(select(access_decisions.c.org_code, access_decisions.c.decision,
                                           access_decisions.c.person_id)
                                    .where(access_decisions.c.action == "read", access_decisions.c.channel == "query")
                                    .order_by(access_decisions.c.decision_id))).all()
        await conn.rollback()
    assert [tuple(r) for r in reads] == [("E06000060", "allowed", kept)] * 3 + [
        ("E08000025", "denied", None)] * 2 + [("E10000034", "denied", None), ("E10000034", "denied", kept)]

    # A chain (A into B, later B into C): the first id answers with the end of the chain.
    kept_c = await _on_register(app_hub, c, "c")
    await _merge(app_hub, c, b)
    for old in (gone, kept):
        r = await app_hub.http.get(f"/v1/persons/{old}/s117", headers=bucks)
        assert r.status_code == 410 and r.json()["merged_into"] == kept_c, r.text


async def test_a_person_whose_number_alone_was_superseded_keeps_their_id(app_hub) -> None:  # noqa: ANN001
    """Only the superseded number was on the register: its person takes the retained number, same id."""
    a, b = nhs_number(7109), nhs_number(7111)
    person = await _on_register(app_hub, a, "only")
    assert (await _merge(app_hub, b, a))["retained_person_id"] == person
    r = await app_hub.http.get(f"/v1/persons/{person}/s117", headers={"X-API-Key": app_hub.keys["E06000060"]})
    assert r.status_code == 200, r.text
