"""`s117hub rotate-data-key` (hub/store/rekey.py) on each store backend: a store filled through the hub's
API (people with their details, a merge, a retraction, quarantined input, a webhook subscription and its
queued messages, a council's reconciliation snapshot and its differences, a transfer case's reason, a
signed audit checkpoint) is rotated to a new key in chunks; a rotation that fails after its first chunk
leaves a store every process refuses ("a data key rotation is in progress"), and the same rotation run
again finishes it. Then everything reads under the new key, the old key is refused as any wrong one, the
audit chain verifies, and the rotation is an audited operator action. A keyed hash whose NHS number the
store does not hold is refused before anything is changed. A council's reconciliation of someone not on the
register is rotated from the number kept beside its hash (migration 0041); one kept before (the hash only)
is refused naming `--forget-unmatched-reconciliation`, which replaces it by a tombstone matching no one."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select

from hub.api.app import create_app
from hub.audit import AuditChain, audit_key
from hub.clients import add_client
from hub.crypto import DataProtector
from hub.fhir.namespaces import DEFAULT_CANONICAL_BASE
from hub.reconciliation import Reconciler
from hub.settings import REPO_ROOT, Settings
from hub.store.key_check import DataKeyMismatch, RotationInProgress, store_protector
from hub.store.rekey import ACTION, RotationRefused, rotate
from hub.store.schema import (
    audit_checkpoints,
    change_retractions,
    delivery_messages,
    operator_actions,
    person_merges,
    persons,
    quarantine,
    reconciliation_items,
    reconciliation_rows,
    store_key_rotations,
    store_keys,
    subscriptions,
    workflow_cases,
)
from tests.support import detention

pytestmark = pytest.mark.integration

# Synthetic people (999 range); the fourth's number is merged into the third's.
PEOPLE = [
    {"nhs_number": "9991100016", "given_name": "Alex", "family_name": "Rotapatient", "birth_date": "1971-03-14",
     "postcode": "HP20 1AA"},
    {"nhs_number": "9991100032", "given_name": "Bea", "family_name": "Keychange", "birth_date": "1980-07-01",
     "postcode": "HP20 2BB"},
    {"nhs_number": "9991100067", "given_name": "Cal", "family_name": "Rekeyson", "birth_date": "1990-01-31",
     "postcode": "HP20 3CC"},
    {"nhs_number": "9991100075", "given_name": "Cal", "family_name": "Rekeyson", "birth_date": "1990-01-31",
     "postcode": "HP20 3CC"},
]
RETAINED, SUPERSEDED = PEOPLE[2]["nhs_number"], PEOPLE[3]["nhs_number"]
SECRET = "rotation-webhook-secret-0123456789abcdef"
REASON = "sent for the wrong patient by Dr Keyholder"
CASE_REASON = "refused: Mr Rekeyson lives in our area"
QUARANTINED = {"source_system": "RiO", "source_message_id": "rk-bad-1", "change_type": "detained",
               "effective_date": "2025-01-06", "legal_status_code": "99",
               "person": {"nhs_number": "9991100083", "family_name": "Heldinput"}}


def settings(store_url: str, key: str) -> Settings:
    return Settings(database_url=store_url, canonical_base=DEFAULT_CANONICAL_BASE, data_key=key,
                    sharing_agreements_path=REPO_ROOT / "contracts" / "data-sharing-agreements.yaml",
                    run_workers=False, webhook_allowed_hosts=["127.0.0.1", "council.invalid"])


async def fill(http: httpx.AsyncClient, keys: dict[str, str],
               hook: str = "http://council.invalid/hook") -> dict[str, str]:
    """The store filled through the API: people, a merge, a retraction, a quarantined input, a council's
    webhook subscription (to `hook`) and reconciliation snapshot. Ids for the checks after."""
    trust = {"X-API-Key": keys["trust"]}
    council = {"X-API-Key": keys["E06000060"]}
    r = await http.post("/v1/subscriptions", headers=council, json={"url": hook, "secret": SECRET})
    assert r.status_code == 201, r.text
    ids = {"subscription": r.json()["subscription_id"]}
    for i, person in enumerate(PEOPLE):
        details = {k: v for k, v in person.items() if k != "nhs_number"}
        for change in detention(person["nhs_number"], f"rk-{i}", **details):
            r = await http.post("/v1/register-changes", headers=trust, json=change)
            assert r.status_code == 202, r.text
        ids[person["nhs_number"]] = r.json()["person_id"]
        ids[f"change-{i}"] = r.json()["change_id"]
    r = await http.post("/v1/register-changes/" + ids["change-1"] + "/retraction", headers=trust,
                        json={"reason": REASON})
    assert r.status_code == 200, r.text
    r = await http.post("/v1/persons/merge", headers=trust,
                        json={"retained_nhs_number": RETAINED, "superseded_nhs_number": SUPERSEDED})
    assert r.status_code == 200, r.text
    r = await http.post("/v1/register-changes", headers=trust, json=QUARANTINED)
    assert r.status_code == 422, r.text
    r = await http.get("/v1/quarantine", headers=trust)
    ids["quarantine"] = r.json()["items"][0]["quarantine_id"]
    # The council's own list: the first person as the hub has them, the second with another ICB.
    extract = ("NHS_NO,LOCAL_ID,S117_FLAG,RESP_LA_GSS,RESP_ICB_ODS,S117_START,S117_END,NEXT_REVIEW,FUNDING\n"
               f"{PEOPLE[0]['nhs_number']},SW-ALEX,Y,E06000060,QU9,07/04/2025,,,Y\n"
               f"{PEOPLE[2]['nhs_number']},SW-CAL,Y,E06000060,QU9,07/04/2025,,,Y\n"
               "TRAILER,2\n")
    r = await http.post("/v1/reconciliations", headers={**council, "Content-Type": "text/csv"},
                        params={"format": "swift_snapshot_csv"}, content=extract)
    assert r.status_code == 202, r.text
    ids["snapshot"] = r.json()["snapshot_id"]
    return ids


async def _count(engine, table, *where) -> int:  # noqa: ANN001
    async with engine.connect() as conn:
        query = select(func.count()).select_from(table)
        return (await conn.execute(query.where(*where) if where else query)).scalar_one()


async def _filled(store_url: str, old: str) -> dict[str, str]:
    app = create_app(settings(store_url, old))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        keys = {
            "trust": (await add_client(hub.engine, "Oxford Health", "RNU", "trust",
                                       ["register:write", "s117:read"]))[1],
            "E06000060": (await add_client(hub.engine, "Bucks", "E06000060", "council",
                                           ["subscriptions:write", "s117:read"]))[1],
        }
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            ids = await fill(http, keys)
        while await hub.dispatcher.run_once():  # the council's messages queued (encrypted), not yet sent
            pass
        await Reconciler(hub.engine, hub.ref, hub.agreements, hub.reconciliation).run_once()
        # A transfer case's reason (a body's free text), as the workflows keep it.
        async with hub.engine.begin() as conn:
            await conn.execute(workflow_cases.insert().values(
                case_id="case-rk-1", kind="transfer", person_id=ids[PEOPLE[0]["nhs_number"]], state="rejected",
                parties=["E06000060"], data={"reason": hub.protector.encrypt_text(CASE_REASON), "kept": 1},
                version=1, opened_on=date(2025, 5, 1), updated_at=datetime.now(UTC)))
        chain = AuditChain(hub.engine, audit_key(None, hub.protector.index))
        while await chain.extend():
            pass
        assert await chain.checkpoint(date.today() + timedelta(days=1)) >= 1  # today's entries signed
        ids["keys"] = keys  # type: ignore[assignment]
    return ids


async def test_a_rotation_failed_after_its_first_chunk_stops_every_process_and_finishes_when_run_again(
        store_url: str, tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    ids = await _filled(store_url, old)
    app = create_app(settings(store_url, old))
    engine = None
    async with app.router.lifespan_context(app):
        engine = app.state.hub.engine
        counts = {t.name: await _count(engine, t) for t in (persons, person_merges, change_retractions, quarantine,
                                                             subscriptions, delivery_messages, reconciliation_rows,
                                                             reconciliation_items, audit_checkpoints)}
    assert all(counts.values()), counts  # every kind of row the rotation rewrites is there to rewrite

    from hub.store.db import create_engine

    engine = create_engine(store_url)
    try:
        calls: list[str] = []

        def fail_after_the_first_chunk(phase: str) -> None:
            calls.append(phase)
            raise RuntimeError("killed")

        with pytest.raises(RuntimeError, match="killed"):
            await rotate(engine, old.encode(), new.encode(), audit_key_set=False, chunk=2,
                         after_chunk=fail_after_the_first_chunk)
        assert calls == ["reconciliation_rows"]
        assert await _count(engine, store_key_rotations) == 1
        # Every process is refused, whichever key it is given, with the line that says what to do.
        for key in (old, new):
            with pytest.raises(RotationInProgress) as refused:
                await store_protector(engine, key, tmp_path / "none.key")
            assert str(refused.value).startswith("a data key rotation is in progress: run s117hub "
                                                 "rotate-data-key again with the same new key")
        if store_url.startswith("sqlite"):
            served = subprocess.run(
                [sys.executable, "-m", "hub.cli", "serve"], cwd=REPO_ROOT, capture_output=True, text=True,
                timeout=60, env={"PATH": "/usr/bin:/bin", "S117_DATABASE_URL": store_url, "S117_DATA_KEY": new,
                                 "S117_SEPARATE_WORKERS": "false", "S117_SEPARATE_DELIVERY": "false",
                                 "S117_PORT": "1", "HOME": str(tmp_path)})
            assert served.returncode == 2, served.stderr
            assert served.stderr.strip().splitlines()[-1].startswith(
                "s117hub serve: a data key rotation is in progress: run s117hub rotate-data-key again with the "
                "same new key"), served.stderr
            assert "Traceback" not in served.stderr and new not in served.stderr

        # Another new key cannot take it over; the new key configured as the old one is refused too.
        with pytest.raises(RotationRefused, match="another new key"):
            await rotate(engine, old.encode(), Fernet.generate_key(), audit_key_set=False)
        with pytest.raises(RotationRefused, match="already the new key"):
            await rotate(engine, new.encode(), new.encode() + b"", audit_key_set=False)

        done = await rotate(engine, old.encode(), new.encode(), audit_key_set=False, chunk=2)
        assert done.resumed and not done.already
        assert await _count(engine, store_key_rotations) == 0
        assert done.counts["persons.details"] == counts["persons"]
        assert done.counts["persons.nhs_number_index"] == counts["persons"] - 1  # the merged person's tombstone
        assert done.counts["reconciliation_rows.person_key"] == counts["reconciliation_rows"]
        assert done.counts["delivery_messages.payload"] == counts["delivery_messages"]
        assert done.counts["audit_checkpoints"] == counts["audit_checkpoints"]
        again = await rotate(engine, old.encode(), new.encode(), audit_key_set=False)
        assert again.already  # run once more: nothing to do

        # The old key is refused as any other; the new one opens the store.
        with pytest.raises(DataKeyMismatch) as refused:
            await store_protector(engine, old, tmp_path / "none.key")
        assert not isinstance(refused.value, RotationInProgress)
        protector = await store_protector(engine, new, tmp_path / "none.key")
        await _reads_under(engine, protector, DataProtector(old.encode()), ids)
        audited = await _rows(engine, select(operator_actions.c.detail).where(operator_actions.c.action == ACTION))
        assert len(audited) == 1
        assert audited[0].detail["old_key_fingerprint"] == done.old_fingerprint
        assert audited[0].detail["new_key_fingerprint"] == done.new_fingerprint
        assert old not in str(audited[0].detail) and new not in str(audited[0].detail)
        chain = AuditChain(engine, audit_key(None, protector.index))
        while await chain.extend():
            pass
        verified = await chain.verify()
        assert verified["ok"], verified["problems"]
    finally:
        await engine.dispose()

    # A hub on the new key: everyone found by NHS number (the superseded number: the retained person),
    # the quarantined input readable by the hub operator.
    app = create_app(settings(store_url, new))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        keys = ids["keys"]
        _, operator = await add_client(hub.engine, "Hub ops", "X26", "hub-operator", ["register:write", "hub:admin"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            for person in PEOPLE:
                r = await http.post("/v1/persons/lookup", headers={"X-API-Key": keys["trust"]},
                                    json={"nhs_number": person["nhs_number"]})
                assert r.status_code == 200, r.text
                expected = ids[RETAINED] if person["nhs_number"] == SUPERSEDED else ids[person["nhs_number"]]
                assert r.json()["person_id"] == expected
            r = await http.get(f"/v1/quarantine/{ids['quarantine']}", headers={"X-API-Key": operator})
            assert r.status_code == 200, r.text
            assert "Heldinput" in r.json()["raw"]
            r = await http.get(f"/v1/reconciliations/{ids['snapshot']}", headers={"X-API-Key": keys["E06000060"]})
            assert r.status_code == 200, r.text
            assert {i["local_id"] for i in r.json()["items"]} >= {"SW-CAL"}  # keyed rows still join
        # A change to a person already on the register finds them (no one recorded twice).
        before = await _count(hub.engine, persons)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            change = detention(PEOPLE[0]["nhs_number"], "rk-after")[0]
            r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
            assert r.status_code == 202, r.text
            assert r.json()["person_id"] == ids[PEOPLE[0]["nhs_number"]]
        assert await _count(hub.engine, persons) == before


async def _refused(engine, old: str, new: str) -> str:  # noqa: ANN001
    """The one line a rotation the store cannot take is refused with."""
    with pytest.raises(RotationRefused) as refused:
        await rotate(engine, old.encode(), new.encode(), audit_key_set=False)
    return str(refused.value)


async def _rows(engine, query):  # noqa: ANN001, ANN202
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
        await conn.rollback()
    return rows


async def _reads_under(engine, new: DataProtector, old: DataProtector, ids: dict) -> None:  # noqa: ANN001
    """Every encrypted value opens under the new key and none under the old; every hash is the new key's."""
    def only_new(token: bytes) -> bytes:
        with pytest.raises(ValueError):
            old.decrypt(bytes(token))
        return new.decrypt(bytes(token))

    import orjson

    for r in await _rows(engine, select(persons.c.person_id, persons.c.nhs_number_index, persons.c.details)):
        details = orjson.loads(only_new(r.details))
        if not r.nhs_number_index.startswith("merged:"):
            assert r.nhs_number_index == new.index(details["nhs_number"])
    merge = (await _rows(engine, select(person_merges)))[0]
    assert only_new(merge.retained_number).decode() == RETAINED
    assert (merge.retained_index, merge.superseded_index) == (new.index(RETAINED), new.index(SUPERSEDED))
    assert only_new((await _rows(engine, select(change_retractions.c.reason)))[0].reason).decode() == REASON
    secret = (await _rows(engine, select(subscriptions.c.secret)
                          .where(subscriptions.c.subscription_id == ids["subscription"])))[0].secret
    assert only_new(secret).decode() == SECRET
    for r in await _rows(engine, select(delivery_messages.c.payload)):
        assert only_new(r.payload).startswith(b"{")
    assert b"Heldinput" in only_new((await _rows(engine, select(quarantine.c.raw)))[0].raw)
    listed = {new.index(p["nhs_number"]) for p in PEOPLE}
    for r in await _rows(engine, select(reconciliation_rows.c.person_key, reconciliation_rows.c.local_id)):
        assert r.person_key in listed
        assert only_new(r.local_id).decode().startswith("SW-")
    assert {r.person_key for r in await _rows(engine, select(reconciliation_items.c.person_key))} <= listed
    case = (await _rows(engine, select(workflow_cases.c.data)))[0].data
    assert new.decrypt_text(case["reason"]) == CASE_REASON and case["kept"] == 1
    with pytest.raises(ValueError):
        old.decrypt_text(case["reason"])
    token = (await _rows(engine, select(store_keys.c.check_token)))[0].check_token
    only_new(token)


