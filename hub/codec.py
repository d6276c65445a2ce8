"""Domain dataclasses <-> JSON-ready dicts, driven by their type hints.

Used for the bus payloads and the canonical column of register changes, so a
field added to a domain dataclass travels without hand-written mapping code.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
import types
import typing
from datetime import date, datetime
from enum import Enum
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")


_PLAIN = frozenset({str, int, float, bool, type(None)})


@cache
def _field_names(cls: type) -> tuple[str, ...] | None:
    """A dataclass's field names, or None for any other type."""
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    return None


def _enum_value(value: Any) -> Any:
    return value.value


def _isoformat(value: Any) -> Any:
    return value.isoformat()


def _items(value: Any) -> Any:
    return [to_jsonable(v) for v in value]


def _mapping(value: Any) -> Any:
    return {str(k): to_jsonable(v) for k, v in value.items()}


def _as_is(value: Any) -> Any:
    return value


def _dataclass_encoder(cls: type, names: tuple[str, ...]) -> Callable[[Any], Any]:
    """`{name: to_jsonable(value.name) for name in names}` as one generated
    function: the attribute reads unrolled and a plain value (str, int,
    float, bool, None) kept without a call. The bus payloads hold a status
    of a few dozen nested dataclasses per event; this walk was most of the
    cost of writing a council file's rows."""
    lines = ["def encode(value):"]
    lines += [f"    _{i} = value.{name}" for i, name in enumerate(names)]
    items = ", ".join(f"{name!r}: _{i} if type(_{i}) in _PLAIN else to_jsonable(_{i})"
                      for i, name in enumerate(names))
    lines.append(f"    return {{{items}}}")
    scope: dict[str, Any] = {"_PLAIN": _PLAIN, "to_jsonable": to_jsonable}
    exec("\n".join(lines), scope)  # noqa: S102 - the names are a dataclass's own field names
    encode = scope["encode"]
    encode.__qualname__ = f"encode_{cls.__name__}"
    return encode


@cache
def _encoder_with(cls: type, name: str) -> Callable[[Any, Callable[[Any], Any]], Any]:
    names = _field_names(cls)
    assert names is not None and name in names, (cls, name)
    lines = ["def encode(value, special):"]
    lines += [f"    _{i} = value.{n}" for i, n in enumerate(names)]
    items = ", ".join(f"{n!r}: special(_{i})" if n == name else f"{n!r}: _{i} if type(_{i}) in _PLAIN else to_jsonable(_{i})"
                      for i, n in enumerate(names))
    lines.append(f"    return {{{items}}}")
    scope: dict[str, Any] = {"_PLAIN": _PLAIN, "to_jsonable": to_jsonable}
    exec("\n".join(lines), scope)  # noqa: S102 - the names are a dataclass's own field names
    return scope["encode"]


def to_jsonable_with(value: Any, name: str, special: Callable[[Any], Any]) -> dict[str, Any]:
    """`to_jsonable(value)` of a dataclass, but its field `name` encoded by
    `special` (which must give what to_jsonable would: e.g. a memo of the
    entries of a history that many statuses share)."""
    return _encoder_with(type(value), name)(value, special)


def _encoder(cls: type) -> Callable[[Any], Any]:
    """How `to_jsonable` turns a value of type `cls` into JSON-ready data,
    worked out once per type (every test below depends on the type alone)."""
    names = _field_names(cls)
    if names is not None:
        encode = _dataclass_encoder(cls, names)
    elif issubclass(cls, Enum):
        encode = _enum_value
    elif issubclass(cls, (date, datetime)):
        encode = _isoformat
    elif issubclass(cls, (list, tuple, frozenset, set)):
        encode = _items
    elif issubclass(cls, dict):
        encode = _mapping
    else:
        encode = _as_is
    _ENCODERS[cls] = encode
    return encode


_ENCODERS: dict[type, Callable[[Any], Any]] = {}


def to_jsonable(value: Any) -> Any:
    """Dataclasses as dicts of their fields, enums as their values, dates as
    ISO strings, sequences and sets as lists, dict keys as strings."""
    cls = type(value)
    if cls in _PLAIN:
        return value
    encode = _ENCODERS.get(cls)
    if encode is None:
        encode = _encoder(cls)
    return encode(value)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _identity(value: Any) -> Any:
    return value


