"""What each organisation ought to know of a person: its view.

The hub keeps, per (person, organisation), the position it last told that
organisation (store table `recipient_views`). After every change the
dispatcher re-evaluates the person's whole history, builds each
organisation's view from the status with `views_for`, and sends every
organisation whose view differs from the one it holds the new view (with a
version one higher; after a restore of the store from a backup, above the
floor the restore left: hub/store/restores.py). A receiver that applies the
highest version it has seen therefore always holds the truth, whatever order
changes arrived in.

A view is a JSON-ready dict (ISO dates, sorted lists), so it is stored,
compared and carried in a message as it is. An organisation that is not, or
is no longer, involved has the view `{"roles": []}`: it knows nothing of the
person beyond having been told that.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from datetime import date
from typing import Any

from hub.domain.model import DomainEvent, EventType, S117Status

RESPONSIBLE_COUNCIL = "responsible-council"
RESPONSIBLE_COMMISSIONER = "responsible-commissioner"
COORDINATING_COUNCIL = "coordinating-council"
HOST_COUNCIL = "host-council"
DISPUTE_PARTY = "dispute-party"
RESPONSIBILITY_ROLES = frozenset({RESPONSIBLE_COUNCIL, RESPONSIBLE_COMMISSIONER, COORDINATING_COUNCIL})

# The field group that discloses who the responsible bodies are (hub/fhir/messages.py).
RESPONSIBILITY_GROUP = "responsibility"
EXPLANATIONS_GROUP = "explanations"

NOT_INVOLVED: dict[str, Any] = {"roles": []}

# A responsible body the hub could not determine while one is owed (hazard H-03): said
# explicitly, under the field group `responsibility`, so a receiver tells "no body is
# responsible yet: someone must act" from "not disclosed to you" (a key left out).
# The view's (and the person query's) key; each item: the role, a FHIR R4
# data-absent-reason code and the reason in words (no body, no date, nothing personal).
RESPONSIBILITY_UNDETERMINED = "responsibility_undetermined"
# http://terminology.hl7.org/CodeSystem/data-absent-reason
TEMP_UNKNOWN = "temp-unknown"  # expected to become known as the care goes on (the area discharged to)
UNKNOWN = "unknown"  # not found from what the hub holds (its reference data): someone must find it
COUNCIL_AWAITS_DISCHARGE_AREA = (
    "no place of residence before the detention is known, so no council is responsible until the area the "
    "person is discharged to is known; the coordinating council acts meanwhile")
COUNCIL_AWAITS_NO_COORDINATOR = (
    "no place of residence before the detention is known, so no council is responsible until the area the "
    "person is discharged to is known; the hospital's council is not in the hub's reference data, so no "
    "council coordinates meanwhile: the hub operator must add the hospital site's council")
COUNCIL_AWAITS_ABOLISHED_COORDINATOR = (
    "no place of residence before the detention is known, so no council is responsible until the area the "
    "person is discharged to is known")
# A council with no addressable successor (hazard H-03: split between several successors, or succeeded by one
# the register of local authorities lists without a GSS code yet): the reason names the council and its
# successors and what resolves it (`S117Status.council_split`), then who acts meanwhile.
SPLIT_COORDINATED = "the coordinating council acts meanwhile"
SPLIT_NO_COORDINATOR = ("the hospital's council is not in the hub's reference data, so no council coordinates "
                        "meanwhile: the hub operator must add the hospital site's council")
COMMISSIONER_NOT_FOUND = (
    "the NHS commissioner could not be determined: neither the GP practice nor the place of residence (nor, "
    "with neither, the hospital's area) maps to an NHS commissioner in the hub's reference data; the hub "
    "operator must check the reference data")

View = dict[str, Any]


def roles_of(status: S117Status) -> dict[str, set[str]]:
    """Organisation code -> its roles in the person's aftercare now."""
    # Asked for every status the dispatcher tells (`views_for`): written without a helper a role
    # or `setdefault` (calls each, bench/JOURNAL.md "Twenty-seventh session: the dispatcher's calls an event").
    roles: dict[str, set[str]] = {}
    for det, role in (
        (status.responsible_council, RESPONSIBLE_COUNCIL),
        (status.responsible_commissioner, RESPONSIBLE_COMMISSIONER),
        (status.coordinating_council, COORDINATING_COUNCIL),
    ):
        if det is not None and det.org is not None and (code := det.org.code):
            if code in roles:
                roles[code].add(role)
            else:
                roles[code] = {role}
    council = status.responsible_council.org.code if status.responsible_council and status.responsible_council.org else None
    host = status.residence_la_gss
    if status.entitled and host and host not in (council, status.council_basis_code):
        if host in roles:  # told of people placed or living there (Worcs 17.1-17.2)
            roles[host].add(HOST_COUNCIL)
        else:
            roles[host] = {HOST_COUNCIL}
    for dispute in status.open_disputes:
        for party in dispute.parties:
            if party:
                if party in roles:
                    roles[party].add(DISPUTE_PARTY)
                else:
                    roles[party] = {DISPUTE_PARTY}
    return roles


