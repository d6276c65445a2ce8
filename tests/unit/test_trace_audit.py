"""The engineers' trace, withheld disclosures, the tamper-evident audit and
retention, through the in-process app and a real SQLite store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import func, select, text

from hub.clients import add_client
from hub.retention import Purger, RetentionPolicy
from hub.store.schema import access_decisions, audit_chain, bus_messages, deliveries, delivery_messages, disclosures, quarantine
from tests.support import detention

NHS = "9991100016"



@pytest.fixture
async def admin(app_hub):  # noqa: ANN001
    return {"X-API-Key": (await add_client(app_hub.hub.engine, "ops", "HUB", "hub-operator", ["hub:admin"]))[1]}


@pytest.fixture
async def flowed(app_hub):  # noqa: ANN001
    """Bucks subscribed by feed; two changes accepted and dispatched; one rejected."""
    r = await app_hub.http.post("/v1/subscriptions", headers={"X-API-Key": app_hub.keys["E06000060"]},
                                json={"channel": "feed"})
    assert r.status_code == 201
    answers = []
    for c in detention(NHS, "t"):
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"],
                                                                    "X-Correlation-Id": f"cafe-000{c['source_message_id'][-1]}"},
                                    json=c)
        assert r.status_code == 202, r.text
        answers.append(r.json())
    bad = {**detention(NHS, "bad")[0], "legal_status_code": "XX"}
    r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"],
                                                                "X-Correlation-Id": "cafe-bad"}, json=bad)
    assert r.status_code == 422
    while await app_hub.hub.dispatcher.run_once():
        pass
    return answers


async def test_trace_by_correlation_id_runs_from_receipt_to_each_recipient(app_hub, admin, flowed) -> None:  # noqa: ANN001
    r = await app_hub.http.get("/v1/ops/trace?correlation_id=cafe-0002", headers=admin)
    assert r.status_code == 200, r.text
    t = r.json()
    stages = [e["stage"] for e in t["timeline"]]
    assert stages[0] == "recorded" and "event-derived" in stages and "recipient-considered" in stages
    assert "delivery-queued" in stages  # the feed subscription
    recorded = t["timeline"][0]
    assert (recorded["channel"], recorded["change_type"], recorded["service_level"]["state"]) == (
        "rest", "left-hospital", "met")
    started = [e for e in t["timeline"] if e["stage"] == "event-derived" and e["event_type"] == "s117-entitlement-started"]
    assert started and started[0]["citation"]
    decisions = {(e["recipient"], e["decision"]) for e in t["timeline"] if e["stage"] == "recipient-considered"}
    assert ("E06000060", "allowed") in decisions
    assert NHS not in r.text
    # The same event found by its id, and by a message id.
    eid = started[0]["event_id"]
    by_event = (await app_hub.http.get(f"/v1/ops/trace?event_id={eid}", headers=admin)).json()
    assert by_event["changes"] == 1 and by_event["timeline"][0]["change_id"] == recorded["change_id"]
    mid = next(e["message_id"] for e in t["timeline"] if e["stage"] == "delivery-queued")
    assert (await app_hub.http.get(f"/v1/ops/trace?message_id={mid}", headers=admin)).json()["changes"] == 1
    # A quarantined input is traced too, with its reasons.
    bad = (await app_hub.http.get("/v1/ops/trace?correlation_id=cafe-bad", headers=admin)).json()
    [held] = bad["timeline"]
    assert held["stage"] == "quarantined" and held["errors"][0]["field"] == "legal_status_code"
    # By NHS number: in the body.
    person = (await app_hub.http.post("/v1/ops/trace/person", headers=admin, json={"nhs_number": NHS})).json()
    assert person["changes"] == 2
    assert (await app_hub.http.get("/v1/ops/trace", headers=admin)).status_code == 422
    assert (await app_hub.http.get("/v1/ops/trace?person_id=x", headers={"X-API-Key": app_hub.keys["trust"]})
            ).status_code == 403


async def test_withheld_disclosures_show_the_gaps_in_agreements(app_hub, admin, flowed) -> None:  # noqa: ANN001
    r = await app_hub.http.get("/v1/ops/withheld", headers=admin)
    groups = r.json()["groups"]
    # BOB ICB is named by the rules but has no subscription here; the outbound body with no agreement would be
    # 'denied'. Each group names the body, the decision and why.
    assert groups and all(g["decision"] in ("denied", "no-subscription") for g in groups)
    icb = [g for g in groups if g["recipient"] == "QU9"]
    assert icb and icb[0]["decision"] == "no-subscription" and icb[0]["count"] >= 2
    metrics = (await app_hub.http.get("/metrics")).text
    assert 's117_withheld_disclosures{decision="no-subscription",recipient="QU9"}' in metrics


async def test_an_edited_deleted_or_reordered_audit_entry_is_caught(app_hub, admin, flowed) -> None:  # noqa: ANN001
    chain = app_hub.hub.audit
    assert await chain.extend() > 0
    assert (await chain.verify())["ok"]
    r = await app_hub.http.get("/v1/ops/audit/verify", headers=admin)
    assert r.json()["ok"] and r.json()["entries_checked"] >= 3
    async with app_hub.hub.engine.begin() as conn:
        # Someone edits a disclosure after the fact: the recipient's agreement.
        first = (await conn.execute(select(func.min(disclosures.c.disclosure_id)))).scalar_one()
        await conn.execute(disclosures.update().where(disclosures.c.disclosure_id == first).values(agreement_id="FORGED"))
    problems = (await chain.verify())["problems"]
    assert any("edited after it was chained" in p["problem"] for p in problems)
    async with app_hub.hub.engine.begin() as conn:
        await conn.execute(disclosures.update().where(disclosures.c.disclosure_id == first)
                           .values(agreement_id=(await conn.execute(select(audit_chain.c.content).where(
                               audit_chain.c.source_id == first, audit_chain.c.source == "disclosures"))).scalar_one()
                                   ["agreement_id"]))
    assert (await chain.verify())["ok"]
    async with app_hub.hub.engine.begin() as conn:  # an entry edited in the chain itself
        await conn.execute(text("UPDATE audit_chain SET org = 'X', content = json_set(content, '$.reason', 'x') "
                                "WHERE seq = 2"))
    assert any(p.get("seq") == 2 and "hash" in p["problem"] for p in (await chain.verify())["problems"])


async def test_a_deleted_entry_and_a_forged_checkpoint_are_caught(app_hub, flowed) -> None:  # noqa: ANN001
    chain = app_hub.hub.audit
    await chain.extend()
    assert await chain.checkpoint(datetime.now(UTC).date() + timedelta(days=1)) == 1
    assert (await chain.verify())["ok"]
    async with app_hub.hub.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_checkpoints SET last_seq = last_seq - 1"))
    assert any("checkpoint" in p["problem"] for p in (await chain.verify())["problems"])
    async with app_hub.hub.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_checkpoints"))
        await conn.execute(text("DELETE FROM audit_chain WHERE seq = 2"))
    problems = (await chain.verify())["problems"]
    assert any("missing or reordered" in p["problem"] for p in problems)
    assert any("does not link" in p["problem"] for p in problems)


async def test_who_was_told_what_about_a_person_as_fhir_audit_events(app_hub, admin, flowed) -> None:  # noqa: ANN001
    r = await app_hub.http.post("/v1/ops/audit/person", headers=admin, json={"nhs_number": NHS})
    told = r.json()["disclosures"]
    assert {(d["recipient"], d["decision"]) for d in told} >= {("E06000060", "allowed"), ("QU9", "no-subscription")}
    assert all(d["chain_seq"] for d in told)
    r = await app_hub.http.post("/v1/ops/audit/person", headers=admin, json={"nhs_number": NHS, "format": "fhir"})
    bundle = Bundle.model_validate(r.json())
    assert {e.resource.__resource_type__ for e in bundle.entry} == {"AuditEvent"}
    assert len(bundle.entry) == len(told)
    # The look-up itself is an operator action in the chain.
    await app_hub.hub.audit.extend()
    async with app_hub.hub.engine.connect() as conn:
        kinds = (await conn.execute(select(audit_chain.c.kind).distinct())).scalars().all()
    assert "operator" in kinds


async def test_retention_purges_what_is_no_longer_needed_and_the_chain_still_verifies(app_hub, flowed) -> None:  # noqa: ANN001
    engine = app_hub.hub.engine
    chain = app_hub.hub.audit
    await chain.extend()
    old = datetime.now(UTC) - timedelta(days=400)
    async with engine.begin() as conn:
        await conn.execute(deliveries.update().values(status="delivered", delivered_at=old))
        await conn.execute(bus_messages.update().values(created_at=old))
        await conn.execute(quarantine.update().values(received_at=old))
        await conn.execute(text("UPDATE audit_chain SET at = :old WHERE seq <= 2"), {"old": old})
        await conn.execute(text("UPDATE audit_chain SET content = json_set(content, '$.at', :iso) WHERE seq <= 2"),
                           {"iso": old.isoformat()})
        for table, key in ((disclosures, disclosures.c.disclosure_id),
                           (access_decisions, access_decisions.c.decision_id)):  # both are chained sources
            await conn.execute(table.update().where(key.in_(
                select(audit_chain.c.source_id).where(audit_chain.c.seq <= 2,
                                                      audit_chain.c.source == table.name))).values(at=old))
        before = (await conn.execute(select(func.count()).select_from(bus_messages))).scalar_one()
    # Rehash the two aged entries as they would have been written then.
    from hub.audit import entry_hash
    async with engine.begin() as conn:
        prev = "0" * 64
        for e in (await conn.execute(select(audit_chain).order_by(audit_chain.c.seq))).all():
            h = entry_hash(prev, e.content)
            await conn.execute(audit_chain.update().where(audit_chain.c.seq == e.seq).values(prev_hash=prev, entry_hash=h))
            prev = h
    assert (await chain.verify())["ok"]
    done = await Purger(engine, chain, RetentionPolicy(30, 30, 90, 365)).run_once()
    assert done["delivered_payloads"] >= 1 and done["quarantine_raw"] == 1 and done["audit"] == 2
    assert 0 < done["outbox"] <= before  # only what the dispatcher committed past
    async with engine.connect() as conn:
        empty = (await conn.execute(select(func.count()).select_from(delivery_messages)
                                    .where(func.length(delivery_messages.c.payload) == 0))).scalar_one()
    assert empty >= 1
    result = await chain.verify()
    assert result["ok"], result
    metrics = (await app_hub.http.get("/metrics")).text
    assert 's117_retention_purged_total{kind="audit"}' in metrics


async def test_quarantine_triage_resubmit_linked_or_discard_with_reason(app_hub) -> None:  # noqa: ANN001
    trust = {"X-API-Key": app_hub.keys["trust"]}
    bad = {**detention(NHS, "q")[0], "legal_status_code": "XX"}
    held = (await app_hub.http.post("/v1/register-changes", headers=trust, json=bad)).json()["quarantine_id"]
    still_bad = await app_hub.http.post(f"/v1/quarantine/{held}/resubmit", headers=trust, json={**bad, "source_message_id": "q-1b"})
    assert still_bad.status_code == 422 and still_bad.json()["resubmission_of"] == held
    fixed = await app_hub.http.post(f"/v1/quarantine/{held}/resubmit", headers=trust,
                                    json={**bad, "source_message_id": "q-1c", "legal_status_code": "03"})
    assert fixed.status_code == 202, fixed.text
    row = (await app_hub.http.get(f"/v1/quarantine/{held}", headers=trust)).json()
    assert (row["status"], row["resolved_by"]) == ("resubmitted", fixed.json()["change_id"])
    again = await app_hub.http.post(f"/v1/quarantine/{held}/resubmit", headers=trust, json=bad)
    assert again.status_code == 409
    other = (await app_hub.http.post("/v1/register-changes", headers=trust, json={**bad, "source_message_id": "q-2"})
             ).json()["quarantine_id"]
    not_mine = await app_hub.http.post(f"/v1/quarantine/{other}/discard", headers={"X-API-Key": app_hub.keys["other-trust"]},
                                       json={"reason": "not ours"})
    assert not_mine.status_code == 404
    r = await app_hub.http.post(f"/v1/quarantine/{other}/discard", headers=trust, json={"reason": "sent in error"})
    assert r.json()["status"] == "discarded"
    t = (await app_hub.http.get(f"/v1/quarantine/{other}", headers=trust)).json()
    assert (t["status"], t["resolution_reason"]) == ("discarded", "sent in error")


async def test_the_console_time_series(app_hub, admin, flowed) -> None:  # noqa: ANN001
    from hub.timeseries import Sampler

    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    sampler = Sampler(app_hub.hub.engine, app_hub.hub.bus)
    sampler._last = now - timedelta(minutes=10)
    await sampler.sample(now)
    await sampler.sample(now)  # the same moment again: nothing new is counted twice
    r = await app_hub.http.get("/v1/ops/series?window=hour", headers=admin)
    body = r.json()
    assert body["step_seconds"] == 60 and len(body["buckets"]) == 60
    assert sum(v or 0 for v in body["series"]["ingest"]["rest"]) == 2
    assert sum(v or 0 for v in body["series"]["quarantined"]["-"]) == 1
    assert body["series"]["lag"]["-"][-1] == 0
    day = (await app_hub.http.get("/v1/ops/series?window=day", headers=admin)).json()
    assert len(day["buckets"]) == 96 and sum(v or 0 for v in day["series"]["ingest"]["rest"]) == 2
    assert (await app_hub.http.get("/v1/ops/series?window=year", headers=admin)).status_code == 422


async def test_each_finished_day_is_signed_once_reading_each_entry_once(tmp_path) -> None:  # noqa: ANN001
    """Checkpoints over days, across a restart: every finished day with
    entries is signed with its last entry, once; the chain verifies; a later
    round reads only the entries chained since (not the whole chain)."""
    from hub.audit import AuditChain
    from hub.store.db import close_inline, create_engine, create_schema
    from hub.store.schema import audit_checkpoints, operator_actions

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await create_schema(engine)
    day1 = datetime(2026, 11, 28, 10, tzinfo=UTC)

    async def act(at: datetime, n: int) -> None:
        async with engine.begin() as conn:
            await conn.execute(operator_actions.insert(), [
                {"at": at + timedelta(minutes=i), "client_id": "ops", "action": "replay", "target": f"t{i}",
                 "detail": {}} for i in range(n)])

    statements: list[str] = []
    try:
        chain = AuditChain(engine, b"k" * 32)
        await act(day1, 3)
        await act(day1 + timedelta(days=1), 2)
        await chain.extend()
        assert await chain.checkpoint(day1.date()) == 0  # day 1 not finished yet
        assert await chain.checkpoint((day1 + timedelta(days=1)).date()) == 1  # day 1
        assert await chain.checkpoint((day1 + timedelta(days=1)).date()) == 0  # not twice
        await act(day1 + timedelta(days=2), 4)
        await chain.extend()
        restarted = AuditChain(engine, b"k" * 32)  # a new process: starts after the newest checkpoint
        assert await restarted.checkpoint((day1 + timedelta(days=3)).date()) == 2  # days 2 and 3
        assert await chain.checkpoint((day1 + timedelta(days=3)).date()) == 0  # another instance: signed already
        async with engine.connect() as conn:
            signed = {r.day: r.last_seq for r in (await conn.execute(select(audit_checkpoints))).all()}
        assert signed == {day1.date(): 3, (day1 + timedelta(days=1)).date(): 5,
                          (day1 + timedelta(days=2)).date(): 9}
        assert (await restarted.verify())["ok"]
        # A quiet round reads only what is new since the last one (the SQL
        # as SQLite ran it, parameters expanded, from the writer's connection).
        await act(day1 + timedelta(days=3), 2)  # today's: read, not yet signed
        await restarted.extend()
        assert await restarted.checkpoint((day1 + timedelta(days=3)).date()) == 0
        from hub.store.db import inline_writer
        dbapi = inline_writer(engine)._conn.connection.dbapi_connection
        dbapi.set_trace_callback(statements.append)
        try:
            await restarted.checkpoint((day1 + timedelta(days=3)).date())
        finally:
            dbapi.set_trace_callback(None)
        reads = [s for s in statements if "FROM audit_chain" in s]
        assert reads and all("audit_chain.seq > 11" in s for s in reads), reads
        assert await restarted.checkpoint((day1 + timedelta(days=4)).date()) == 1  # today's, once finished
    finally:
        close_inline(engine)
        await engine.dispose()
