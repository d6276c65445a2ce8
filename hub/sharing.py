"""Data-sharing agreements: which organisation may receive which events, and
which field groups of them. Deny by default: an organisation, event type or
field group that no agreement in force names is not disclosed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from datetime import date
from pathlib import Path

import yaml

from hub.domain.drift import DriftThreshold, strictest
from hub.domain.model import EventType

WILDCARD = "*"
# Event types that correct what a recipient was told: owed under any agreement in force (`_decide`).
_CORRECTIONS = frozenset({EventType.NOTIFICATION_CORRECTED.value, EventType.CHILD_NOTICE_WITHDRAWN.value,
                          EventType.CHILD_NOTICE_CORRECTED.value})
# Explanations name the responsible bodies ("council: Buckinghamshire, ..."), so
# an agreement cannot grant them while withholding who is responsible.
GROUP_REQUIRES = {"explanations": frozenset({"responsibility"}), "funding": frozenset({"responsibility"})}
# The field group a child's detention's own fields (`expected_stay_weeks`, `ehc_plan_la_gss`:
# hub/domain/children.py) are disclosed under: facts of the detention, told on the detention Encounter
# (Extension-S117-ExpectedStayWeeks, Extension-S117-EhcPlanCouncil) and in a children's notice's
# S117-ChildNotice `expectedStayWeeks` (hub/children.py). A recipient not granted it gets neither.
CHILD_FIELDS_GROUP = "legal-status"
# Costs, providers and funding splits of a person's aftercare packages (the
# person query's `funding` part, recharge statements): never implied by any
# other group, an agreement must name it.
FUNDING = "funding"


_ANSWERS_KEPT = 4096  # decisions (and field groups) kept per agreements object, the least recently asked dropped


# The safe loader in C (libyaml, with PyYAML's own wheels): the same documents and errors (line and column),
# about ten times faster than the pure Python one; every hub start reads the agreements files.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class AgreementFileError(ValueError):
    """The agreements file is malformed; the message names the entry and field."""


@dataclass(frozen=True, slots=True)
class Grant:
    agreement_id: str
    org_code: str
    events: frozenset[str]
    field_groups: frozenset[str]
    valid_from: date | None
    valid_to: date | None
    # The recipient's drift alert threshold (recipients[].reconciliation; hub/domain/drift.py), if any.
    drift: DriftThreshold | None = None

    def in_force(self, on: date) -> bool:
        return (self.valid_from is None or self.valid_from <= on) and (self.valid_to is None or on <= self.valid_to)

    def covers(self, event_type: str) -> bool:
        return WILDCARD in self.events or event_type in self.events


@dataclass(frozen=True, slots=True)
class SharingDecision:
    allowed: bool
    agreement_id: str | None
    field_groups: frozenset[str]
    reason: str


class SharingAgreements:
    """The agreements in force: one object per hub process, held by everything
    that decides disclosure (the dispatcher, the deliverers, feeds, reads,
    council files, drift alerts, statements). A reload of the agreements file
    (hub/agreements_watch.py) swaps the grants *in place* (`replace_grants`),
    so every holder asks the new ones from its next question on."""

    def __init__(self, grants: list[Grant]) -> None:
        self._by_org: dict[str, list[Grant]] = _index(grants)
        # Bumped by each `replace_grants`: a holder that keeps answers of its
        # own worked out from these (the dispatcher's views of a status, kept
        # from batch to batch) drops them when it changes.
        self.generation = 0
        # Answers kept per question: the dispatcher asks the same few
        # (organisation, event type, day) thousands of times a second. The
        # two questions are the caches themselves (`decide(org_code,
        # event_type, on)`, `field_groups_for(org_code, on)`), not methods
        # calling them: a Python call fewer an answer (bench/JOURNAL.md,
        # "Twenty-seventh session: the dispatcher's calls an event").
        # `replace_grants` clears them (the same two objects: an alias of
        # either one sees the new grants too).
        self.decide: Callable[[str, str, date], SharingDecision] = lru_cache(maxsize=_ANSWERS_KEPT)(self._decide)
        self.field_groups_for: Callable[[str, date], frozenset[str]] = \
            lru_cache(maxsize=_ANSWERS_KEPT)(self._field_groups_for)

    def replace_grants(self, other: "SharingAgreements") -> None:
        """Take `other`'s grants in place of these (a reload of the agreements
        file), and forget every answer kept. No await in between: on the event
        loop, every question asked after this call is answered from the new
        grants, none from a mix (nothing calls these from another thread)."""
        self._by_org = other._by_org
        self.generation += 1
        self.decide.cache_clear()  # type: ignore[attr-defined]
        self.field_groups_for.cache_clear()  # type: ignore[attr-defined]

    def by_agreement(self) -> dict[str, frozenset[Grant]]:
        """Every grant by its agreement id (what a reload compares: hub/agreements_watch.py)."""
        out: dict[str, set[Grant]] = {}
        for grants in self._by_org.values():
            for g in grants:
                out.setdefault(g.agreement_id, set()).add(g)
        return {k: frozenset(v) for k, v in out.items()}

    def _decide(self, org_code: str, event_type: str, on: date) -> SharingDecision:
        """What `org_code` may be told of an event of `event_type` on `on` (`decide`, kept per question)."""
        grants = [g for g in self._by_org.get(org_code, []) if g.in_force(on)]
        if not grants:
            return SharingDecision(False, None, frozenset(), "no data-sharing agreement in force names this organisation")
        if event_type in _CORRECTIONS:
            # A correction of what was disclosed is owed to every recipient
            # of it (UK GDPR Art. 19): any agreement in force covers it, with
            # the field groups that agreement grants. A children's notice
            # withdrawn or corrected is one (hub/children.py: sent only to a council the
            # notice went to).
            matching = grants
        else:
            matching = [g for g in grants if g.covers(event_type)]
        if not matching:
            return SharingDecision(
                False, grants[0].agreement_id, frozenset(),
                f"agreement {grants[0].agreement_id} does not cover event type {event_type}",
            )
        # Several agreements may cover an event: the recipient gets the union
        # of what they allow, and the audit names each one.
        groups = frozenset().union(*(g.field_groups for g in matching))
        ids = ",".join(sorted({g.agreement_id for g in matching}))
        return SharingDecision(True, ids, groups, f"allowed by {ids}")

    def _field_groups_for(self, org_code: str, on: date) -> frozenset[str]:
        """Every field group any agreement in force grants the organisation (`field_groups_for`, kept per question)."""
        return frozenset().union(*(g.field_groups for g in self._by_org.get(org_code, []) if g.in_force(on)))

    def grants_group(self, org_code: str, group: str, on: date) -> bool:
        """Whether an agreement in force on `on` grants `org_code` the field group `group`."""
        return any(g.in_force(on) and group in g.field_groups for g in self._by_org.get(org_code, []))

    def drift_threshold(self, org_code: str, on: date) -> DriftThreshold | None:
        """The body's drift alert threshold from its agreements in force on `on`
        (the strictest where several set one); None: no alerts."""
        return strictest(g.drift for g in self._by_org.get(org_code, []) if g.in_force(on))

    def grants_for(self, org_code: str) -> list[Grant]:
        return list(self._by_org.get(org_code, []))

    def names_in_force(self, org_code: str, on: date) -> bool:
        """Whether any agreement in force on `on` names the organisation."""
        return any(g.in_force(on) for g in self._by_org.get(org_code, ()))

    @classmethod
    def load(cls, path: Path, known_field_groups: frozenset[str] | None = None) -> "SharingAgreements":
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AgreementFileError(f"{path.name}: cannot be read as YAML ({type(exc).__name__})") from exc
        return cls.parse(data, path.name, known_field_groups)

    @classmethod
    def parse(cls, data: bytes, name: str, known_field_groups: frozenset[str] | None = None) -> "SharingAgreements":
        """The agreements file's bytes (`name`: the file's, for the error), checked as `load` checks them."""
        try:
            doc = yaml.load(data.decode(), Loader=YAML_LOADER)  # noqa: S506 - a safe loader
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            # Where, never what: the parser's own text quotes the file's content.
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise AgreementFileError(f"{name}: cannot be read as YAML ({type(exc).__name__}{at})") from exc
        return cls.from_document(doc, known_field_groups)

    @classmethod
    def from_document(cls, doc: object, known_field_groups: frozenset[str] | None = None) -> "SharingAgreements":
        if not isinstance(doc, dict) or not isinstance(doc.get("agreements"), list):
            raise AgreementFileError("top level: must be a mapping with a list 'agreements'")
        known_events = {e.value for e in EventType} | {WILDCARD}
        grants: list[Grant] = []
        for i, ag in enumerate(doc["agreements"]):
            where = f"agreements[{i}]"
            if not isinstance(ag, dict) or not ag.get("id"):
                raise AgreementFileError(f"{where}.id: is required")
            where = f"agreement {ag['id']}"
            valid_from = _date(ag.get("valid_from"), f"{where}.valid_from")
            valid_to = _date(ag.get("valid_to"), f"{where}.valid_to")
            for j, rec in enumerate(ag.get("recipients") or []):
                rw = f"{where} recipients[{j}]"
                org = rec.get("org_code") if isinstance(rec, dict) else None
                if not org:
                    raise AgreementFileError(f"{rw}.org_code: is required")
                events = frozenset(rec.get("events") or [])
                bad = events - known_events
                if bad:
                    raise AgreementFileError(f"{rw}.events: unknown event type(s) {sorted(bad)}")
                groups = frozenset(rec.get("field_groups") or [])
                if known_field_groups is not None and groups - known_field_groups:
                    raise AgreementFileError(f"{rw}.field_groups: unknown group(s) {sorted(groups - known_field_groups)}")
                for group, needs in GROUP_REQUIRES.items():
                    if group in groups and not needs <= groups:
                        raise AgreementFileError(
                            f"{rw}.field_groups: '{group}' names the responsible bodies, so it needs "
                            f"{sorted(needs)} granted too"
                        )
                drift = None
                if rec.get("reconciliation") is not None:
                    if not isinstance(rec["reconciliation"], dict):
                        raise AgreementFileError(f"{rw}.reconciliation: must be a mapping with "
                                                 "drift_alert_open_items and/or drift_alert_percent")
                    try:
                        drift = DriftThreshold.from_mapping(rec["reconciliation"])
                    except ValueError as exc:
                        raise AgreementFileError(f"{rw}.reconciliation.{exc}") from exc
                grants.append(Grant(
                    agreement_id=str(ag["id"]), org_code=str(org), events=events, field_groups=groups,
                    valid_from=valid_from, valid_to=valid_to, drift=drift,
                ))
        return cls(grants)


def _index(grants: list[Grant]) -> dict[str, list[Grant]]:
    by_org: dict[str, list[Grant]] = {}
    for g in grants:
        by_org.setdefault(g.org_code, []).append(g)
    return by_org


def _date(value: object, where: str) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise AgreementFileError(f"{where}: is not an ISO date") from exc


# --- at the time of disclosure ------------------------------------------------
# A message is queued under the decision of the day it was dispatched, and sent
# (or handed out by a feed) later: behind a slow or failing endpoint, days
# later. Disclosure rests on an agreement in force when it happens, so every
# channel asks again just before it sends (hub.delivery.leases, hub/api/feeds.py).

# `Withheld.kind`: why a queued message is held rather than sent.
NO_AGREEMENT = "no-agreement"  # no agreement in force names the organisation any more
NOT_COVERED = "event-type"  # an agreement in force, but none covers the event type
NARROWED = "field-groups"  # covered, but with fewer field groups than the message carries


@dataclass(frozen=True, slots=True)
class Withheld:
    """Why a queued message may not be disclosed now (`DisclosureCheck.withheld`)."""

    kind: str  # NO_AGREEMENT, NOT_COVERED or NARROWED
    agreement_id: str | None
    reason: str  # for the `denied` disclosure row: names the agreement and what changed, nothing personal


class DisclosureCheck:
    """The agreements' decision at the time of disclosure, for one batch of
    queued messages: `decide(org, event_type, on)`, the dispatcher's own
    question, asked once per (organisation, event type) of the batch (and
    kept by the agreements object per day besides). Build one per batch with
    the hub's agreements object and today's date: a reload while a batch is
    in hand shows from the next batch on (`_decided` keeps this batch's)."""

    __slots__ = ("_sharing", "_on", "_decided")

    def __init__(self, sharing: SharingAgreements, on: date) -> None:
        self._sharing = sharing
        self._on = on
        self._decided: dict[tuple[str, str], SharingDecision] = {}

    @property
    def sharing(self) -> SharingAgreements:
        """The agreements asked."""
        return self._sharing

    def withheld(self, org_code: str, event_type: str, carried: Iterable[str] | None) -> Withheld | None:
        """None if the message may go now; else why not. `carried`: the field
        groups the message was rendered with (its `allowed` disclosure's, kept
        on its delivery row: `deliveries.field_groups`), None when unknown
        (then only whether the event type is allowed is asked).
        The field groups can only narrow: a message carrying a group the
        agreement in force no longer grants is held, never re-rendered."""
        key = (org_code, event_type)
        decision = self._decided.get(key)
        if decision is None:
            decision = self._decided[key] = self._sharing.decide(org_code, event_type, self._on)
        if not decision.allowed:
            if decision.agreement_id is None:
                return Withheld(NO_AGREEMENT, None,
                                f"agreement no longer in force at the time of delivery: {decision.reason}")
            return Withheld(NOT_COVERED, decision.agreement_id,
                            f"agreement in force at the time of delivery no longer allows it: {decision.reason}")
        if carried is not None and not decision.field_groups.issuperset(carried):
            lost = sorted(set(carried) - decision.field_groups)
            return Withheld(NARROWED, decision.agreement_id,
                            f"agreement in force at the time of delivery ({decision.agreement_id}) no longer "
                            f"grants field group(s) {', '.join(lost)} the message carries")
        return None

    def moved_from(self, org_code: str, event_type: str, queued_on: date) -> tuple[SharingDecision, str | None] | None:
        """For a message this check lets go (`withheld` answered None): when the agreement that
        allows it now is not the one that allowed it on the day it was queued (the dispatcher's
        `allowed` disclosure names that one; here as the agreements now loaded tell that day), the
        decision now and that day's agreement id; else None. A message queued on an agreement that
        has since ended and been replaced (a renewed agreement under a new id) is disclosed under the
        new one, and its audit must say so."""
        if queued_on == self._on:
            return None
        key = (org_code, event_type)
        now = self._decided.get(key)
        if now is None:
            now = self._decided[key] = self._sharing.decide(org_code, event_type, self._on)
        if not now.allowed:
            return None
        then = self._sharing.decide(org_code, event_type, queued_on)
        return (now, then.agreement_id) if then.agreement_id != now.agreement_id else None

    def any_in_force(self, org_code: str) -> bool:
        """Whether any agreement in force names the organisation (else a feed is refused whole)."""
        return self._sharing.names_in_force(org_code, self._on)
