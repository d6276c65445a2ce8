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
    out: list[Recipient] = []
    for det, role in (
        (status.responsible_council, "responsible-council"),
        (status.responsible_commissioner, "responsible-commissioner"),
        (status.coordinating_council, "coordinating-council"),
    ):
        if det is not None and det.org is not None and all(r.org_code != det.org.code for r in out):
            out.append(Recipient(det.org.code, role))
    return out


def recipients_for(event: DomainEvent, status: S117Status) -> list[Recipient]:
    """The responsible bodies, then those the event names (`also_notify`), each once."""
    out = responsible_bodies(status)
    seen = {r.org_code for r in out}
    for code in event.also_notify:
        if code and code not in seen:
            seen.add(code)
            out.append(Recipient(code, "notified"))
    return out
