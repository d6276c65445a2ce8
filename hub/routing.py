"""Who must hear of an event: the responsible council and NHS commissioner,
the coordinating council where there is one, and every body the rules named
(outgoing bodies on a transfer, the host council on a move, dispute parties)."""

from __future__ import annotations

from dataclasses import dataclass

from hub.domain.model import DomainEvent, S117Status


@dataclass(frozen=True, slots=True)
class Recipient:
    org_code: str
    role: str  # responsible-council, responsible-commissioner, coordinating-council, notified


def responsible_bodies(status: S117Status) -> list[Recipient]:
    """The bodies every event about the person goes to: the responsible council
    and NHS commissioner and the coordinating council, each once."""
    # Asked for every event the dispatcher handles: written without `all` of a generator or `append`
    # (calls each, where a tuple's `in` and a list's `+=` are none).
    out: list[Recipient] = []
    codes: tuple[str, ...] = ()
    for det, role in (
        (status.responsible_council, "responsible-council"),
        (status.responsible_commissioner, "responsible-commissioner"),
        (status.coordinating_council, "coordinating-council"),
    ):
        if det is not None and (org := det.org) is not None and org.code not in codes:
            codes += (org.code,)
            out += (Recipient(org.code, role),)
    return out


def recipients_for(event: DomainEvent, status: S117Status) -> list[Recipient]:
    """The responsible bodies, then those the event names (`also_notify`), each once."""
    out = responsible_bodies(status)
    if event.also_notify:
        seen = {r.org_code for r in out}
        for code in event.also_notify:
            if code and code not in seen:
                seen.add(code)
                out.append(Recipient(code, "notified"))
    return out
