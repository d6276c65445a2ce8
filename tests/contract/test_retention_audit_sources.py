"""Retention of the records behind the audit chain, on SQLite and PostgreSQL.

The chain's entries are purged after `S117_RETAIN_AUDIT_DAYS` (whole signed
days); the records they were made from (`disclosures`, `access_decisions`,
`operator_actions`: who was told what about whom) are purged with them, on
the same cutoff, and only once chained and their entry purged: `audit verify`
still passes, and a record not yet chained (or whose entry is still in the
chain) is kept however old."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from hub.audit import record_operator_action
from hub.delivery.queue import disclosure_row
from hub.retention import Purger, RetentionPolicy
from hub.store.schema import access_decisions, audit_chain, disclosures, operator_actions
from tests.support import detention

pytestmark = pytest.mark.integration

NHS = "9991100016"
TABLES = {"disclosures": (disclosures, disclosures.c.disclosure_id),
          "access_decisions": (access_decisions, access_decisions.c.decision_id),
          "operator_actions": (operator_actions, operator_actions.c.action_id)}


async def _counts(engine, before: datetime | None = None) -> dict[str, int]:  # noqa: ANN001
    out = {}
    async with engine.connect() as conn:
        for name, (table, _) in TABLES.items():
            q = select(func.count()).select_from(table)
            if before is not None:
                q = q.where(table.c.at < before)
            out[name] = (await conn.execute(q)).scalar_one()
        await conn.rollback()
    return out


async def _old_records_chained(store_hub) -> datetime:  # noqa: ANN001
    """A person's changes dispatched and an operator action, every record dated 400 days ago, then
    chained (as if written then) and their day signed; one record of each kind written today."""
    hub = store_hub.hub
    r = await store_hub.http.post("/v1/subscriptions", headers={"X-API-Key": store_hub.keys["E06000060"]},
                                  json={"channel": "feed"})
    assert r.status_code == 201, r.text
    for c in detention(NHS, "ret"):
        r = await store_hub.http.post("/v1/register-changes", headers={"X-API-Key": store_hub.keys["trust"]}, json=c)
        assert r.status_code == 202, r.text
    while await hub.dispatcher.run_once():
        pass
    old = datetime.now(UTC) - timedelta(days=400)
    async with hub.engine.begin() as conn:
        await record_operator_action(conn, "ops", "replay", "sub-1")
        for table, _ in TABLES.values():
            await conn.execute(table.update().values(at=old))
        await record_operator_action(conn, "ops", "retry", "sub-2")  # today's
    counts = await _counts(hub.engine, before=old + timedelta(days=1))
    assert all(counts.values()), counts  # an old record of each kind
    while await hub.audit.extend():
        pass
    assert await hub.audit.checkpoint(datetime.now(UTC).date()) >= 1
    assert (await hub.audit.verify())["ok"]
    return old


async def test_old_audit_records_are_purged_with_their_chain_entries_and_the_chain_verifies(store_hub) -> None:  # noqa: ANN001
    hub = store_hub.hub
    old = await _old_records_chained(store_hub)
    async with hub.engine.begin() as conn:  # an old record written after the chain read its table: not chained
        late = (await conn.execute(disclosures.insert().values(**disclosure_row(
            event_id="late-event", person_id=None, event_type="s117-entitlement-started", recipient_org="E06000060",
            decision="denied", agreement_id=None, field_groups=[], reason="late", channel=None, at=old))
            .returning(disclosures.c.disclosure_id))).scalar_one()
    done = await Purger(hub.engine, hub.audit, RetentionPolicy(0, 0, 0, 365)).run_once()
    left = await _counts(hub.engine, before=old + timedelta(days=1))
    assert left == {"disclosures": 1, "access_decisions": 0, "operator_actions": 0}, left  # the late one only
    assert done["audit"] > 0
    assert done["audit_disclosures"] > 0 and done["audit_access_decisions"] > 0
    assert done["audit_operator_actions"] == 1, done
    assert (await _counts(hub.engine))["operator_actions"] == 1  # today's kept
    result = await hub.audit.verify()
    assert result["ok"], result
    metrics = (await store_hub.http.get("/metrics")).text
    assert 's117_retention_purged_total{kind="audit_disclosures"}' in metrics

    # The late record is chained now, after the anchor (its old day was signed already): its entry
    # stays in the chain, so the record stays too, and the chain still verifies.
    assert await hub.audit.extend() >= 1
    done = await Purger(hub.engine, hub.audit, RetentionPolicy(0, 0, 0, 365)).run_once()
    assert done["audit_disclosures"] == 0, done
    async with hub.engine.connect() as conn:
        kept = (await conn.execute(select(func.count()).select_from(disclosures)
                                   .where(disclosures.c.disclosure_id == late))).scalar_one()
        live = (await conn.execute(select(func.count()).select_from(audit_chain).where(
            audit_chain.c.source == "disclosures", audit_chain.c.source_id == late))).scalar_one()
        await conn.rollback()
    assert kept == live == 1
    result = await hub.audit.verify()
    assert result["ok"], result


async def test_records_of_a_chain_the_purge_could_not_cut_are_kept(store_hub) -> None:  # noqa: ANN001
    """A chain that no longer matches its signed checkpoint is not purged (what shows the tampering
    stays): nor are the records behind it."""
    hub = store_hub.hub
    old = await _old_records_chained(store_hub)
    before = await _counts(hub.engine, before=old + timedelta(days=1))
    async with hub.engine.begin() as conn:  # the signed day's last entry edited
        top = (await conn.execute(select(func.max(audit_chain.c.seq))
                                  .where(audit_chain.c.at < old + timedelta(days=1)))).scalar_one()
        await conn.execute(audit_chain.update().where(audit_chain.c.seq == top).values(entry_hash="f" * 64))
    done = await Purger(hub.engine, hub.audit, RetentionPolicy(0, 0, 0, 365)).run_once()
    assert done["audit"] == 0 and done["audit_disclosures"] == done["audit_access_decisions"] == 0, done
    assert await _counts(hub.engine, before=old + timedelta(days=1)) == before


async def test_audit_records_are_kept_for_ever_when_audit_retention_is_off(store_hub) -> None:  # noqa: ANN001
    hub = store_hub.hub
    old = await _old_records_chained(store_hub)
    before = await _counts(hub.engine, before=old + timedelta(days=1))
    done = await Purger(hub.engine, hub.audit, RetentionPolicy(0, 0, 0, 0)).run_once()
    assert not any(done.values()), done
    assert await _counts(hub.engine, before=old + timedelta(days=1)) == before


async def test_after_the_purge_the_readers_of_the_records_see_only_what_is_kept(store_hub) -> None:  # noqa: ANN001
    """Decided, as retention intends: the subject access look-up lists what is kept (today's look-ups
    and what the hub told since the cutoff); a body told of the person only before the cutoff is no
    longer a notified body for reads, nor counted in its full extract's 'was told of'."""
    from types import SimpleNamespace  # noqa: PLC0415

    from hub.api.persons import _last_notified  # noqa: PLC0415

    hub = store_hub.hub
    await _old_records_chained(store_hub)
    async with hub.engine.connect() as conn:
        person_id = (await conn.execute(select(disclosures.c.person_id)
                                        .where(disclosures.c.person_id.is_not(None)).limit(1))).scalar_one()
        await conn.rollback()
    bucks = SimpleNamespace(org_code="E06000060")
    assert await _last_notified(hub, bucks, person_id) is not None
    assert person_id in await hub.exports.people_for("E06000060")
    assert await hub.audit.person(person_id)
    await Purger(hub.engine, hub.audit, RetentionPolicy(0, 0, 0, 365)).run_once()
    assert await _last_notified(hub, bucks, person_id) is None
    assert person_id not in await hub.exports.people_for("E06000060")
    assert await hub.audit.person(person_id) == []
    assert (await hub.audit.verify())["ok"]
