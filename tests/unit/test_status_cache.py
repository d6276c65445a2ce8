"""The ingest status cache (hub/ingest/status_cache.py): a hit is exactly
what `evaluate` gives for that history, that day, those reference data and
agreements; anything else is a miss."""

from __future__ import annotations

import random
from datetime import date, timedelta

from hub.domain.agreements import AgreementBook
from hub.domain.rules import evaluate
from hub.ingest.status_cache import StatusCache
from hub.sample_data import detention_to_move_scenario
from hub.settings import REPO_ROOT


def _checked_hits(monkeypatch) -> list[str]:  # noqa: ANN001
    """Every cache hit from now on is compared with a fresh `evaluate`; returns the people hit."""
    checked: list[str] = []
    real_get = StatusCache.get

    def checking_get(self, person_id, history, today, ref, agreements):  # noqa: ANN001, ANN202
        got = real_get(self, person_id, history, today, ref, agreements)
        if got is not None:
            assert got == evaluate(person_id, list(history), ref, agreements, today)
            checked.append(person_id)
        return got

    monkeypatch.setattr(StatusCache, "get", checking_get)
    return checked


async def test_every_hit_through_real_ingest_equals_a_fresh_evaluation(app_hub, monkeypatch) -> None:  # noqa: ANN001
    cache = app_hub.hub.ingest.statuses
    checked = _checked_hits(monkeypatch)
    people = [detention_to_move_scenario(random.Random(n), f"cache-{n}", date(2025, 1, 6)) for n in range(4)]
    for step in range(max(map(len, people))):  # people interleaved, each one's changes in order
        for changes in people:
            if step < len(changes):
                r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                            json=changes[step])
                assert r.status_code == 202, r.text
    assert len(checked) >= 8 and cache.hits == len(checked)


def test_another_day_history_or_agreements_is_a_miss() -> None:
    from hub.domain.model import RegisterChange  # noqa: F401 - the cache keys on change ids only

    class C:
        def __init__(self, change_id: str) -> None:
            self.change_id = change_id

    cache, ref, agreements, status = StatusCache(max_people=2), object(), AgreementBook.default(), object()
    day = date(2026, 12, 1)
    history = [C("a"), C("b")]
    cache.put("p1", history, day, ref, agreements, status)  # type: ignore[arg-type]
    assert cache.get("p1", [C("b"), C("a")], day, ref, agreements) is status  # same set, any order
    assert cache.get("p1", [C("a")], day, ref, agreements) is None
    assert cache.get("p1", [C("a"), C("c")], day, ref, agreements) is None
    assert cache.get("p1", history, day + timedelta(days=1), ref, agreements) is None
    assert cache.get("p1", history, day, ref, AgreementBook.default()) is None  # other agreements
    assert cache.get("p1", history, day, object(), agreements) is None
    cache.put("p2", history, day, ref, agreements, status)  # type: ignore[arg-type]
    cache.put("p3", history, day, ref, agreements, status)  # type: ignore[arg-type]
    assert cache.get("p1", history, day, ref, agreements) is None  # bounded: the oldest went first


async def test_the_dispatcher_takes_ingests_statuses_only_when_exact(app_hub, monkeypatch) -> None:  # noqa: ANN001
    """The dispatcher (same process) re-evaluates each person's history (up to
    the message's change); a status ingest evaluated from exactly that history is taken instead, and
    every one taken equals a fresh evaluation. A change that reaches the
    register after ingest's entry (here: one written behind its back) is a
    miss, and the dispatcher evaluates."""
    from hub.delivery import dispatcher as dispatcher_mod

    hub = app_hub.hub
    assert hub.dispatcher._statuses is hub.ingest.statuses
    taken = _checked_hits(monkeypatch)
    evaluated: list[str] = []
    real_evaluate = dispatcher_mod.evaluate

    def counting_evaluate(person_id, *args):  # noqa: ANN001, ANN202
        evaluated.append(person_id)
        return real_evaluate(person_id, *args)

    monkeypatch.setattr(dispatcher_mod, "evaluate", counting_evaluate)
    people = [detention_to_move_scenario(random.Random(n), f"disp-{n}", date(2025, 1, 6)) for n in range(3)]
    for changes in people:
        for change in changes:
            r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                        json=change)
            assert r.status_code == 202, r.text
            taken.clear()
            while await hub.dispatcher.run_once():
                pass
            # Each change's events were dispatched before the next change (a dispatcher keeping
            # up): the history up to the change is the one ingest evaluated, none evaluated again.
            assert evaluated == [] and taken
    # Forget what ingest held: the dispatcher evaluates for itself.
    hub.ingest.statuses._held.clear()
    extra = detention_to_move_scenario(random.Random(99), "disp-extra", date(2025, 1, 6))
    for change in extra:
        r = await app_hub.http.post("/v1/register-changes", headers={"X-API-Key": app_hub.keys["trust"]},
                                    json=change)
        assert r.status_code == 202, r.text
    hub.ingest.statuses._held.clear()
    while await hub.dispatcher.run_once():
        pass
    assert evaluated and set(evaluated) == {evaluated[0]}


