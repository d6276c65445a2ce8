"""What an event on the hub's own log (`s117.events`) carries besides the
event and the register change: the person's status, without its history.

The history has one entry per change the person has, so a person's n-th
event would carry n of them (more than half of a busy person's payload,
written once per event). It is the register's (`register_changes`): the
dispatcher re-evaluates the person's history from there and the workflows
read the status's bases only."""

from __future__ import annotations

import dataclasses
from functools import cache
from operator import attrgetter
from typing import Any

import orjson

from hub.codec import to_jsonable, to_jsonable_with
from hub.domain.model import S117Status


def status_on_the_bus(status: S117Status) -> dict[str, Any]:
    """`to_jsonable(status)` without its `history`."""
    out = to_jsonable_with(status, "history", _left_out)
    del out["history"]
    return out


def event_payload(event: Any, change_json: dict[str, Any], status_json: dict[str, Any]) -> dict[str, Any]:
    """An event's payload on `s117.events`: the domain event, its register
    change and the person's status after it (`status_on_the_bus`), the last
    two given as JSON already made (a change's events share them)."""
    return {"event": to_jsonable(event), "change": change_json, "status": status_json}


def _left_out(_: Any) -> None:
    return None


# ------------------------------------------------------------ JSON made once
#
# The outbox's payloads and a change's canonical column as JSON already made
# (`orjson.Fragment`): orjson writes the domain's dataclasses, enums, dates
# and tuples itself, in C, as to_jsonable would have them (anything else,
# a set say, through to_jsonable), and a fragment is written into the
# document that holds it verbatim. The stored bytes are exactly those of the
# dicts above through the store's JSON serializer (hub/store/db.py: orjson,
# OPT_NON_STR_KEYS): tests/unit/test_payload_json.py checks it over
# generated histories. For writers only: a fragment is opaque to Python.

_OPTIONS = orjson.OPT_NON_STR_KEYS


def _encode(value: Any) -> bytes:
    try:  # string keys only (every document the domain makes): the same bytes, faster without the option
        return orjson.dumps(value, default=to_jsonable)
    except orjson.JSONEncodeError:
        return orjson.dumps(value, option=_OPTIONS, default=to_jsonable)


@cache
def _bus_fields(cls: type) -> tuple[tuple[str, ...], Any, tuple[str, ...]]:
    """The status's fields on the bus (all but `history`), a getter of their
    values, and those holding a part a status often shares with the one
    before (`_SHARED_TYPES`: a determination, the pending reviews)."""
    fields = dataclasses.fields(cls)
    names = tuple(f.name for f in fields if f.name != "history")
    shared = tuple(f.name for f in fields if f.name != "history" and f.name in _SHARED_FIELDS)
    return names, attrgetter(*names), shared


# A person's successive statuses from an incremental evaluation (the bulk
# path) share most of their parts: the rules engine re-uses the determination
# of a responsibility that did not change, and the same pending reviews
# (hub/domain/rules/engine.py), so each part's JSON is made once and kept by
# the part's identity (the part itself held with it, so its id is not another
# object's). Bounded, emptied when full: 1,024 parts (at 8,192, filled by the
# per-change path's statuses, which share nothing, they held 36 MB after 6,000
# changes). A part's JSON is kept as a copy of its own length: orjson's output
# is a bytes object in a buffer of at least 4 KB (its first size, not given
# back), so each part kept as written held 4 KB whatever its length
# (tracemalloc: 1,000 dumps of a 372-byte document 4.1 MB, copied 0.41 MB;
# the 1,024 parts 4 MB, now about 0.5 MB).
_SHARED_FIELDS = frozenset({"entitlement", "responsible_council", "responsible_commissioner",
                            "coordinating_council", "next_review", "pending_reviews"})
_PARTS: dict[int, tuple[Any, orjson.Fragment]] = {}
_PARTS_MAX = 1024


def _kept(value: Any) -> orjson.Fragment:
    """`value`'s JSON as a fragment to keep: the bytes copied to their own length."""
    return orjson.Fragment(memoryview(_encode(value)).tobytes())


def _part(value: Any) -> Any:
    """`value` (a frozen dataclass or a tuple of them) as a fragment of its JSON."""
    held = _PARTS.get(id(value))
    if held is not None and held[0] is value:
        return held[1]
    fragment = _kept(value)
    if len(_PARTS) >= _PARTS_MAX:
        _PARTS.clear()
    _PARTS[id(value)] = (value, fragment)
    return fragment


def status_fragment(status: S117Status) -> orjson.Fragment:
    """`status_on_the_bus(status)` as JSON already made."""
    names, get, shared = _bus_fields(type(status))
    out = dict(zip(names, get(status)))
    for name in shared:
        value = out[name]
        if value is not None and value != ():
            out[name] = _part(value)
    return orjson.Fragment(_encode(out))


def json_fragment(value: Any) -> orjson.Fragment:
    """`to_jsonable(value)` (a change, an event) as JSON already made."""
    return orjson.Fragment(_encode(value))


def event_payload_fragment(event: Any, change: orjson.Fragment, status: orjson.Fragment) -> orjson.Fragment:
    """`event_payload(event, to_jsonable(change), status_on_the_bus(status))` as JSON already made."""
    return orjson.Fragment(_encode({"event": event, "change": change, "status": status}))