async def test_a_hash_whose_number_the_store_does_not_hold_is_refused_before_anything_changes(
        store_url: str) -> None:
    """A merge whose superseded number was never on the register: since migration 0039 the merge keeps that
    number encrypted, so its keyed hash is recomputed under the new key, and the number sealed again. A
    merge recorded before 0039 (no copy: the number held nowhere) cannot be: refused, naming it; the store as
    it was."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app = create_app(settings(store_url, old))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        _, trust = await add_client(hub.engine, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            for change in detention(RETAINED, "rk-only"):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": trust}, json=change)
                assert r.status_code == 202, r.text
            r = await http.post("/v1/persons/merge", headers={"X-API-Key": trust},
                                json={"retained_nhs_number": RETAINED, "superseded_nhs_number": SUPERSEDED})
            assert r.status_code == 200, r.text
        engine = hub.engine
        # As a merge before migration 0039 was kept: no copy of the superseded number.
        async with engine.begin() as conn:
            kept = (await conn.execute(select(person_merges.c.superseded_number))).scalar_one()
            await conn.execute(person_merges.update().values(superseded_number=None))
        before = await _rows(engine, select(persons.c.nhs_number_index, persons.c.details))
        said = await _refused(engine, old, new)
        assert said.startswith("not rotated, nothing was changed: person_merges.superseded_index")
        assert ": 1 row" in said and SUPERSEDED not in said and RETAINED not in said
        assert await _count(engine, store_key_rotations) == 0
        assert await _rows(engine, select(persons.c.nhs_number_index, persons.c.details)) == before
        # Kept as merges are since 0039: rotated, the hash the new key's, the number sealed under it.
        async with engine.begin() as conn:
            await conn.execute(person_merges.update().values(superseded_number=kept))
        await rotate(engine, old.encode(), new.encode(), audit_key_set=False)
        row = (await _rows(engine, select(person_merges.c.superseded_index, person_merges.c.superseded_number)))[0]
        fresh = DataProtector(new.encode())
        assert fresh.decrypt(row.superseded_number).decode() == SUPERSEDED
        assert row.superseded_index == fresh.index(SUPERSEDED)
    app = create_app(settings(store_url, new))  # the new key's store: the hub starts on it
    async with app.router.lifespan_context(app):
        pass


async def test_the_look_for_a_running_hub_sees_other_sessions_and_not_its_own(postgres_database_url: str) -> None:
    """PostgreSQL: the command refuses while another session is connected (a running hub holds its pool's
    connections), not counting its own sessions, however many its pool opened. (SQLite: the store's -shm
    lock is the look, tests/e2e/test_rotate_data_key.py.)"""
    store_url = postgres_database_url
    from hub.rekey_cli import _named, _sessions_elsewhere
    from hub.store.db import create_engine

    mine, hub = create_engine(store_url), create_engine(store_url)
    _named(mine)
    try:
        async with mine.connect() as a, mine.connect() as b:  # two of its own sessions: not counted
            await a.execute(select(1))
            await b.execute(select(1))
            assert await _sessions_elsewhere(mine) == 0
            async with hub.connect() as other:  # a hub's pooled connection
                await other.execute(select(1))
                assert await _sessions_elsewhere(mine) == 1
    finally:
        await mine.dispose()
        await hub.dispose()


async def test_a_reversed_merge_is_rotated_too(store_url: str) -> None:
    """A merge reversed in error (hub/unmerges.py): its reason sealed again under the new key, its two hashes
    the new key's (recomputed from the two persons, who hold their numbers again); the reversal's answer
    given again after the rotation."""
    from hub.store.schema import person_merge_reversals

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app = create_app(settings(store_url, old))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        _, trust = await add_client(hub.engine, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            for number, run in ((RETAINED, "rv-a"), (SUPERSEDED, "rv-b")):
                for change in detention(number, run):
                    r = await http.post("/v1/register-changes", headers={"X-API-Key": trust}, json=change)
                    assert r.status_code == 202, r.text
            r = await http.post("/v1/persons/merge", headers={"X-API-Key": trust},
                                json={"retained_nhs_number": RETAINED, "superseded_nhs_number": SUPERSEDED})
            assert r.status_code == 200, r.text
            merge_id = r.json()["merge_id"]
            r = await http.post(f"/v1/persons/merges/{merge_id}/reversal", headers={"X-API-Key": trust},
                                json={"reason": "two patients after all"})
            assert r.status_code == 200, r.text
            first = r.json()
        await rotate(hub.engine, old.encode(), new.encode(), audit_key_set=False)
        row = (await _rows(hub.engine, select(person_merge_reversals)))[0]
    fresh = DataProtector(new.encode())
    assert fresh.decrypt(row.reason) == b"two patients after all"
    assert (row.superseded_index, row.retained_index) == (fresh.index(SUPERSEDED), fresh.index(RETAINED))
    app = create_app(settings(store_url, new))
    async with app.router.lifespan_context(app):
        _, trust = await add_client(app.state.hub.engine, "Oxford Health 2", "RNU", "trust",
                                    ["register:write", "s117:read"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            r = await http.post(f"/v1/persons/merges/{merge_id}/reversal", headers={"X-API-Key": trust},
                                json={"reason": "again"})
            assert r.status_code == 200, r.text
            assert r.json()["duplicate"] is True and r.json()["superseded_person_id"] == first["superseded_person_id"]


async def test_a_reversed_retraction_is_rotated_too(store_url: str) -> None:
    """A retraction made in error, reversed (hub/unretractions.py): both reasons it keeps (the retraction's
    and the reversal's) sealed again under the new key; the reversal's answer given again after the
    rotation."""
    from hub.store.schema import change_retraction_reversals

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app = create_app(settings(store_url, old))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        _, trust = await add_client(hub.engine, "Oxford Health", "RNU", "trust", ["register:write", "s117:read"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            for change in detention(RETAINED, "ur"):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": trust}, json=change)
                assert r.status_code == 202, r.text
            change_id = r.json()["change_id"]
            r = await http.post(f"/v1/register-changes/{change_id}/retraction", headers={"X-API-Key": trust},
                                json={"reason": "the A13 matched it"})
            assert r.status_code == 200, r.text
            r = await http.post(f"/v1/register-changes/{change_id}/retraction/reversal", headers={"X-API-Key": trust},
                                json={"reason": "the wrong discharge"})
            assert r.status_code == 200, r.text
            first = r.json()
        await rotate(hub.engine, old.encode(), new.encode(), audit_key_set=False)
        row = (await _rows(hub.engine, select(change_retraction_reversals)))[0]
    fresh = DataProtector(new.encode())
    assert fresh.decrypt(row.reason) == b"the wrong discharge"
    assert fresh.decrypt(row.retraction_reason) == b"the A13 matched it"
    app = create_app(settings(store_url, new))
    async with app.router.lifespan_context(app):
        _, trust = await add_client(app.state.hub.engine, "Oxford Health 2", "RNU", "trust",
                                    ["register:write", "s117:read"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            r = await http.post(f"/v1/register-changes/{change_id}/retraction/reversal", headers={"X-API-Key": trust},
                                json={"reason": "again"})
            assert r.status_code == 200, r.text
            assert r.json() == {**first, "duplicate": True}


STRANGER = "9991100105"  # on the council's list, never on the register
SWIFT_HEADER = "NHS_NO,LOCAL_ID,S117_FLAG,RESP_LA_GSS,RESP_ICB_ODS,S117_START,S117_END,NEXT_REVIEW,FUNDING\n"


async def _snapshot_of(app, council: str, *lines: str) -> str:  # noqa: ANN001
    """A council's snapshot (SWIFT CSV rows), sent through the API and compared: its id."""
    extract = SWIFT_HEADER + "".join(line + "\n" for line in lines) + f"TRAILER,{len(lines)}\n"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
        r = await http.post("/v1/reconciliations", headers={"X-API-Key": council, "Content-Type": "text/csv"},
                            params={"format": "swift_snapshot_csv"}, content=extract)
        assert r.status_code == 202, r.text
    hub = app.state.hub
    await Reconciler(hub.engine, hub.ref, hub.agreements, hub.reconciliation).run_once()
    return r.json()["snapshot_id"]


async def _report(app, council: str, snapshot_id: str) -> dict:  # noqa: ANN001
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
        r = await http.get(f"/v1/reconciliations/{snapshot_id}", headers={"X-API-Key": council})
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "done", r.json()
        return r.json()


async def _a_council_reconciled_someone_not_on_the_register(store_url: str, old: str) -> tuple[dict, str]:
    """A hub (old key) with one person on the register and a council whose list names them and a stranger
    (not on the register): the keys and the snapshot's id."""
    app = create_app(settings(store_url, old))
    async with app.router.lifespan_context(app):
        hub = app.state.hub
        keys = {"trust": (await add_client(hub.engine, "Oxford Health", "RNU", "trust",
                                           ["register:write", "s117:read"]))[1],
                "E06000060": (await add_client(hub.engine, "Bucks", "E06000060", "council",
                                               ["subscriptions:write", "s117:read"]))[1]}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            for change in detention(PEOPLE[0]["nhs_number"], "rk-known"):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
                assert r.status_code == 202, r.text
        sid = await _snapshot_of(app, keys["E06000060"],
                                 f"{PEOPLE[0]['nhs_number']},SW-ALEX,Y,E06000060,QU9,07/04/2025,,,Y",
                                 f"{STRANGER},SW-STRANGER,Y,E06000060,QU9,07/04/2025,,,Y")
        report = await _report(app, keys["E06000060"], sid)
        assert "SW-STRANGER" in {i["local_id"] for i in report["items"]}  # missing on the hub's register
    return keys, sid


async def test_a_store_that_reconciled_someone_not_on_the_register_is_rotated_from_the_number_kept_beside_the_hash(
        store_url: str) -> None:
    """Reconciliation keeps the NHS number encrypted beside its keyed hash (migration 0041), for rows and
    differences: the rotation recomputes the hash of someone not on the register from it (before, refused:
    the number was held nowhere) and seals the number under the new key; after it, the council's next list
    naming the same person matches the rotated difference (the same item, seen again). A number beside a
    hash that is not its hash is not trusted."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    keys, sid = await _a_council_reconciled_someone_not_on_the_register(store_url, old)
    was, fresh = DataProtector(old.encode()), DataProtector(new.encode())
    from hub.store.db import create_engine

    engine = create_engine(store_url)
    try:
        # Tampered: the stranger's row holds another number than its hash's; not trusted, so refused.
        async with engine.begin() as conn:
            await conn.execute(reconciliation_rows.update()
                               .where(reconciliation_rows.c.person_key == was.index(STRANGER))
                               .values(person_number=was.encrypt(PEOPLE[1]["nhs_number"].encode())))
        with pytest.raises(RotationRefused, match="reconciliation_rows.person_key"):
            await rotate(engine, old.encode(), new.encode(), audit_key_set=False)
        async with engine.begin() as conn:
            await conn.execute(reconciliation_rows.update()
                               .where(reconciliation_rows.c.person_key == was.index(STRANGER))
                               .values(person_number=was.encrypt(STRANGER.encode())))

        done = await rotate(engine, old.encode(), new.encode(), audit_key_set=False, chunk=1)
        assert done.counts["reconciliation_rows.person_key"] == 2 and done.forgotten is None
        rows = await _rows(engine, select(reconciliation_rows.c.person_key, reconciliation_rows.c.person_number))
        items = await _rows(engine, select(reconciliation_items.c.item_id, reconciliation_items.c.person_key,
                                           reconciliation_items.c.person_number))
    finally:
        await engine.dispose()
    for r in [*rows, *items]:
        with pytest.raises(ValueError):
            was.decrypt(bytes(r.person_number))
        assert r.person_key == fresh.index(fresh.decrypt(bytes(r.person_number)).decode())
    assert fresh.index(STRANGER) in {r.person_key for r in rows}
    (stranger_item,) = [i for i in items if i.person_key == fresh.index(STRANGER)]

    app = create_app(settings(store_url, new))
    async with app.router.lifespan_context(app):
        report = await _report(app, keys["E06000060"], sid)
        assert "SW-STRANGER" in {i["local_id"] for i in report["items"]}
        later = await _snapshot_of(app, keys["E06000060"], f"{STRANGER},SW-STRANGER,Y,E06000060,QU9,07/04/2025,,,Y")
        again = [i for i in (await _report(app, keys["E06000060"], later))["items"] if i["local_id"] == "SW-STRANGER"]
        assert [i["item_id"] for i in again] == [stranger_item.item_id]  # the rotated difference, seen again
        assert again[0]["first_seen"] == sid and again[0]["state"] == "open"


async def test_a_reconciliation_hash_kept_without_its_number_is_refused_naming_the_option_or_forgotten_with_it(
        store_url: str, tmp_path: Path) -> None:
    """A row and difference kept before migration 0041 for someone not on the register (the hash only):
    refused, nothing changed, the one line naming `--forget-unmatched-reconciliation` and how many; with
    it (recorded: a rotation stopped part way and run again without it does the same), each such hash is
    replaced by a tombstone that matches no one, the row and difference kept (their local id still shown,
    their decision still taken), counted in the audited operator action; the council's next list naming
    the person opens a new difference."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    keys, sid = await _a_council_reconciled_someone_not_on_the_register(store_url, old)
    was, fresh = DataProtector(old.encode()), DataProtector(new.encode())
    gone = was.index(STRANGER)
    from hub.store.db import create_engine

    engine = create_engine(store_url)
    try:
        async with engine.begin() as conn:  # as reconciliation kept them before 0041
            await conn.execute(reconciliation_rows.update().values(person_number=None))
            await conn.execute(reconciliation_items.update().values(person_number=None))
        before = await _rows(engine, select(reconciliation_rows.c.person_key, reconciliation_rows.c.local_id))
        said = await _refused(engine, old, new)
        assert said.startswith("not rotated, nothing was changed: reconciliation_items.person_key: ")
        assert "reconciliation_rows.person_key: " in said and said.count(": 1 row") == 2
        assert "give --forget-unmatched-reconciliation to rotate all the same, the 2 reconciliation hashes" in said
        assert STRANGER not in said and gone not in said and "\n" not in said
        assert await _rows(engine, select(reconciliation_rows.c.person_key, reconciliation_rows.c.local_id)) == before
        assert await _count(engine, store_key_rotations) == 0

        def stop(_phase: str) -> None:
            raise RuntimeError("killed")

        with pytest.raises(RuntimeError, match="killed"):
            await rotate(engine, old.encode(), new.encode(), audit_key_set=False, chunk=1, after_chunk=stop,
                         forget_unmatched=True)
        done = await rotate(engine, old.encode(), new.encode(), audit_key_set=False, chunk=1)  # without it
        assert done.resumed
        assert (done.forgotten["reconciliation_rows"], done.forgotten["reconciliation_items"]) == (1, 1)
        rows = await _rows(engine, select(reconciliation_rows.c.person_key, reconciliation_rows.c.person_number,
                                          reconciliation_rows.c.local_id))
        items = await _rows(engine, select(reconciliation_items.c.item_id, reconciliation_items.c.person_key,
                                           reconciliation_items.c.person_number))
        audited = await _rows(engine, select(operator_actions.c.detail).where(operator_actions.c.action == ACTION))
    finally:
        await engine.dispose()
    known = fresh.index(PEOPLE[0]["nhs_number"])
    (tomb,) = {r.person_key for r in rows} - {known}
    assert tomb.startswith("unkeyed:") and len(tomb) <= 64 and gone not in tomb
    assert tomb not in {was.index(STRANGER), fresh.index(STRANGER)}
    (forgotten_row,) = [r for r in rows if r.person_key == tomb]
    assert forgotten_row.person_number is None and fresh.decrypt(forgotten_row.local_id) == b"SW-STRANGER"
    (known_row,) = [r for r in rows if r.person_key == known]  # on the register: resolved, its number written
    assert fresh.decrypt(bytes(known_row.person_number)).decode() == PEOPLE[0]["nhs_number"]
    (tomb_item,) = [i for i in items if i.person_key == tomb]  # the row's difference: the same tombstone
    assert tomb_item.person_number is None
    assert {i.person_key for i in items} <= {tomb, known}
    (detail,) = [a.detail for a in audited]
    assert detail["forgotten_unmatched_reconciliation"]["reconciliation_rows"] == 1
    assert detail["forgotten_unmatched_reconciliation"]["reconciliation_items"] == 1

    app = create_app(settings(store_url, new))  # the hub starts on the rotated store
    async with app.router.lifespan_context(app):
        report = await _report(app, keys["E06000060"], sid)
        (shown,) = [i for i in report["items"] if i["item_id"] == tomb_item.item_id]
        assert shown["local_id"] == "SW-STRANGER" and shown["kind"] == "missing-on-hub-register"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as http:
            r = await http.post(f"/v1/reconciliations/items/{tomb_item.item_id}",
                                headers={"X-API-Key": keys["E06000060"]},
                                json={"state": "explained", "reason": "moved out of area"})
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "explained"
        later = await _snapshot_of(app, keys["E06000060"], f"{STRANGER},SW-STRANGER,Y,E06000060,QU9,07/04/2025,,,Y")
        now = [i for i in (await _report(app, keys["E06000060"], later))["items"] if i["local_id"] == "SW-STRANGER"]
        assert len(now) == 1 and now[0]["item_id"] != tomb_item.item_id  # the tombstone matched no one
        assert now[0]["first_seen"] == later
        async with app.state.hub.engine.connect() as conn:
            state = (await conn.execute(select(reconciliation_items.c.state)
                                        .where(reconciliation_items.c.item_id == tomb_item.item_id))).scalar_one()
        assert state == "fixed"  # not on the council's list under that value any more


async def test_a_difference_kept_without_its_number_gains_it_when_the_council_lists_the_person_again(
        store_url: str) -> None:
    """A difference kept before migration 0041 (the hash only), found again in the council's next list,
    takes the number from that list's row: only the old list's row is left for a rotation to refuse."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    keys, sid = await _a_council_reconciled_someone_not_on_the_register(store_url, old)
    was = DataProtector(old.encode())
    app = create_app(settings(store_url, old))
    async with app.router.lifespan_context(app):
        engine = app.state.hub.engine
        async with engine.begin() as conn:  # as reconciliation kept them before 0041
            await conn.execute(reconciliation_rows.update().values(person_number=None))
            await conn.execute(reconciliation_items.update().values(person_number=None))
        await _snapshot_of(app, keys["E06000060"], f"{STRANGER},SW-STRANGER,Y,E06000060,QU9,07/04/2025,,,Y")
        (item,) = await _rows(engine, select(reconciliation_items.c.first_seen, reconciliation_items.c.person_number)
                              .where(reconciliation_items.c.person_key == was.index(STRANGER)))
        assert item.first_seen == sid and was.decrypt(bytes(item.person_number)).decode() == STRANGER
        said = await _refused(engine, old, new)
    assert "reconciliation_items" not in said and "reconciliation_rows.person_key: " in said
    assert "the 1 reconciliation hash replaced" in said
