"""The one access policy's service: the I/O around `hub.domain.access`.

Every entry point asks here: REST, FHIR, MLLP and council files through
`IngestService` (the record path, inside the transaction that locks the
person), the person query and lookup through `hub/api/persons.py`. Each
decision, allowed or refused, is written to `access_decisions` (no personal
data: the hub person id, the caller's ids, the rule, the role, the groups).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from hub.domain.access import (
    TEXTS,
    Caller,
    Decision,
    PersonFacts,
    Role,
    Rule,
    decide_write,
    person_facts,
)
from hub.domain.model import ChangeType, DisputeKind, RegisterChange, S117Status
from hub.domain.ports import ReferenceData
from hub.domain.succession import duty_holder
from hub.sharing import SharingAgreements
from hub.store.schema import access_decisions

__all__ = ["AccessPolicy", "ReadGrant", "caller_of", "filter_status", "record_decision", "NOT_FOUND_DETAIL"]

# The one answer on every read channel for "no such person", "not yours" and
# "no agreement": same status, same body.
NOT_FOUND_DETAIL = "no person this client may see matches"

# Which field group each key of the person query belongs to (the same groups
# as the push messages, hub/fhir/messages.py). A key not listed is never
# shown (deny by default). "" = always shown: what every message carries
# (the entitlement itself, its period, the next review's date and kind).
STATUS_GROUPS: dict[str, str] = {
    "person_id": "", "as_of": "", "entitled": "", "entitlement_start": "", "entitlement_end": "",
    "discharged_from_s117": "", "died": "", "next_review": "", "pending_reviews": "",
    "detained": "legal-status", "in_hospital": "legal-status", "on_cto": "legal-status",
    "on_s17_leave": "legal-status", "qualifying_section_code": "legal-status", "detention_start": "legal-status",
    "entitling_section_code": "legal-status", "entitling_detention_start": "legal-status",
    "entitling_hospital_ods": "legal-status", "history": "legal-status", "register_service_level": "legal-status",
    "responsible_council": "responsibility", "responsible_commissioner": "responsibility",
    "coordinating_council": "responsibility", "council_basis_code": "responsibility",
    "commissioner_basis_code": "responsibility", "residence_la_gss": "responsibility",
    "open_disputes": "responsibility",
    "responsibility_undetermined": "responsibility",  # a body owed and not determined (hub/domain/views.py)
    "entitlement": "explanations", "refused_discharges": "explanations",
    "pending_discharge": "explanations",  # a joint decision awaiting the other body's own agreement
    "transfers": "workflow",  # transfer workflows (hub/workflows/distribution.py)
    "funding": "funding",  # costs, providers and the split (hub/money/view.py)
}
# Inside determinations and the next review: the "why" needs explanations
# (for a review, what set it off and when, as in the push messages' positions:
# hub/domain/views.py `view_of`).
_WHY_KEYS = ("explanation", "citation", "rule", "trigger", "triggered_on")


async def no_sooner_than(started: float, seconds: float) -> None:
    """Wait until `seconds` after `started` (time.monotonic()): a refusal that
    looked a person up and evaluated their history answers no sooner than one
    about a number not on the register (no membership oracle by time;
    S117_READ_REFUSAL_FLOOR_MS for reads, S117_WRITE_REFUSAL_FLOOR_MS for writes)."""
    wait = seconds - (time.monotonic() - started)
    if wait > 0:
        await asyncio.sleep(wait)


_POLICY_RULES = frozenset(r.value for r in Rule if r is not Rule.ALLOWED)


def refused_by_policy(outcome: Any) -> bool:
    """Whether an ingest outcome is an access-policy refusal (a 403 naming its
    rule: no relationship, a hospital the source does not run...). Each may
    have read the person's history first, so each answers no sooner than the
    floor, whatever the rule (the MLLP listener's ACKs alike: hub/mllp.py)."""
    return outcome.status_code == 403 and isinstance(outcome.body, dict) and \
        outcome.body.get("rule") in _POLICY_RULES


def caller_of(client: Any) -> Caller:
    return Caller(org_code=client.org_code, org_kind=client.org_kind, admin="hub:admin" in client.scopes)


def filter_status(body: dict[str, Any], groups: frozenset[str]) -> dict[str, Any]:
    """The person query's body cut to the field groups granted."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        group = STATUS_GROUPS.get(key)
        if group is None or (group and group not in groups):
            continue
        out[key] = value
    if "explanations" not in groups:
        for key in ("responsible_council", "responsible_commissioner", "coordinating_council", "next_review"):
            if isinstance(out.get(key), dict):
                out[key] = {k: v for k, v in out[key].items() if k not in _WHY_KEYS}
        if isinstance(out.get("pending_reviews"), list):
            out["pending_reviews"] = [{k: v for k, v in r.items() if k not in _WHY_KEYS} if isinstance(r, dict) else r
                                      for r in out["pending_reviews"]]
    return out


@dataclass(frozen=True, slots=True)
class ReadGrant:
    groups: frozenset[str]
    agreement_id: str | None


class AccessPolicy:
    def __init__(self, ref: ReferenceData) -> None:
        self._ref = ref

    def trust_of(self, hospital_ods: str) -> str | None:
        return self._ref.hospital_trust(hospital_ods)

    def holder_of(self, party: str, kind: DisputeKind, on: date) -> str | None:
        """The body holding a dispute party's duties on `on` (hub/domain/succession.py)."""
        return duty_holder(self._ref, party, kind, on)

    def facts(self, status: S117Status | None, history: Iterable[RegisterChange],
              up_to: date | None = None) -> PersonFacts:
        return person_facts(status, history, self.trust_of, up_to, self.holder_of)

    def decide_write(self, client: Any, change_type: ChangeType, hospital_ods: str | None,
                     person: PersonFacts | None, channel: str) -> Decision:
        trust = self.trust_of(hospital_ods) if hospital_ods else None
        return decide_write(caller_of(client), change_type, trust, bool(hospital_ods), person, channel)

    @staticmethod
    def read_grant(sharing: SharingAgreements, client: Any, on: date) -> ReadGrant:
        """The field groups the caller's agreements in force allow (their union)."""
        if "hub:admin" in client.scopes:  # the operator reads everything (audited): the push groups and funding
            from hub.fhir.messages import FIELD_GROUPS
            from hub.sharing import FUNDING
            return ReadGrant(frozenset(FIELD_GROUPS) | {FUNDING}, "hub:admin")
        grants = [g for g in sharing.grants_for(client.org_code) if g.in_force(on)]
        if not grants:
            return ReadGrant(frozenset(), None)
        return ReadGrant(frozenset().union(*(g.field_groups for g in grants)),
                         ",".join(sorted({g.agreement_id for g in grants})))


def refusal_body(decision: Decision) -> tuple[str, str]:
    """(problem type suffix, detail) for a refused write."""
    return "forbidden-" + decision.rule.value, TEXTS[decision.rule]


_INSERT_DECISION = access_decisions.insert()  # built once: one per change written


async def record_decision(
    conn: AsyncConnection, client: Any, *, channel: str, action: str, decision: Decision | None = None,
    allowed: bool | None = None, rule: Rule | str | None = None, role: Role | None = None,
    person_id: str | None = None, change_type: str | None = None, agreement_id: str | None = None,
    field_groups: Iterable[str] | None = None, as_of: date | None = None, correlation_id: str | None = None,
    person_ids: Iterable[str] | None = None,
) -> None:
    """One decision in `access_decisions`; with `person_ids`, the same decision once for each of those
    people (a read naming many: one executemany)."""
    if decision is not None:
        allowed, rule, role = decision.allowed, decision.rule, decision.role
    # A parameter dict, not .values(): the statement is compiled once, and in
    # an ingest batch the rows go out as one executemany (group_commit).
    row = dict(
        at=datetime.now(UTC), client_id=client.client_id[:64], org_code=client.org_code[:16], channel=channel,
        action=action, change_type=change_type, person_id=person_id,
        decision="allowed" if allowed else "denied", rule=str(rule), role=str(role) if role else None,
        agreement_id=agreement_id, field_groups=sorted(field_groups) if field_groups is not None else None,
        as_of=as_of, correlation_id=(correlation_id or "")[:64] or None,
    )
    if person_ids is None:
        await conn.execute(_INSERT_DECISION, row)
    else:
        await conn.execute(_INSERT_DECISION, [row | {"person_id": p} for p in person_ids])