def undetermined_bodies(status: S117Status) -> tuple[dict[str, str], ...]:
    """The responsible bodies the hub could not determine while the person is owed
    them (entitled, or detained under a qualifying section: the bodies are determined
    when that detention begins), each as {"role", "absent_reason", "reason"}; empty
    when every one is determined or none is owed (never a default body in their place)."""
    if not (status.entitled or (status.detained and status.qualifying_section_code is not None)):
        return ()
    out: tuple[dict[str, str], ...] = ()
    council = status.responsible_council
    if council is None or council.org is None:
        coordinating = status.coordinating_council
        coordinated = coordinating is not None and coordinating.org is not None
        split = status.council_split
        # No coordinating council: the hospital's council is abolished with no successor the hub can name
        # (the reason names it and the operator's file), or not in the reference data at all.
        abolished = status.hospital_council_abolished
        if split is not None:
            # Not found from what the hub holds: someone must name the successor covering the address, or
            # the operator load a register giving a successor its GSS code (the reason says which).
            meanwhile = (SPLIT_COORDINATED if coordinated else
                         abolished.explanation if abolished is not None else SPLIT_NO_COORDINATOR)
            out += ({"role": RESPONSIBLE_COUNCIL, "absent_reason": UNKNOWN,
                     "reason": f"{split.explanation}; {meanwhile}"},)
        else:
            reason = (COUNCIL_AWAITS_DISCHARGE_AREA if coordinated else
                      f"{COUNCIL_AWAITS_ABOLISHED_COORDINATOR}; {abolished.explanation}" if abolished is not None
                      else COUNCIL_AWAITS_NO_COORDINATOR)
            out += ({"role": RESPONSIBLE_COUNCIL, "absent_reason": TEMP_UNKNOWN, "reason": reason},)
    commissioner = status.responsible_commissioner
    if commissioner is None or commissioner.org is None:
        out += ({"role": RESPONSIBLE_COMMISSIONER, "absent_reason": UNKNOWN, "reason": COMMISSIONER_NOT_FOUND},)
    return out


def view_of(status: S117Status, roles: Iterable[str], groups: frozenset[str]) -> View:
    """The position an organisation with `roles` and agreement `groups` ought to hold."""
    roles = sorted(set(roles))
    if not roles:
        return dict(NOT_INVOLVED)
    if status.died:
        ended_by = "death"
    elif status.discharged_from_s117:
        ended_by = "discharge"
    else:
        ended_by = None
    # (No review or dispute, the usual case: no comprehension made for them.)
    view: View = {
        "roles": roles,
        "entitled": status.entitled,
        "entitlement_start": status.entitlement_start.isoformat() if status.entitlement_start else None,
        "entitlement_end": status.entitlement_end.isoformat() if status.entitlement_end else None,
        "ended_by": ended_by,
        # Nothing is None: a key absent means unknown or not disclosed, so the
        # view survives the round trip through a FHIR message unchanged.
        # Each review's kind and date for everyone; what set it off (a move, a request, a discharge
        # considered: the trigger and its day) and its citation are the reasons (`explanations`).
        "reviews": [
            {k: v for k, v in (("kind", r.kind), ("due_on", r.due_on.isoformat()), ("trigger", r.trigger),
                               ("triggered_on", r.triggered_on.isoformat() if r.triggered_on else None),
                               ("citation", r.citation)) if v not in (None, "")}
            if EXPLANATIONS_GROUP in groups else {"kind": r.kind, "due_on": r.due_on.isoformat()}
            for r in status.pending_reviews
        ] if status.pending_reviews else [],
        "disputes": sorted(
            ({"dispute_id": d.dispute_id, "kind": d.kind.value} for d in status.open_disputes),
            key=lambda d: d["dispute_id"],
        ) if status.open_disputes else [],
    }
    if RESPONSIBILITY_GROUP in groups:
        det = status.responsible_council
        view["responsible_council"] = det.org.code if det is not None and det.org is not None else None
        det = status.responsible_commissioner
        view["responsible_commissioner"] = det.org.code if det is not None and det.org is not None else None
        det = status.coordinating_council
        view["coordinating_council"] = det.org.code if det is not None and det.org is not None else None
        # Only when there is one: a position that names every body owed is as before.
        undetermined = undetermined_bodies(status)
        if undetermined:
            view[RESPONSIBILITY_UNDETERMINED] = list(undetermined)
    return {k: v for k, v in view.items() if v is not None}