def test_the_oldest_put_goes_first_however_many_came_and_went() -> None:
    """Oldest out first over many puts (the cache's order kept as a dict's insertion order would be)."""
    class C:
        def __init__(self, change_id: str) -> None:
            self.change_id = change_id

    cache, ref, agreements, day = StatusCache(max_people=3), object(), AgreementBook.default(), date(2026, 12, 1)
    for n in range(50):
        cache.put(f"p{n}", [C(str(n))], day, ref, agreements, n)  # type: ignore[arg-type]
        if n % 7 == 0 and n:  # put again: now the newest
            cache.put(f"p{n - 1}", [C(str(n - 1))], day, ref, agreements, n - 1)  # type: ignore[arg-type]
    held = [p for p in (f"p{n}" for n in range(50)) if cache.get(p, [C(p[1:])], day, ref, agreements) is not None]
    assert held == ["p47", "p48", "p49"]
    cache.put("p48", [C("48")], day, ref, agreements, 48)  # type: ignore[arg-type]
    cache.put("p50", [C("50")], day, ref, agreements, 50)  # type: ignore[arg-type]
    assert cache.get("p47", [C("47")], day, ref, agreements) is None  # p48 was put again: p47 the oldest
    assert cache.get("p48", [C("48")], day, ref, agreements) == 48


def test_a_status_kept_from_agreements_since_reloaded_is_a_miss() -> None:
    """The area agreements file reloaded (hub/agreements_watch.py) takes the new agreements into the
    same `AgreementBook` (`replace_with`): a status evaluated under the old ones is not a hit."""

    class C:
        def __init__(self, change_id: str) -> None:
            self.change_id = change_id

    cache, ref, status, book = StatusCache(), object(), object(), AgreementBook.default()
    day, history = date(2026, 12, 1), [C("a")]
    cache.put("p1", history, day, ref, book, status)  # type: ignore[arg-type]
    assert cache.get("p1", history, day, ref, book) is status
    book.replace_with(AgreementBook.default())
    assert cache.get("p1", history, day, ref, book) is None
    cache.put("p1", history, day, ref, book, status, generation=0)  # evaluated before the reload, put after
    assert cache.get("p1", history, day, ref, book) is None


async def test_a_reload_between_a_persons_changes_is_evaluated_under_the_new_agreements(app_hub,  # noqa: ANN001
                                                                                      monkeypatch) -> None:
    """Through real ingest: the person's next change after a reload that shortens their area's
    first review is not evaluated from the status kept under the old agreements."""
    from hub.agreements_loader import agreements_from_mapping
    import yaml as _yaml

    hub = app_hub.hub
    checked = _checked_hits(monkeypatch)  # a hit unequal to a fresh evaluation fails the request's test
    changes = detention_to_move_scenario(random.Random(7), "cache-reload", date(2025, 1, 6))
    trust = {"X-API-Key": app_hub.keys["trust"]}
    for change in changes[:3]:  # detained, section changed, left hospital: entitled, first review due
        r = await app_hub.http.post("/v1/register-changes", headers=trust, json=change)
        assert r.status_code == 202, r.text
    assert len(checked) == 2  # each change after the first found the person's status kept
    doc = _yaml.safe_load((REPO_ROOT / "contracts" / "area-agreements.yaml").read_text())
    for area in doc["areas"].values():
        area["first_review_months"] = 1
    doc["default"]["area"]["first_review_months"] = 1
    before = hub.agreements
    hub.agreements.replace_with(agreements_from_mapping(doc))
    assert hub.agreements is before and hub.agreements.generation == 1  # the same object, taken in place
    r = await app_hub.http.post("/v1/register-changes", headers=trust, json=changes[3])  # moved
    assert r.status_code == 202, r.text
    assert len(checked) == 2  # not a hit: kept under the old agreements
