"""The bulk path keeps a person's access facts from row to row (hub/ingest/service.py):
where a row names no hospital and its status names the same bodies
(`_same_parties`), the facts before it are the facts after it."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from hub.domain.access import person_facts, status_parties
from hub.domain.rules import evaluation
from hub.ingest.service import _same_parties
from tests.unit.domain.builders import BOOK, PERSON, REF
from tests.unit.domain.test_properties import histories


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_same_parties_means_the_same_facts(changes) -> None:  # noqa: ANN001
    as_of = max(c.effective_date for c in changes)
    ev = evaluation(PERSON, changes[:1], REF, BOOK, as_of)
    for k, change in enumerate(changes[1:], 2):
        after = ev.extended(change)
        if _same_parties(ev.status, after.status):
            assert status_parties(after.status) == status_parties(ev.status)
            if not change.hospital_ods:
                trust_of = {"R1A": "R1A", "RNU": "RNU"}.get  # the trust of a hospital site (any mapping will do)
                assert person_facts(after.status, changes[:k], trust_of) == \
                    person_facts(ev.status, changes[:k - 1], trust_of)
        ev = after
