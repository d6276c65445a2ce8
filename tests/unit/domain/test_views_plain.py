"""`roles_of`, `view_of` and `views_for` (hub/domain/views.py) are asked for every status the
dispatcher tells, so they are written without helpers, `setdefault` or comprehensions for what is
empty. These tests hold them to the first, plain writing of the same rules (kept here), over
statuses with and without reviews, disputes, a host council, blank codes and shared codes: the same
views, key for key and in the same order (a view is stored and compared as JSON)."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import date
from typing import Any

from hub.domain.model import Determination, Dispute, DisputeKind, Org, ReviewDue
from hub.domain.views import (COMMISSIONER_NOT_FOUND, COUNCIL_AWAITS_DISCHARGE_AREA, COUNCIL_AWAITS_NO_COORDINATOR,
                              NOT_INVOLVED, roles_of, view_of, views_for)
from hub.fhir import examples

STATUS = examples.golden_cases()["entitlement-started-all-groups"]["status"]


def _plain_roles_of(status) -> dict[str, set[str]]:  # noqa: ANN001
    roles: dict[str, set[str]] = {}

    def add(code: str | None, role: str) -> None:
        if code:
            roles.setdefault(code, set()).add(role)

    for det, role in ((status.responsible_council, "responsible-council"),
                      (status.responsible_commissioner, "responsible-commissioner"),
                      (status.coordinating_council, "coordinating-council")):
        if det is not None and det.org is not None:
            add(det.org.code, role)
    council = status.responsible_council.org.code if status.responsible_council and status.responsible_council.org else None
    host = status.residence_la_gss
    if status.entitled and host is not None and host not in (council, status.council_basis_code):
        add(host, "host-council")
    for dispute in status.open_disputes:
        for party in dispute.parties:
            add(party, "dispute-party")
    return roles


def _code(det: Any) -> str | None:
    return det.org.code if det is not None and det.org is not None else None


def _plain_view_of(status, roles, groups) -> dict[str, Any]:  # noqa: ANN001
    roles = sorted(set(roles))
    if not roles:
        return dict(NOT_INVOLVED)
    ended_by = "death" if status.died else "discharge" if status.discharged_from_s117 else None
    view: dict[str, Any] = {
        "roles": roles,
        "entitled": status.entitled,
        "entitlement_start": status.entitlement_start.isoformat() if status.entitlement_start else None,
        "entitlement_end": status.entitlement_end.isoformat() if status.entitlement_end else None,
        "ended_by": ended_by,
        "reviews": [
            {"kind": r.kind, "due_on": r.due_on.isoformat(), "trigger": r.trigger,
             "triggered_on": r.triggered_on.isoformat() if r.triggered_on else None, "citation": r.citation}
            for r in status.pending_reviews
        ],
        "disputes": sorted(({"dispute_id": d.dispute_id, "kind": d.kind.value} for d in status.open_disputes),
                           key=lambda d: d["dispute_id"]),
    }
    if "responsibility" in groups:
        view["responsible_council"] = _code(status.responsible_council)
        view["responsible_commissioner"] = _code(status.responsible_commissioner)
        view["coordinating_council"] = _code(status.coordinating_council)
        # A body owed and not determined (H-03), said: only while the person is owed the bodies.
        if status.entitled or (status.detained and status.qualifying_section_code is not None):
            undetermined = []
            if status.responsible_council is None or status.responsible_council.org is None:
                undetermined.append({"role": "responsible-council", "absent_reason": "temp-unknown",
                                     "reason": COUNCIL_AWAITS_DISCHARGE_AREA if _code(status.coordinating_council)
                                     is not None else COUNCIL_AWAITS_NO_COORDINATOR})
            if status.responsible_commissioner is None or status.responsible_commissioner.org is None:
                undetermined.append({"role": "responsible-commissioner", "absent_reason": "unknown",
                                     "reason": COMMISSIONER_NOT_FOUND})
            if undetermined:
                view["responsibility_undetermined"] = undetermined
    view["reviews"] = [{k: v for k, v in r.items() if v not in (None, "")
                        and (k in ("kind", "due_on") or "explanations" in groups)} for r in view["reviews"]]
    return {k: v for k, v in view.items() if v is not None}


def _statuses():  # noqa: ANN202
    bucks, oxon = Org("E06000060", "Bucks", "council"), Org("E10000034", "Oxfordshire", "council")
    councils = [None, Determination(None, "unknown", "x"), Determination(bucks, "", "x"),
                Determination(Org("", "blank", "council"), "", "x")]
    reviews = [(), (ReviewDue(date(2025, 3, 1), "first", "e", "Worcs 14.1", "left-hospital", date(2025, 1, 1)),
                    ReviewDue(date(2026, 3, 1), "annual", "e", "", "", None))]
    disputes = [(), (Dispute("d-2", DisputeKind.COUNCIL, ("E06000060", "", "E10000034")),
                     Dispute("d-1", DisputeKind.COUNCIL, ("QU9",)))]
    for council, coordinating, host, review, dispute, entitled, ended in itertools.product(
            councils, councils[:3], [None, "", "E06000060", "E10000034", "E09000001"], reviews, disputes,
            (True, False), ("", "died", "discharged")):
        yield dataclasses.replace(
            STATUS, responsible_council=council, coordinating_council=coordinating, residence_la_gss=host,
            pending_reviews=review, open_disputes=dispute, entitled=entitled, council_basis_code=oxon.code,
            entitlement_end=date(2025, 6, 1) if ended else None, died=ended == "died",
            discharged_from_s117=ended == "discharged")


def test_roles_and_views_are_the_plain_rules_key_for_key() -> None:
    groups = [frozenset(), frozenset({"responsibility"}), frozenset({"responsibility", "explanations"})]
    tried = 0
    for status in _statuses():
        roles = roles_of(status)
        assert roles == _plain_roles_of(status) and list(roles) == list(_plain_roles_of(status))
        for code, held in itertools.product(list(roles) + ["E99999999"], groups):
            got, want = view_of(status, roles.get(code, set()), held), _plain_view_of(status, roles.get(code, set()), held)
            assert got == want and list(got) == list(want), (status, code, held)
            assert [list(r) for r in got.get("reviews", [])] == [list(r) for r in want.get("reviews", [])]
        known = ["E99999999", *roles][:3]
        out = views_for(status, known, lambda code: groups[len(code) % 3])
        want_out = {code: _plain_view_of(status, r, groups[len(code) % 3]) for code, r in _plain_roles_of(status).items()}
        for code in known:
            want_out.setdefault(code, dict(NOT_INVOLVED))
        assert out == want_out and list(out) == list(want_out)
        tried += 1
    assert tried == 4 * 3 * 5 * 2 * 2 * 2 * 3