@cache
def _converter(tp: Any) -> Callable[[Any], Any]:
    """A function turning the JSON form of a `tp` value back into one, worked
    out once per type (the dispatcher decodes every event, change and history
    entry it reads: the type inspection was most of the cost)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _converter(args[0]) if len(args) == 1 else _identity
    if origin is tuple:
        args = typing.get_args(tp)
        inner_t = _converter(args[0] if args else Any)
        return lambda value: tuple(inner_t(v) if v is not None else None for v in value)
    if origin in (list, frozenset, set):
        (inner,) = typing.get_args(tp) or (Any,)
        inner_c, make = _converter(inner), origin
        return lambda value: make(inner_c(v) if v is not None else None for v in value)
    if origin is dict:
        return dict
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            return lambda value: from_jsonable(tp, value)
        if issubclass(tp, Enum):
            return tp
        if tp is datetime:
            return datetime.fromisoformat
        if tp is date:
            return date.fromisoformat
    return _identity


def _convert(tp: Any, value: Any) -> Any:
    return None if value is None else _converter(tp)(value)


@cache
def _fields(cls: type) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    hints = _hints(cls)
    return tuple((f.name, _converter(hints[f.name])) for f in dataclasses.fields(cls))  # type: ignore[arg-type]


def from_jsonable(cls: type[T], data: dict[str, Any]) -> T:
    kwargs = {}
    for name, convert in _fields(cls):
        if name in data:
            value = data[name]
            kwargs[name] = None if value is None else convert(value)
    return cls(**kwargs)


# --- JSON objects naming a key twice -------------------------------------------------------------
#
# Every JSON parser the hub uses (orjson, the standard library's, pydantic's) keeps one value of a key an
# object names twice (the last): a sender's bug, or two systems' fields joined, would change the meaning of
# what was sent without a word. Each JSON entry point refuses such an input instead, naming where the key is.

DUPLICATE_KEY = "duplicate key: the JSON object names it more than once, and which value was meant cannot be told"
MAX_DUPLICATES_NAMED = 20

# A key's closing quote, then the colon. Matches every key written in a JSON text once, and also any `\"`
# followed by a colon inside a string: never fewer matches than keys written.
_KEY_END = re.compile(rb'"[ \t\r\n]*:')
_KEY_END_STR = re.compile(r'"[ \t\r\n]*:')

JsonPath = tuple[str | int, ...]


class _Twice(dict):  # type: ignore[type-arg]
    """A JSON object that named a key more than once: those keys, in the order written."""

    __slots__ = ("twice",)


def _keys_held(value: Any) -> int:
    """How many keys the parsed value's objects hold, all levels."""
    n = 0
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        v = pop()
        if type(v) is dict:
            n += len(v)
            for item in v.values():
                if type(item) is dict or type(item) is list:
                    push(item)
        else:  # a list
            for item in v:
                if type(item) is dict or type(item) is list:
                    push(item)
    return n


def may_repeat_key(body: bytes | str, parsed: Any) -> bool:
    """False when no object of `body` (parsed already as `parsed`, by any parser) can have named a key twice:
    as many keys written in the text (counted by `_KEY_END`, which never counts fewer) as the parsed objects
    hold. True means look closer (`duplicate_keys`): a key repeated, or a string holding `\\"` then a colon."""
    if type(parsed) is not dict and type(parsed) is not list:
        return False
    written = len((_KEY_END if isinstance(body, bytes | bytearray) else _KEY_END_STR).findall(body))
    return written > _keys_held(parsed)


def duplicate_keys(body: bytes | str, parsed: Any = None, limit: int = MAX_DUPLICATES_NAMED) -> list[JsonPath]:
    """Where the JSON text `body` names a key twice in one object: each such key's path (object keys and
    array indexes from the top), once, in the order met, at most `limit`. `parsed`: the body as another
    parser read it, if it did; then a body with no more keys written than read costs one regex count.
    Read again with the standard library's parser, whose hook sees each object's pairs as written. A body it
    cannot read gives [] (the caller's parser has its say); one too deep to walk gives [()] (the top)."""
    if parsed is not None and not may_repeat_key(body, parsed):
        return []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) == len(items):
            return out
        counts: dict[str, int] = {}
        for key, _ in items:
            counts[key] = counts.get(key, 0) + 1
        marked = _Twice(out)
        marked.twice = [key for key, n in counts.items() if n > 1]
        return marked

    try:
        whole = json.loads(body, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return []
    found: list[JsonPath] = []

    def walk(value: Any, at: JsonPath) -> None:
        if len(found) >= limit:
            return
        if isinstance(value, dict):
            for key in getattr(value, "twice", ()):
                found.append((*at, key))
            for key, item in value.items():
                if isinstance(item, (dict, list)):
                    walk(item, (*at, key))
        elif isinstance(value, list):
            for n, item in enumerate(value):
                if isinstance(item, (dict, list)):
                    walk(item, (*at, n))

    try:
        walk(whole, ())
    except RecursionError:
        return [()]
    return found[:limit]


def json_path(path: JsonPath, root: str = "") -> str:
    """`("person", "nhs_number")` as "person.nhs_number", `("entry", 1, "id")` as "entry[1].id", under `root`
    ("Bundle.entry[1].id"); the top itself is `root`, or "(body)"."""
    out = root
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out or "(body)"
