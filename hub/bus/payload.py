"""What an event on the hub's own log (`s117.events`) carries besides the
event and the register change: the person's status, without its history.

The history has one entry per change the person has, so a person's n-th
event would carry n of them (more than half of a busy person's payload,
written once per event). It is the register's (`register_changes`): the
dispatcher re-evaluates the person's history from there and the workflows
read the status's bases only."""

from __future__ import annotations

from typing import Any

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
