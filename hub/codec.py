"""Domain dataclasses <-> JSON-ready dicts, driven by their type hints.

Used for the bus payloads and the canonical column of register changes, so a
field added to a domain dataclass travels without hand-written mapping code.
"""

from __future__ import annotations

import dataclasses
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
