"""The data-sharing agreements file reloaded while the hub runs (hub/agreements_watch.py).

IG review: an organisation removed from the agreements file while the hub ran was still
handed its feed and answered its person query, until every process restarted: the file was
read at start only. Now each process looks at it every S117_AGREEMENTS_RELOAD_SECONDS and
swaps a changed file's grants into its one agreements object in place; a file that does not
load keeps the last good agreements, and says so. Real files, the real app on SQLite; the
processes and real HTTP in tests/e2e/test_agreements_reload.py."""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import yaml
from prometheus_client import REGISTRY
from sqlalchemy import select

from hub.agreements_watch import ACTION, ACTOR, AgreementsWatcher, file_state
from hub.fhir.messages import FIELD_GROUPS, read_position
from hub.scheduler import ReviewScanner
from hub.settings import REPO_ROOT
from hub.sharing import FUNDING, SharingAgreements
from hub.store.schema import operator_actions
from hub.domain.dates import england_day
from tests.support import left_hospital_80_days_ago

COUNCIL = "E06000060"  # Buckinghamshire in the sample agreements: every event, every field group
STARTED = "s117-entitlement-started"
DOC = yaml.safe_load((REPO_ROOT / "contracts" / "data-sharing-agreements.yaml").read_text())
GROUPS = FIELD_GROUPS | {FUNDING}


def _doc(edit=None) -> dict:  # noqa: ANN001
    """The sample agreements, the council's recipient entry changed by `edit` (returning None: removed)."""
    doc = copy.deepcopy(DOC)
    if edit is not None:
        for ag in doc["agreements"]:
            recs = [edit(r) if r["org_code"] == COUNCIL else r for r in ag.get("recipients") or []]
            ag["recipients"] = [r for r in recs if r is not None]
    return doc


def _narrowed(rec: dict) -> dict:
    return {**rec, "field_groups": [g for g in rec["field_groups"] if g != "demographics"]}


_TICK = [0]


def _write(path: Path, doc: dict | str) -> None:
    """The file written, dated a few seconds ago (past the watch's settling wait) and never twice the same."""
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    _TICK[0] += 1
    past = time.time() - 30 + _TICK[0] * 0.01
    os.utime(path, (past, past))


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def _reloads(outcome: str) -> float:
    return REGISTRY.get_sample_value("s117_agreements_reloads_total", {"outcome": outcome}) or 0.0


def test_replace_grants_swaps_in_place_and_forgets_every_answer_kept() -> None:
    sharing = SharingAgreements.from_document(_doc(), GROUPS)
    on = england_day()
    decide, groups_for = sharing.decide, sharing.field_groups_for  # aliases a holder might keep
    assert sharing.decide(COUNCIL, STARTED, on).allowed  # kept by the cache
    assert "demographics" in sharing.field_groups_for(COUNCIL, on)
    generation = sharing.generation

    sharing.replace_grants(SharingAgreements.from_document(_doc(_narrowed), GROUPS))
    assert sharing.generation == generation + 1
    assert "demographics" not in sharing.field_groups_for(COUNCIL, on)
    assert "demographics" not in groups_for(COUNCIL, on)
    assert "demographics" not in sharing.decide(COUNCIL, STARTED, on).field_groups
    assert not sharing.grants_group(COUNCIL, "demographics", on)

    sharing.replace_grants(SharingAgreements.from_document(_doc(lambda rec: None), GROUPS))
    for ask in (sharing.decide, decide):
        refused = ask(COUNCIL, STARTED, on)
        assert not refused.allowed and refused.agreement_id is None
    assert groups_for(COUNCIL, on) == frozenset()
    assert not sharing.names_in_force(COUNCIL, on)
    assert sharing.grants_for(COUNCIL) == []
    # Everyone else's grants came with the new file, unchanged.
    assert sharing.decide("QU9", STARTED, on).allowed


