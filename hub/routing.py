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


def recipients_for(event: DomainEvent, status: S117Status) -> list[Recipient]:
    seen: set[str] = set()
    out: list[Recipient] = []

    def add(code: str | None, role: str) -> None:
        if code and code not in seen:
            seen.add(code)
            out.append(Recipient(code, role))

    for det, role in (
        (status.responsible_council, "responsible-council"),
        (status.responsible_commissioner, "responsible-commissioner"),
        (status.coordinating_council, "coordinating-council"),
    ):
        if det is not None and det.org is not None:
            add(det.org.code, role)
    for code in event.also_notify:
        add(code, "notified")
    return out
