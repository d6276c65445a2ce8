"""Domain events from the difference between two statuses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from functools import partial
from typing import TYPE_CHECKING

from hub.domain.model import (
    ChangeType,
    DomainEvent,
    EventType,
    RegisterChange,
    S117Status,
)
from hub.domain.rules.engine import DISPUTE_RESOLVED_NOTE, handover_bases, handover_council
from hub.domain.service_level import register_service_level

if TYPE_CHECKING:
    from hub.domain.rules.timeline import TransferStep


# A change type in words, for the recorded event's summary ("gp-changed" -> "gp changed").
_IN_WORDS = {t: t.value.replace("-", " ") for t in ChangeType}


def _codes(*orgs: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(code for code in orgs if code))


def _resolved_by(before: S117Status | None, after: S117Status, change: RegisterChange) -> bool:
    """Whether adding `change` (a dispute-resolved) resolved its dispute: the
    dispute is not open after it and the history holds one more resolution
    (the engine's note, hub/domain/rules/engine.py `_on_dispute_resolved`).
    An outcome only some parties have recorded resolves nothing; the party
    completing it may fold before an earlier one (the same day's order), so
    the resolutions are counted, not looked for on the change itself."""
    assert change.dispute is not None
    if any(d.dispute_id == change.dispute.dispute_id for d in after.open_disputes):
        return False
    return _resolutions(after) > (_resolutions(before) if before is not None else 0)


def _resolutions(status: S117Status) -> int:
    return sum(1 for entry in status.history if entry.text == DISPUTE_RESOLVED_NOTE)


def derive_events(
    before: S117Status | None,
    after: S117Status,
    change: RegisterChange,
    *,
    holidays: frozenset[date] | None = None,
    revealed: Sequence[TransferStep] | None = None,
) -> list[DomainEvent]:
    """What others must hear of because `change` turned `before` into `after`.

    Summaries are plain words with no personal data: dates and roles only.
    With `holidays`, the recorded event also carries the register service
    level of this change (Worcs 19.6). `revealed`, for a late change: the
    transfers its arrival adds to the history (`timeline.revealed_steps`),
    each told as happening where it did, in place of comparing `before` and
    `after` (a late change's "before" is not the status it followed).
    """

    def event(event_type: EventType, summary: str, also_notify: tuple[str, ...] = (),
              occurred_on: date | None = None, **details: str) -> DomainEvent:
        return DomainEvent(
            event_type=event_type,
            person_id=after.person_id,
            change_id=change.change_id,
            occurred_on=occurred_on or change.effective_date,
            summary=summary,
            also_notify=also_notify,
            details=dict(details),
        )

    effective = change.effective_date.isoformat()
    recorded_details = {"change_type": change.change_type.value, "effective_date": effective}
    if holidays is not None:
        level = register_service_level(change.notified_on, change.recorded_on, holidays)
        recorded_details["service_level"] = level.state
        recorded_details["service_level_deadline"] = level.deadline.isoformat()
        recorded_details["service_level_explanation"] = level.explanation
    events = [
        DomainEvent(
            event_type=EventType.REGISTER_CHANGE_RECORDED,
            person_id=after.person_id,
            change_id=change.change_id,
            occurred_on=change.effective_date,
            summary=f"Register change recorded: {_IN_WORDS[change.change_type]} effective {effective}.",
            details=recorded_details,
        )
    ]

    was_entitled = before.entitled if before is not None else False
    if after.entitled and not was_entitled:
        events.append(event(
            EventType.ENTITLEMENT_STARTED,
            f"Section 117 aftercare entitlement started on {after.entitlement_start}.",
            explanation=after.entitlement.explanation,
            citation=after.entitlement.citation,
        ))
    elif was_entitled and not after.entitled:
        ended_by = "death" if after.died else "joint discharge decision"
        if after.entitlement_end is not None:
            summary = f"Section 117 aftercare entitlement ended on {after.entitlement_end} ({ended_by})."
        else:
            # A change arriving late (a death dated before the discharge the entitlement was told from): as
            # the register now stands the entitlement never began. Said so, never "ended on None".
            summary = ("Section 117 aftercare entitlement withdrawn: as the register now stands it never began "
                       f"({'the person died before the discharge it was told from' if after.died else 'a change recorded late'}).")
        events.append(event(
            EventType.ENTITLEMENT_ENDED,
            summary,
            explanation=after.entitlement.explanation,
            citation=after.entitlement.citation,
        ))

    if revealed is None:
        events.extend(_transfer_events(before, after, event))
    else:
        for step in revealed:
            events.extend(_transfer_events(step.before, step.after, partial(event, occurred_on=step.change.effective_date)))

    if change.change_type is ChangeType.MOVED and after.entitled:
        host = after.residence_la_gss
        previous = before.residence_la_gss if before is not None else None
        if host is not None and host != previous and host != handover_bases(after)[0]:
            events.append(event(
                EventType.MOVED_OUT_OF_AREA,
                "Person entitled to section 117 aftercare moved to another council area; "
                "the responsible council and NHS commissioner are unchanged and a review is due.",
                also_notify=(host,),
                host_council=host,
            ))

    refused_before = len(before.refused_discharges) if before is not None else 0
    if len(after.refused_discharges) > refused_before:
        refusal = after.refused_discharges[-1]
        events.append(event(
            EventType.DISCHARGE_REFUSED,
            f"Section 117 discharge decision refused under rule {refusal.rule}.",
            rule=refusal.rule,
            explanation=refusal.explanation,
            citation=refusal.citation,
        ))

    if change.dispute is not None and change.change_type in (ChangeType.DISPUTE_RAISED, ChangeType.DISPUTE_RESOLVED):
        dispute = change.dispute
        parties = _codes(*dispute.parties, dispute.resolved_responsible)
        if change.change_type is ChangeType.DISPUTE_RAISED:
            events.append(event(
                EventType.DISPUTE_RAISED,
                f"A {dispute.kind.value} responsibility dispute was raised; current arrangements stay in force "
                "until it is resolved.",
                also_notify=parties,
                dispute_id=dispute.dispute_id,
                kind=dispute.kind.value,
            ))
        elif _resolved_by(before, after, change):
            events.append(event(
                EventType.DISPUTE_RESOLVED,
                f"A {dispute.kind.value} responsibility dispute was resolved.",
                also_notify=parties,
                dispute_id=dispute.dispute_id,
                kind=dispute.kind.value,
                resolved_responsible=dispute.resolved_responsible or "",
            ))

    if after.entitled:
        # Each unscheduled review this change set off, even when an earlier
        # review (an overdue first one, say) is due before it.
        unscheduled = [review for review in after.pending_reviews if review.kind == "unscheduled"]
        held = set(before.pending_reviews) if before is not None and unscheduled else set()
        for review in unscheduled:
            if review not in held:
                events.append(event(
                    EventType.REVIEW_DUE,
                    f"An unscheduled section 117 review is due by {review.due_on}.",
                    due_on=review.due_on.isoformat(),
                    kind=review.kind,
                    trigger=review.trigger,
                    citation=review.citation,
                ))
    return events


def _transfer_events(
    before: S117Status | None, after: S117Status, event: Callable[..., DomainEvent]
) -> list[DomainEvent]:
    if before is None:
        return []
    # The council's basis is the responsible council's or, while a re-detention
    # with no place of residence has left none responsible, the one whose duty
    # it ended: the council of the area discharged to takes over from it
    # (engine.handover_bases, Worcs 4.3.3; Bucks "If, exceptionally, no place
    # of residence").
    (was_council, was_commissioner), (now_council, now_commissioner) = handover_bases(before), handover_bases(after)
    if was_council == now_council and was_commissioner == now_commissioner:
        return []  # neither role's basis changed: no transfer (the loop below would skip both)
    outgoing: list[str] = []
    details: dict[str, str] = {}
    parts: list[str] = []
    pairs = (
        ("council", was_council, now_council, handover_council(before), handover_council(after)),
        ("commissioner", was_commissioner, now_commissioner,
         before.responsible_commissioner, after.responsible_commissioner),
    )
    for role, old_basis, new_basis, old, new in pairs:
        # From nobody to somebody is a first determination, not a transfer.
        if old_basis is None or new_basis is None or old_basis == new_basis or old is None or new is None:
            continue
        old_code = old.org.code if old.org else old_basis
        new_code = new.org.code if new.org else new_basis
        outgoing.append(old_code)
        details |= {f"{role}_from": old_code, f"{role}_to": new_code, f"{role}_explanation": new.explanation,
                    f"{role}_citation": new.citation}
        parts.append(f"the responsible {'NHS commissioner' if role == 'commissioner' else 'council'}")
    if not outgoing:
        return []
    return [event(
        EventType.RESPONSIBILITY_TRANSFERRED,
        f"Section 117 responsibility transferred: {' and '.join(parts)} changed; outgoing and incoming bodies "
        "must both be told.",
        also_notify=_codes(*outgoing),
        **details,
    )]