def views_for(
    status: S117Status, known: Iterable[str], groups_of: Callable[[str], frozenset[str]],
) -> dict[str, View]:
    """Every organisation's view: those involved now and those in `known`
    (told something before), the latter `NOT_INVOLVED` when no longer involved."""
    roles = roles_of(status)
    out = {code: view_of(status, r, groups_of(code)) for code, r in roles.items()}
    for code in known:
        if code not in out:
            out[code] = dict(NOT_INVOLVED)
    return out


def event_type_for(old: View | None, new: View) -> EventType:
    """The event that best names what changed from `old` to `new` for one organisation."""
    old = old or NOT_INVOLVED
    old_roles, new_roles = set(old.get("roles", [])), set(new.get("roles", []))
    # A body newly involved as host or as a dispute party hears why it is
    # involved, not that an entitlement it never held "started".
    if not old_roles and new_roles == {HOST_COUNCIL}:
        return EventType.MOVED_OUT_OF_AREA
    if not old_roles and new_roles == {DISPUTE_PARTY}:
        return EventType.DISPUTE_RAISED
    if new.get("entitled") and not old.get("entitled"):
        return EventType.ENTITLEMENT_STARTED
    if old.get("entitled") and not new.get("entitled") and new.get("roles"):
        return EventType.ENTITLEMENT_ENDED
    if not old_roles and new_roles:  # newly involved, not (yet) entitled
        return EventType.REGISTER_CHANGE_RECORDED
    # Who is responsible, as a body still involved sees it (one no longer involved
    # sees no one: that is its own role's end, not a transfer, below).
    if (old_roles ^ new_roles) & RESPONSIBILITY_ROLES or (new_roles and any(
        old.get(k) != new.get(k) for k in ("responsible_council", "responsible_commissioner", "coordinating_council")
    )):
        return EventType.RESPONSIBILITY_TRANSFERRED
    if HOST_COUNCIL in old_roles ^ new_roles:
        return EventType.MOVED_OUT_OF_AREA
    old_disputes = {d["dispute_id"] for d in old.get("disputes", [])}
    new_disputes = {d["dispute_id"] for d in new.get("disputes", [])}
    if new_disputes - old_disputes:
        return EventType.DISPUTE_RAISED
    if old_disputes - new_disputes:
        return EventType.DISPUTE_RESOLVED
    if old_roles != new_roles and not new_roles:
        return EventType.RESPONSIBILITY_TRANSFERRED  # e.g. no longer a dispute party
    if old.get("reviews") != new.get("reviews"):
        return EventType.REVIEW_DUE
    return EventType.REGISTER_CHANGE_RECORDED


_ROLE_WORDS = {
    RESPONSIBLE_COUNCIL: "the responsible council",
    RESPONSIBLE_COMMISSIONER: "the responsible NHS commissioner",
    COORDINATING_COUNCIL: "the coordinating council",
    HOST_COUNCIL: "the council of the area the person lives in (host)",
    DISPUTE_PARTY: "a party to an open responsibility dispute",
}


# The reasons in plain words that name nothing of the person's history.
_NO_LONGER_HOST = "the person no longer lives in that area, or is no longer entitled"
_DISPUTE_RESOLVED = "the dispute was resolved"
_PLAIN_WHY = frozenset({_NO_LONGER_HOST, _DISPUTE_RESOLVED})


