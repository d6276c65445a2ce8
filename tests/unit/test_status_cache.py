"""The ingest status cache (hub/ingest/status_cache.py): a hit is exactly
what `evaluate` gives for that history, that day, those reference data and
agreements; anything else is a miss."""

from __future__ import annotations

import random
from datetime import date, timedelta

from hub.domain.rules import evaluate
from hub.ingest.status_cache import StatusCache
from hub.sample_data import detention_to_move_scenario


async def test_every_hit_through_real_ingest_equals_a_fresh_evaluation(app_hub, monkeypatch) -> None:  # noqa: ANN001
    service = app_hub.hub.ingest
    cache = service.statuses
    checked: list[str] = []
    real_get = StatusCache.get

    def checking_get(self, person_id, history, today, ref, agreements):  # noqa: ANN001, ANN202
        got = real_get(self, person_id, history, today, ref, agreements)
        if got is not None:
            assert got == evaluate(person_id, list(history), ref, agreements, today)
            checked.append(person_id)
        return got

    monkeypatch.setattr(StatusCache, "get", checking_get)
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

    cache, ref, agreements, status = StatusCache(max_people=2), object(), object(), object()
    day = date(2026, 12, 1)
    history = [C("a"), C("b")]
    cache.put("p1", history, day, ref, agreements, status)  # type: ignore[arg-type]
    assert cache.get("p1", [C("b"), C("a")], day, ref, agreements) is status  # same set, any order
    assert cache.get("p1", [C("a")], day, ref, agreements) is None
    assert cache.get("p1", [C("a"), C("c")], day, ref, agreements) is None
    assert cache.get("p1", history, day + timedelta(days=1), ref, agreements) is None
    assert cache.get("p1", history, day, ref, object()) is None
    assert cache.get("p1", history, day, object(), agreements) is None
    cache.put("p2", history, day, ref, agreements, status)  # type: ignore[arg-type]
    cache.put("p3", history, day, ref, agreements, status)  # type: ignore[arg-type]
    assert cache.get("p1", history, day, ref, agreements) is None  # bounded: the oldest went first
