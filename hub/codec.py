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
    """A dataclass's field names, or None for any other type (cached per type:
    this runs for every value of every bus payload)."""
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    return None


def to_jsonable(value: Any) -> Any:
    cls = type(value)
    if cls in _PLAIN:
        return value
    names = _field_names(cls)
    if names is not None:
        return {n: to_jsonable(getattr(value, n)) for n in names}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, (list, tuple, frozenset, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


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
