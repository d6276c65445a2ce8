"""Hand-overs of responsibility a person's history holds, and a change's events
derived again as ingest derived them: pure functions over the domain, asked by
the workflows (a transfer case's hand-over, still held or moved) and by the
dispatcher (a late change's hand-over already told, or told on another date)."""

from __future__ import annotations

from hub.domain.agreements import AgreementBook
from hub.domain.model import DomainEvent, RegisterChange, S117Status
from hub.domain.ports import ReferenceData
from hub.domain.rules import derive_events, evaluate
from hub.domain.rules.engine import handover_bases, handover_council
from hub.domain.rules.precedence import is_late
from hub.domain.rules.timeline import TransferStep, revealed_steps
from hub.domain.views import Handover


def handovers(steps: list[TransferStep]) -> set[Handover]:
    """Each (role, from, to, date) the history's steps hand over, by the codes
    a transfer event names (the responsible body's own code, else the basis:
    hub/domain/rules/events.py) and by the bases too, so a body renamed or
    succeeded since the case opened is still found; the date is the step's
    change's effective date (the `occurred_on` of the event that tells it)."""
    out: set[Handover] = set()
    for step in steps:
        on = step.change.effective_date
        for role in ("council", "commissioner"):
            old_basis, new_basis = _basis(step.before, role), _basis(step.after, role)
            if old_basis is None or new_basis is None or old_basis == new_basis:
                continue
            froms = {old_basis, *_org_code(step.before, role)}
            tos = {new_basis, *_org_code(step.after, role)}
            out |= {(role, f, t, on) for f in froms for t in tos}
    return out


def events_again(person_id: str, history: list[RegisterChange], change: RegisterChange, ref: ReferenceData,
                 agreements: AgreementBook) -> list[DomainEvent]:
    """The events of `change`, derived again as ingest derived them when it was
    recorded (`transfer_event_again`), in their order (index i: `event_id_for(change id, i, type)`)."""
    as_of = change.recorded_on
    before = evaluate(person_id, history, ref, agreements, as_of) if history else None
    after = evaluate(person_id, [*history, change], ref, agreements, as_of)
    revealed = (revealed_steps(person_id, history, change, ref, agreements, as_of)
                if history and is_late(change, history) else None)
    return derive_events(before, after, change, revealed=revealed)


def _basis(status: S117Status, role: str) -> str | None:
    # The council's: the responsible one's or, after a re-detention with no place of residence, the one whose
    # duty it ended (the transfer events' and steps' own bases: hub/domain/rules/engine.py `handover_bases`).
    return handover_bases(status)[0 if role == "council" else 1]


def _org_code(status: S117Status, role: str) -> tuple[str, ...]:
    held = handover_council(status) if role == "council" else status.responsible_commissioner
    return (held.org.code,) if held is not None and held.org is not None else ()