async def test_the_watch_loads_a_changed_file_keeps_the_last_good_on_a_bad_one_and_recovers(tmp_path) -> None:
    path = tmp_path / "sharing.yaml"
    _write(path, _doc())
    state = file_state(path)
    sharing = SharingAgreements.load(path, GROUPS)
    watch = AgreementsWatcher(sharing, path, GROUPS, loaded_state=state)
    assert _gauge("s117_agreements_reload_failed") == 0
    assert await watch.check() is None  # nothing changed
    on = england_day()

    loaded_before = _reloads("loaded")
    _write(path, _doc(lambda rec: None))  # Buckinghamshire withdrawn
    assert await watch.check() == "loaded"
    assert not sharing.names_in_force(COUNCIL, on)
    assert _reloads("loaded") == loaded_before + 1
    assert await watch.check() is None  # loaded once

    failed_before = _reloads("failed")
    _write(path, _doc(lambda rec: {**rec, "field_groups": ["identity", "no-such-group"]}))  # an unknown group
    assert await watch.check() == "failed"
    assert _gauge("s117_agreements_reload_failed") == 1
    assert not sharing.names_in_force(COUNCIL, on) and sharing.names_in_force("QU9", on)  # the last good kept
    assert await watch.check() is None and _reloads("failed") == failed_before + 1  # said once, not every look

    _write(path, "agreements: [\n  - id: broken\n")  # malformed YAML
    assert await watch.check() == "failed"
    assert sharing.names_in_force("QU9", on) and _gauge("s117_agreements_reload_failed") == 1

    path.unlink()  # gone
    assert await watch.check() == "failed"
    assert sharing.names_in_force("QU9", on)
    assert await watch.check() is None

    stamp = _gauge("s117_agreements_loaded_timestamp_seconds")
    _write(path, _doc(_narrowed))  # fixed: the council back, without demographics
    assert await watch.check() == "loaded"
    assert _gauge("s117_agreements_reload_failed") == 0
    assert _gauge("s117_agreements_loaded_timestamp_seconds") >= stamp
    assert sharing.names_in_force(COUNCIL, on)
    assert sharing.field_groups_for(COUNCIL, on) == frozenset(
        g for g in DOC["agreements"][0]["recipients"][0]["field_groups"] if g != "demographics")


async def test_a_file_being_written_is_waited_for(tmp_path) -> None:
    """A change made moments ago is read once it has settled, not half-written."""
    path = tmp_path / "sharing.yaml"
    _write(path, _doc())
    sharing = SharingAgreements.load(path, GROUPS)
    watch = AgreementsWatcher(sharing, path, GROUPS, loaded_state=file_state(path))
    path.write_text(yaml.safe_dump(_doc(lambda rec: None)))  # dated now
    began = time.monotonic()
    assert await watch.check() == "loaded"
    assert time.monotonic() - began >= 0.3
    assert not sharing.names_in_force(COUNCIL, england_day())


async def test_a_reload_that_changes_grants_is_audited_once(app_hub, tmp_path) -> None:
    """One `agreements-reloaded` operator action per change of the file, naming its sha256 and the
    agreements added, removed and changed; not again by a second process loading the same file,
    nor for an edit that changes no grant."""
    import hashlib

    engine = app_hub.hub.engine
    path = tmp_path / "sharing.yaml"
    _write(path, _doc())
    processes = []
    for audits in (True, True, False):  # the back workers' process, another instance's, the front
        sharing = SharingAgreements.load(path, GROUPS)
        processes.append(AgreementsWatcher(sharing, path, GROUPS, loaded_state=file_state(path),
                                           engine=engine if audits else None))

    async def records() -> list:
        async with engine.connect() as conn:
            return (await conn.execute(select(operator_actions).where(operator_actions.c.action == ACTION)
                                       .order_by(operator_actions.c.action_id))).all()

    doc = _doc(_narrowed)
    doc["agreements"].append({"id": "DSA-NEW", "valid_from": "2024-01-01", "recipients": [
        {"org_code": "E08000025", "events": ["*"], "field_groups": ["identity", "responsibility"]}]})
    doc["agreements"] = [a for a in doc["agreements"] if a["id"] != "DSA-HW-S117-HOST-2024"]
    _write(path, doc)
    for watch in processes:
        assert await watch.check() == "loaded"
    [row] = await records()
    assert (row.client_id, row.target) == (ACTOR, "sharing.yaml")
    assert row.detail["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (row.detail["added"], row.detail["removed"], row.detail["changed"]) == (
        ["DSA-NEW"], ["DSA-HW-S117-HOST-2024"], ["DSA-BOB-S117-2024"])
    chain = app_hub.hub.audit
    assert await chain.extend() >= 1  # chained as every operator action is
    assert (await chain.verify())["ok"]

    reworded = copy.deepcopy(doc)
    reworded["agreements"][0]["title"] = "reworded"  # no grant changed
    _write(path, reworded)
    for watch in processes:
        assert await watch.check() == "loaded"
    assert len(await records()) == 1