def reason_for(old: View | None, new: View, status: S117Status, *, explain: bool) -> str:
    """Plain words (no personal data) for what changed for this organisation and,
    with `explain` (its agreement grants `explanations`), why: the
    determinations' explanations name sections, dates and citations."""
    old_roles = set((old or NOT_INVOLVED).get("roles", []))
    new_roles = set(new.get("roles", []))
    parts: list[str] = []
    for role in sorted(new_roles - old_roles):
        parts.append(f"now {_ROLE_WORDS[role]}")
    for role in sorted(old_roles - new_roles):
        parts.append(f"no longer {_ROLE_WORDS[role]}")
    why: list[str] = []
    lost = old_roles - new_roles
    if RESPONSIBLE_COUNCIL in old_roles ^ new_roles and status.responsible_council is not None:
        why.append(status.responsible_council.explanation)
    if RESPONSIBLE_COMMISSIONER in old_roles ^ new_roles and status.responsible_commissioner is not None:
        why.append(status.responsible_commissioner.explanation)
    if COORDINATING_COUNCIL in lost and status.responsible_council is not None:
        why.append(status.responsible_council.explanation)
    if HOST_COUNCIL in lost:
        why.append(_NO_LONGER_HOST)
    if DISPUTE_PARTY in lost:
        why.append(_DISPUTE_RESOLVED)
    if old and old.get("entitled") != new.get("entitled") and new_roles:
        why.append(status.entitlement.explanation)
    if new_roles:
        for key, words, det in (
            ("responsible_council", "the responsible council", status.responsible_council),
            ("responsible_commissioner", "the responsible NHS commissioner", status.responsible_commissioner),
            ("coordinating_council", "the coordinating council", status.coordinating_council),
        ):
            if old and key in new and old.get(key) != new.get(key):
                parts.append(f"{words} is now {new[key]}" if new[key] else f"there is no longer {words}")
                if det is not None and det.explanation not in why:
                    why.append(det.explanation)
    if not explain:
        why = [w for w in why if w in _PLAIN_WHY]
    if not parts and not why:
        return "the person's position changed; the position in this message replaces the one held"
    return "; ".join(parts + why)


# A hand-over the history holds: (role, from, to, the date it happens), by the
# codes a transfer event names and by the bases (hub/domain/handovers.py `handovers`).
Handover = tuple[str, str, str, date]
TOLD = "told"  # `handover_told`: every hand-over the event names was held on its date


def handovers_named(event: DomainEvent) -> list[tuple[str, str, str]]:
    """The (role, from, to) each hand-over an `s117-responsibility-transferred` event names."""
    out = []
    for role in ("council", "commissioner"):
        old, new = event.details.get(f"{role}_from"), event.details.get(f"{role}_to")
        if old and new and old != new:
            out.append((role, old, new))
    return out


def handover_told(event: DomainEvent, held: Collection[Handover]) -> date | str | None:
    """A late change's `s117-responsibility-transferred` event, to a body whose
    position it does not change (a position carries no hand-over's date),
    against the hand-overs `held` by the history before that change (what the
    body was told): `TOLD` if each hand-over it names was held on its date
    (told already: nothing to tell again); else the date one of them was
    held on instead, the nearest (told on that date: the late history moved
    it, a rectification); None if none was held (a hand-over not told before)."""
    named = handovers_named(event)
    on = event.occurred_on
    moved: list[date] = []
    for role, old, new in named:
        dates = {d for r, f, t, d in held if (r, f, t) == (role, old, new)}
        if on in dates:
            continue
        if not dates:
            return None
        moved.append(min(dates, key=lambda d: (abs((d - on).days), d)))
    if not named:
        return None
    return min(moved, key=lambda d: (abs((d - on).days), d)) if moved else TOLD


def moved_handover_reason(event: DomainEvent, was: date) -> str:
    """Plain words for a hand-over late history moved to another date (the
    date the body was told, the date it took effect: each already in the
    messages it was sent; no body named, as a not-involved position names none)."""
    return (f"the transfer of responsibility took effect on {event.occurred_on.isoformat()}, "
            f"not on {was.isoformat()} as told before")
