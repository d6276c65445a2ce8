"""The one transaction shape of the three corrections (hub/corrections.py): a retraction, a merge of two NHS
numbers and its reversal each take the events topic's lock, lock the person, record the access decision,
write, publish one correction event, commit, and only then say what they did. Real SQLite store (the
in-process hub's); the services themselves are tested through their routes (tests/unit/test_retraction.py,
test_person_merges.py, test_person_unmerge.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hub.bus.port import HISTORY_CHANGES, LATE, RETRACTED
from hub.codec import from_jsonable
from hub.corrections import correction
from hub.domain.access import Rule
from hub.domain.dates import england_day
from hub.domain.model import RegisterChange
from hub.domain.retraction import retraction_event
from hub.domain.rules import evaluate
from hub.ingest.service import Client
from hub.store.schema import access_decisions, bus_messages, persons, register_changes
from tests.histories import BUCKS, GP
from tests.unit.test_person_merges import nhs_number

CLIENT = Client(client_id="c-test", name="test", org_code="RNU", org_kind="trust", scopes=("register:write",))


async def _decisions(engine, correlation_id: str) -> list:  # noqa: ANN001
    async with engine.connect() as conn:
        return list((await conn.execute(select(access_decisions.c.action, access_decisions.c.channel,
                                               access_decisions.c.decision, access_decisions.c.rule)
                                        .where(access_decisions.c.correlation_id == correlation_id))).all())


async def test_what_a_correction_says_is_said_once_it_has_committed_and_never_if_it_rolls_back(app_hub) -> None:  # noqa: ANN001
    engine = app_hub.hub.engine
    said: list[str] = []
    async with correction(engine, CLIENT, action="retract", channel="mllp", correlation_id="corr-1") as c:
        await c.decided(allowed=False, rule=Rule.NO_RELATIONSHIP)
        c.then(lambda: said.append("done"))
        assert said == []  # not before the commit
    assert said == ["done"]
    assert await _decisions(engine, "corr-1") == [("retract", "mllp", "denied", "no-relationship")]

    with pytest.raises(RuntimeError):
        async with correction(engine, CLIENT, action="merge", channel="rest", correlation_id="corr-2") as c:
            await c.decided(allowed=False, rule=Rule.NO_RELATIONSHIP)
            c.then(lambda: said.append("rolled back"))
            raise RuntimeError("a refusal raised inside: nothing kept, nothing said")
    assert said == ["done"]
    assert await _decisions(engine, "corr-2") == []


async def test_a_correction_locks_its_person_and_publishes_one_late_event_naming_what_it_corrects(app_hub) -> None:  # noqa: ANN001
    """The event is keyed by its person and carries the correction's header, the history it was told
    against, `late` and the request's correlation id, as the three services published it each."""
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]}, json={
        "source_system": "RiO", "source_message_id": "corr-det", "person": {"nhs_number": nhs_number(77_011)},
        "change_type": "detained", "effective_date": "2025-05-01", "legal_status_code": "03",
        "hospital_ods": "RNU", "gp_practice_ods": GP[BUCKS], "residence_la_gss": BUCKS})
    assert r.status_code == 202, r.text
    person_id = r.json()["person_id"]
    engine = app_hub.hub.engine
    async with engine.connect() as conn:
        change = from_jsonable(RegisterChange, (await conn.execute(select(register_changes.c.canonical).where(
            register_changes.c.change_id == r.json()["change_id"]))).scalar_one())
    after = evaluate(person_id, [change], app_hub.hub.ref, app_hub.hub.agreements, england_day())

    async with correction(engine, CLIENT, action="retract", channel="rest", correlation_id="corr-3") as c:
        row = await c.lock_person(persons.c.person_id == person_id, persons.c.nhs_number_index)
        assert row.person_id == person_id and row.nhs_number_index
        assert await c.lock_person(persons.c.person_id == "no-such-person") is None
        await c.publish(retraction_event(person_id, change), "e-corr-3", change, after, ["b", "a"],
                        (RETRACTED, change.change_id))
    async with engine.connect() as conn:
        [message] = (await conn.execute(select(bus_messages).where(bus_messages.c.event_id == "e-corr-3"))).all()
    assert message.key == person_id
    assert message.headers == {"correlation_id": "corr-3", "source": "c-test",
                               "event_type": "s117-notification-corrected", LATE: "1", RETRACTED: change.change_id,
                               HISTORY_CHANGES: "a,b"}