async def test_a_narrowed_field_group_reaches_the_views_the_dispatcher_kept(app_hub) -> None:
    """The dispatcher keeps each person's views of a status from batch to batch (what each body is
    told of the position: with `explanations`, why each review is due and its citation); a reload
    that narrows a group must drop them. Before: a review reminder for a person whose views were
    kept told the council why the review is due after `explanations` was withdrawn from its agreement."""
    hub, http, keys = app_hub.hub, app_hub.http, app_hub.keys
    headers = {"X-API-Key": keys[COUNCIL]}
    r = await http.post("/v1/subscriptions", headers=headers, json={"channel": "feed"})
    assert r.status_code == 201, r.text
    feed = r.json()["subscription_id"]
    await left_hospital_80_days_ago(http, keys["trust"], 21, "narrow")
    while await hub.dispatcher.run_once():
        pass
    page = (await http.get(f"/v1/feeds/{feed}", headers=headers)).json()
    told = [read_position(i["message"]).view for i in page["items"]]
    assert any(r.get("trigger") for v in told for r in v.get("reviews", [])), told  # explanations granted

    without = _doc(lambda rec: {**rec, "field_groups": [g for g in rec["field_groups"] if g != "explanations"]})
    hub.sharing.replace_grants(SharingAgreements.from_document(without, GROUPS))  # as a reload does
    assert await ReviewScanner(hub.engine, hub.ref, hub.agreements, notice_days=14).run_once() == 1
    while await hub.dispatcher.run_once():
        pass
    later = (await http.get(f"/v1/feeds/{feed}", headers=headers,
                            params={"after": page["items"][-1]["cursor"]})).json()
    reminders = [i for i in later["items"] if i["event_type"] == "s117-review-due"]
    assert len(reminders) == 1, later
    view = read_position(reminders[0]["message"]).view
    assert view["reviews"] and all(set(r) == {"kind", "due_on"} for r in view["reviews"]), view


AREA = yaml.safe_load((REPO_ROOT / "contracts" / "area-agreements.yaml").read_text())


def _area(share: object = 53.93) -> dict:
    doc = copy.deepcopy(AREA)
    for pair in doc["funding"]:
        if (pair["council"], pair["commissioner"]) == (COUNCIL, "QU9"):
            pair["council_share_percent"] = share
    return doc


async def test_the_same_watch_takes_the_area_agreements_in_place_refuses_a_bad_file_and_audits_each_file(
        app_hub, tmp_path) -> None:
    """The area agreements file under the sharing file's watch (one watcher): a good edit taken into the
    process's one AgreementBook, a malformed one refused naming where (never what), each file audited
    on its own (the same sha256 dedup per file)."""
    from structlog.testing import capture_logs

    from hub.agreements_loader import load_agreements

    engine = app_hub.hub.engine
    path, area_path = tmp_path / "sharing.yaml", tmp_path / "area.yaml"
    _write(path, _doc())
    _write(area_path, _area())
    book = load_agreements(area_path)
    watch = AgreementsWatcher(SharingAgreements.load(path, GROUPS), path, GROUPS, loaded_state=file_state(path),
                              engine=engine, area=book, area_path=area_path, area_state=file_state(area_path))
    assert await watch.check() is None
    assert book.funding_for(COUNCIL, "QU9").council_share_bp == 5393

    _write(area_path, _area(70))
    assert await watch.check() == "loaded"
    assert book.funding_for(COUNCIL, "QU9").council_share_bp == 7000 and book.generation == 1

    _write(area_path, "funding:\n  - council: E06000060\n    secret-looking: [unclosed\n")
    with capture_logs() as logs:
        assert await watch.check() == "failed"
    (line,) = [entry for entry in logs if entry["log_level"] == "error"]
    assert line["event"] == "area agreements file not loaded: the last good agreements stay in force"
    assert line["problem"].startswith("area.yaml: cannot be read as YAML (") and "line " in line["problem"]
    assert "secret" not in str(line) and "E06000060" not in str(line)
    assert _gauge("s117_agreements_reload_failed") == 1 and watch.failed
    assert book.funding_for(COUNCIL, "QU9").council_share_bp == 7000  # the last good kept

    _write(path, _doc(_narrowed))  # the sharing file meanwhile: loaded; the area file still refused
    assert await watch.check() == "loaded"
    assert _gauge("s117_agreements_reload_failed") == 1

    _write(area_path, _area(60))
    assert await watch.check() == "loaded"
    assert _gauge("s117_agreements_reload_failed") == 0 and not watch.failed
    assert book.funding_for(COUNCIL, "QU9").council_share_bp == 6000

    async with engine.connect() as conn:
        rows = (await conn.execute(select(operator_actions).where(operator_actions.c.action == ACTION)
                                   .order_by(operator_actions.c.action_id))).all()
    assert [(r.target, r.detail["changed"]) for r in rows] == [
        ("area.yaml", [f"funding.{COUNCIL}/QU9"]), ("sharing.yaml", rows[1].detail["changed"]),
        ("area.yaml", [f"funding.{COUNCIL}/QU9"])]
    assert rows[1].detail["changed"] and all(r.client_id == ACTOR for r in rows)
