"""What an event on the hub's own log (`s117.events`) carries besides the
event and the register change: the person's status, without its history.

The history has one entry per change the person has, so a person's n-th
event would carry n of them (more than half of a busy person's payload,
written once per event). It is the register's (`register_changes`): the
dispatcher re-evaluates the person's history from there and the workflows
read the status's bases only."""

from __future__ import annotations

from typing import Any

from hub.codec import to_jsonable_with
from hub.domain.model import S117Status


def status_on_the_bus(status: S117Status) -> dict[str, Any]:
    """`to_jsonable(status)` without its `history`."""
    out = to_jsonable_with(status, "history", _left_out)
    del out["history"]
    return out


def _left_out(_: Any) -> None:
    return None
