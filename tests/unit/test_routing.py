"""Routing (hub/routing.py): who must hear of an event. The dispatcher asks it for every event, so it
is written without generators and appends; these tests hold it to the plain reading of the rule
(each responsible body once, in the order council, commissioner, coordinating council; then each
body the event names that is not one of them, once, in its order)."""

from __future__ import annotations

import dataclasses
import itertools

from hub.domain.model import Determination, Org
from hub.fhir import examples
from hub.routing import Recipient, recipients_for, responsible_bodies

STATUS = examples.golden_cases()["entitlement-started-all-groups"]["status"]
EVENT = examples.golden_cases()["entitlement-started-all-groups"]["event"]
ROLES = ("responsible-council", "responsible-commissioner", "coordinating-council")


def _plain(event, status) -> list[Recipient]:  # noqa: ANN001
    """The rule as first written (a generator over those found, a set of those seen)."""
    out: list[Recipient] = []
    for det, role in zip((status.responsible_council, status.responsible_commissioner, status.coordinating_council),
                         ROLES, strict=True):
        if det is not None and det.org is not None and all(r.org_code != det.org.code for r in out):
            out.append(Recipient(det.org.code, role))
    seen = {r.org_code for r in out}
    for code in event.also_notify:
        if code and code not in seen:
            seen.add(code)
            out.append(Recipient(code, "notified"))
    return out


def test_each_body_once_in_the_rules_order_whatever_the_codes() -> None:
    dets = [None, Determination(None, "unknown", "x"), Determination(Org("E06000060", "Bucks", "council"), "", "x"),
            Determination(Org("QU9", "BOB ICB", "icb"), "", "x"), Determination(Org("E06000060", "Bucks", "icb"), "", "x")]
    notify = [(), ("",), ("E06000060",), ("E10000034", "E10000034", "QU9"), ("Q1", "", "E06000060", "Q2", "Q1")]
    tried = 0
    for council, commissioner, coordinating in itertools.product(dets, repeat=3):
        status = dataclasses.replace(STATUS, responsible_council=council, responsible_commissioner=commissioner,
                                     coordinating_council=coordinating)
        for also in notify:
            event = dataclasses.replace(EVENT, also_notify=also)
            got = recipients_for(event, status)
            assert got == _plain(event, status), (council, commissioner, coordinating, also)
            assert responsible_bodies(status) == _plain(dataclasses.replace(EVENT, also_notify=()), status)
            assert len({r.org_code for r in got}) == len(got)
            tried += 1
    assert tried == 125 * 5
