"""hub/bus/payload.py: the outbox payloads and the canonical change written
as JSON made once (`orjson.Fragment`, orjson's own encoding of the domain's
dataclasses) are, byte for byte, what the store's serializer made of
to_jsonable's dicts, over generated histories with every event the rules
derive from them; a value orjson cannot write itself goes through
to_jsonable, as before."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from hub.bus.payload import (event_payload, event_payload_fragment, json_fragment, status_fragment,
                             status_on_the_bus)
from hub.codec import to_jsonable
from hub.domain.model import DomainEvent, EventType
from hub.domain.rules import derive_events, evaluate
from hub.store.db import _json_dumps
from tests.unit.domain.builders import BOOK, PERSON, REF
from tests.unit.domain.test_properties import histories


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_fragments_are_the_bytes_of_the_dicts(changes) -> None:  # noqa: ANN001
    before = None
    events_seen = 0
    for k in range(1, len(changes) + 1):
        change = changes[k - 1]
        after = evaluate(PERSON, changes[:k], REF, BOOK, change.effective_date)
        change_json, status_json = to_jsonable(change), status_on_the_bus(after)
        change_frag, status_frag = json_fragment(change), status_fragment(after)
        # what the store writes: its JSON serializer over the column's value
        assert _json_dumps(change_frag) == _json_dumps(change_json)
        assert _json_dumps(status_frag) == _json_dumps(status_json)
        assert b'"history"' not in orjson.dumps(status_frag)
        for event in derive_events(before, after, change):
            assert _json_dumps(event_payload_fragment(event, change_frag, status_frag)) == \
                _json_dumps(event_payload(event, change_json, status_json))
            events_seen += 1
        before = after
    assert events_seen >= 1


def test_an_event_with_details_and_an_empty_history_status() -> None:
    event = DomainEvent(EventType.RECONCILIATION_DRIFT, PERSON, "C1", date(2025, 1, 2), "drift",
                        also_notify=("E06000060",), details={"b": "2", "a": "1"})
    status = evaluate(PERSON, [], REF, BOOK, date(2025, 1, 2))
    assert _json_dumps(json_fragment(event)) == _json_dumps(to_jsonable(event))
    assert _json_dumps(status_fragment(replace(status, history=()))) == _json_dumps(status_on_the_bus(status))


@dataclass(frozen=True)
class _WithSet:
    tags: frozenset[str]
    on: date


class _Opaque:
    pass


def test_what_orjson_cannot_write_goes_through_to_jsonable() -> None:
    value = _WithSet(frozenset({"x", "y", "z"}), date(2025, 3, 4))
    assert _json_dumps(json_fragment(value)) == _json_dumps(to_jsonable(value))
    with pytest.raises(TypeError):  # as the store's serializer refused it before
        json_fragment(_Opaque())
    with pytest.raises(TypeError):
        _json_dumps(to_jsonable(_Opaque()))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_statuses_of_an_incremental_evaluation_share_parts_and_keep_their_bytes(changes) -> None:  # noqa: ANN001
    """The bulk path's statuses (`evaluation(...).extended`) share the parts a
    change left alone (a determination, the pending reviews), whose JSON is
    kept by identity (hub/bus/payload.py `_part`): each status's fragment is
    still the bytes of its own dicts, with the parts' JSON kept, made again
    and dropped when the store of parts is full."""
    import hub.bus.payload as payload
    from hub.domain.rules import evaluation

    as_of = max(c.effective_date for c in changes)
    for bound in (payload._PARTS_MAX, 3):
        saved, payload._PARTS_MAX = payload._PARTS_MAX, bound
        payload._PARTS.clear()
        try:
            ev = evaluation(PERSON, [], REF, BOOK, as_of)
            statuses = []
            for change in changes:
                ev = ev.extended(change)
                statuses.append(ev.status)
                assert _json_dumps(status_fragment(ev.status)) == _json_dumps(status_on_the_bus(ev.status))
            for status in statuses:  # again, from the parts kept
                assert _json_dumps(status_fragment(status)) == _json_dumps(status_on_the_bus(status))
            assert len(payload._PARTS) <= bound
        finally:
            payload._PARTS_MAX = saved


def test_a_kept_part_holds_its_own_length() -> None:
    """A part's JSON kept (hub/bus/payload.py `_part`) is a copy of its own
    length: orjson's output as written sits in a buffer of at least 4 KB."""
    import tracemalloc

    import hub.bus.payload as payload

    value = {"org": {"code": "E06000060", "name": "Buckinghamshire Council"}, "basis": "x" * 300}
    tracemalloc.start()
    try:
        kept = [payload._kept(value) for _ in range(200)]
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert orjson.loads(orjson.dumps({"v": kept[0]}))["v"] == value
    assert held < 200 * 1024  # about 0.4 KB each; as written, 4 KB each
