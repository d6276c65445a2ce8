"""Package lines in and out of the store.

A package event (REST or a council-file row) is idempotent per (source,
source_message_id) like a register change (the answer is kept in
ingest_results), validated with named problems, and quarantined when bad.

Who may write a line (README "Roles and access", "Packages and money"),
holding a data-sharing agreement in force that grants `funding` (the group
that reads the line): a start, the person's responsible council or ICB on its
first day (the line is recorded against that pair); a change or an end, a body
of the pair the line is charged to on the change's day (a change: the day it
takes effect; an end: the line's last day): the register's pair that day as the
statements charge it, or an agreed interim share's party (hub/money/
responsibility.py `charged_on`). A package moves with responsibility, and so
does who writes it: the old pair its days before a move, the new pair from the
move. A line is the writer's own (its client's, by `package_id`) unless the
event names the body whose system recorded it (`line_recorded_by`, the person
query's `recorded_by`): the new pair's way to change or end a line it did not
record. The new version keeps the line's key (that source, its package_id, the
next version); who wrote it is the writer's `access_decisions` row and its
answer, kept under its own `source_message_id` (idempotency is per writer).
Anyone else, and a line named that does not exist, gets the answer an unknown
person gets (REST: the one 404; council files: the access policy's one row
error); a body with no relationship to the person on the day is refused before
the line is validated, so nothing of it is kept, not even in quarantine. Every
decision, allowed or refused, is an `access_decisions` row (`hub/access.py`
record_decision: one statement, in the write's own transaction when allowed).
Split decisions (`DecisionService`) likewise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.ids import uuid4
from hub.access import record_decision
from hub.codec import from_jsonable
from hub.crypto import DataProtector
from hub.domain.access import Decision, Role, Rule
from hub.domain.agreements import AgreementBook, NeedTag
from hub.domain.model import RegisterChange, S117Status
from hub.domain.money import (
    Exclusion,
    PackageAction,
    PackageLine,
    PersonDecision,
    Provider,
    Statement,
    apply_action,
    month_bounds,
    statement_for,
)
from hub.domain.ports import ReferenceData
from hub.domain.money.responsibility import (InterimSpan, PairSpan, decisions_ended, pair_on, pair_since,
                                             sides_moved)
from hub.domain.rules import evaluate
from hub.domain.workflows.model import Case
from hub.ingest.nhs_number import nhs_number_problem, normalise
from hub.ingest.service import (PROBLEM_BASE, Client, IngestService, Outcome, payload_sha256, problem, refusal,
                                same_change)
from hub.ingest.validation import FieldProblem, problems_from_pydantic
from hub.money.contract import PackageIn, package_problems
from hub.money.responsibility import (
    CarriedCosts,
    charged_on,
    charged_to,
    in_dispute,
    interim_covers,
    load_interims,
    load_pairs,
    moved_since_start,
    overlapping,
)
from hub.observability.logging import bound_correlation_id, get_logger
from hub.sharing import FUNDING, SharingAgreements
from hub.store.merged import person_id_by_index
from hub.store.schema import (api_clients, care_packages, ingest_results, not_retracted, register_changes,
                              split_decisions)
from hub.domain.dates import england_day

log = get_logger("hub.money")
NOT_FOUND = "no person with that id is on the register for which the caller is responsible"
ATTEMPTS = 3
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2100, 12, 31)  # the contract's dates (hub/money/contract.py)


def funding_agreement(sharing: SharingAgreements | None, client: Client, on: date) -> str | None:
    """The ids of the caller's agreements in force on `on` that grant `funding`, or None."""
    if sharing is None:
        return None
    ids = sorted({g.agreement_id for g in sharing.grants_for(client.org_code)
                  if g.in_force(on) and FUNDING in g.field_groups})
    return ",".join(ids) or None


def responsible_role(status: S117Status | None, org_code: str) -> Role | None:
    """The caller's role as the person's responsible council or ICB in `status`, if any."""
    if status is None:
        return None
    for det, role in ((status.responsible_council, Role.RESPONSIBLE_COUNCIL),
                      (status.responsible_commissioner, Role.RESPONSIBLE_COMMISSIONER)):
        if det is not None and det.org is not None and det.org.code == org_code:
            return role
    return None


def _code(det: Any) -> str | None:
    return det.org.code if det is not None and det.org is not None else None


@dataclass(frozen=True, slots=True)
class _Allowed:
    """A package write the access policy allowed: who, about whom, under which agreement."""

    decision: Decision
    person_id: str
    agreement_id: str
    status: S117Status  # the person's status on the line's effective date


def _person_in(data: dict[str, Any]) -> tuple[str | None, str | None] | None:
    """(person_id, NHS number) of a package event naming its person as the
    contract reads it: exactly one of the two, a person_id of at most 36
    characters or a person object whose nhs_number is a string; else None."""
    pid, person = data.get("person_id"), data.get("person")
    if (pid is None) == (person is None):
        return None
    if pid is not None:
        return (pid, None) if isinstance(pid, str) and len(pid) <= 36 else None
    nhs = person.get("nhs_number") if isinstance(person, dict) else None
    return (None, nhs) if isinstance(nhs, str) else None


def _who_and_when(data: dict[str, Any]) -> tuple[str, str | None, str | None, date] | None:
    """(action, person_id, NHS number, effective date) of a package event, if
    they can be read as the contract reads them; None leaves it to validation."""
    action, who, day = data.get("action"), _person_in(data), data.get("effective_date")
    if action not in ("start", "change", "end") or who is None or not isinstance(day, str):
        return None
    try:
        on = date.fromisoformat(day)
    except ValueError:
        return None
    if not FIRST_DAY <= on <= LAST_DAY:
        return None
    return action, who[0], who[1], on


def _who(data: dict[str, Any]) -> tuple[str | None, str | None] | None:
    """(person_id, NHS number) of a package event whose person can be read
    (one of the two, well formed: a person_id not empty, an NHS number with
    its check digit), whatever else it holds; else None."""
    who = _person_in(data)
    if who is None:
        return None
    pid, nhs = who
    well_formed = bool(pid) if pid is not None else nhs is not None and nhs_number_problem(nhs) is None
    return who if well_formed else None


def line_from_row(r: Any) -> PackageLine:
    return PackageLine(
        source=r.source, package_id=r.package_id, version=r.version, person_id=r.person_id, council=r.council,
        icb=r.icb, paid_by=r.paid_by, service_type=r.service_type, provider=Provider(r.provider_kind, r.provider_code),
        need=NeedTag(r.need), start=r.start_date, end=r.end_date, weekly_cost_pence=r.weekly_cost_pence,
        unit_cost_pence=r.unit_cost_pence,
        units_per_week=Decimal(r.units_per_week) if r.units_per_week is not None else None,
        s117_eligible=r.s117_eligible, exclusion=Exclusion(r.exclusion) if r.exclusion else None,
        s17_leave=r.s17_leave, cohort=r.cohort, recorded_by=getattr(r, "recorded_by", None),
    )


def _row_values(line: PackageLine) -> dict[str, Any]:
    return dict(
        source=line.source, package_id=line.package_id, version=line.version, person_id=line.person_id,
        council=line.council, icb=line.icb, paid_by=line.paid_by, service_type=line.service_type,
        provider_kind=line.provider.kind, provider_code=line.provider.code, need=line.need.value,
        weekly_cost_pence=line.weekly_cost_pence, unit_cost_pence=line.unit_cost_pence,
        units_per_week=str(line.units_per_week) if line.units_per_week is not None else None,
        s117_eligible=line.s117_eligible, exclusion=line.exclusion.value if line.exclusion else None,
        s17_leave=line.s17_leave, cohort=line.cohort, start_date=line.start, end_date=line.end,
    )


def line_json(line: PackageLine) -> dict[str, Any]:
    return {
        "package_id": line.package_id, "version": line.version, "service_type": line.service_type,
        "provider": {"kind": line.provider.kind, "code": line.provider.code}, "need": line.need.value,
        "weekly_cost_pence": str(line.weekly_cost), "unit_cost_pence": line.unit_cost_pence,
        "units_per_week": str(line.units_per_week) if line.units_per_week is not None else None,
        "start": line.start.isoformat(), "end": line.end.isoformat() if line.end else None,
        "s117_eligible": line.s117_eligible, "exclusion": line.exclusion.value if line.exclusion else None,
        "s17_leave": line.s17_leave, "cohort": line.cohort, "paid_by": line.paid_by,
        "council": line.council, "icb": line.icb, "recorded_by": line.recorded_by,
    }


def package_digest(data: Any) -> str:
    """The idempotency digest of a package event, kept with its first answer (`ingest_results.payload_sha256`):
    what the event means as the contract reads it (key order, spacing, the NHS number spaced or not and an
    explicit default or none are one digest). An event the contract refuses has a digest of its own text,
    which no recorded event's matches."""
    try:
        p = PackageIn.model_validate(data)
    except ValidationError:
        return "raw:" + payload_sha256(data if isinstance(data, dict) else {"(body)": repr(data)})
    return _digest_of(p)


def _digest_of(p: PackageIn) -> str:
    canonical = p.model_dump(mode="json", exclude_none=True)
    if p.person is not None:
        canonical["person"] = {"nhs_number": normalise(p.person.nhs_number)}
    return payload_sha256(canonical)


def key_reused(smid: str) -> Outcome:
    """The source message id came before with another payload: another package event, or a register
    change (a council file's RECORD_ID): nothing recorded, nothing quarantined."""
    return problem(
        409, "idempotency-key-reused", "Source message id already used",
        "this source_message_id was already used by this source for a different package event or register "
        "change; nothing was recorded. Send a new event with a new source_message_id, or the same event again "
        "for the first answer",
        errors=[{"field": "source_message_id",
                 "reason": "was already used by this source for a different package event or register change"}],
        correlation_id=bound_correlation_id())


def _replay(row: Any, client: Client, smid: str, digest: str) -> Outcome:
    """A repeat of (source, source_message_id): the first answer if it was this event, else a 409."""
    if not same_change(row.payload_sha256, digest):
        log.info("idempotency key reused with another payload", source=client.client_id, status=409)
        return key_reused(smid)
    return Outcome(row.status_code, {**row.body, "duplicate": True})


_PREVIOUS = (ingest_results.c.status_code, ingest_results.c.body, ingest_results.c.payload_sha256)


def not_found_answer(channel: str, field: str) -> Outcome:
    """The one answer for "no such person", "not yours" and "no agreement":
    council files get the access policy's one row error (as a register change
    row does), REST the packages' 404."""
    if channel.removeprefix("resubmit-") == "file":
        return refusal(Decision(False, Rule.NO_RELATIONSHIP))
    return problem(404, "not-found", "Not found", NOT_FOUND, errors=[{"field": field, "reason": NOT_FOUND}])


async def _audit_write(conn: AsyncConnection, client: Client, channel: str, decision: Decision,
                       person_id: str | None, change_type: str, agreement_id: str | None = None) -> None:
    await record_decision(conn, client, channel=channel, action="write", decision=decision, person_id=person_id,
                          change_type=change_type, agreement_id=agreement_id,
                          field_groups=(FUNDING,) if decision.allowed else None,
                          correlation_id=bound_correlation_id())


class PackageService:
    def __init__(self, engine: AsyncEngine, ref: ReferenceData, agreements: AgreementBook,
                 protector: DataProtector, ingest: IngestService) -> None:
        self._engine, self._ref, self._agreements = engine, ref, agreements
        self._protector, self._ingest = protector, ingest
        # The hub's data-sharing agreements as they are now (hub/bootstrap.py wires
        # it). Unset, no one holds `funding`: nothing is written.
        self.sharing_of: Callable[[], SharingAgreements] | None = None

    def _sharing(self) -> SharingAgreements | None:
        return self.sharing_of() if self.sharing_of is not None else None

    async def status(self, person_id: str, on: date) -> S117Status | None:
        async with self._engine.connect() as conn:
            out = await self.status_in(conn, person_id, on)
            await conn.rollback()
        return out

    async def status_in(self, conn: AsyncConnection, person_id: str, on: date) -> S117Status | None:
        """The person's status on `on`, read in `conn` (None: not on the register)."""
        rows = (await conn.execute(select(register_changes.c.canonical)
                                   .where(register_changes.c.person_id == person_id, not_retracted()))).scalars().all()
        if not rows:
            return None
        return evaluate(person_id, [from_jsonable(RegisterChange, c) for c in rows], self._ref, self._agreements, on)

    async def _person_id(self, p: PackageIn) -> str | None:
        if p.person_id is not None:
            return p.person_id
        assert p.person is not None
        return await self._person_for(p.person.nhs_number)

    async def _person_for(self, nhs_number: str) -> str | None:
        index = self._protector.index(normalise(nhs_number))
        async with self._engine.connect() as conn:
            pid = await person_id_by_index(conn, index)  # a superseded number: the retained person's
            await conn.rollback()
        return pid

    async def _quarantine(self, client: Client, original: bytes, channel: str, problems: list[FieldProblem],
                          smid: str | None) -> Outcome:
        out = await self._ingest.reject_unmapped(client, original, channel, problems, smid)
        return Outcome(out.status_code, {**out.body, "type": PROBLEM_BASE + "invalid-package",
                                         "title": "Package rejected"})

    async def record(self, client: Client, data: Any, original: bytes, channel: str,
                     today: date | None = None) -> Outcome:
        """One package event (`data`: the parsed body, whatever it is). Never
        raises for bad input. A caller holding no agreement in force that
        grants `funding` is refused before anything of the body is read (the
        unknown person's answer, audited, nothing kept): it may write no line
        about anyone, so neither its input nor the time taken to refuse it
        depends on whom the body names."""
        today = today or england_day()
        if funding_agreement(self._sharing(), client, today) is None:
            action = data.get("action") if isinstance(data, dict) else None
            return await self._refuse(client, channel, Decision(False, Rule.NO_AGREEMENT, None), None,
                                      f"package-{action}" if action in ("start", "change", "end") else "package",
                                      "person_id" if isinstance(data, dict) and "person_id" in data
                                      else "person.nhs_number")
        if not isinstance(data, dict):
            return await self._quarantine(client, original, channel, [FieldProblem("(body)", "must be a JSON object")],
                                          None)
        smid = data.get("source_message_id") if isinstance(data.get("source_message_id"), str) else None
        if smid:
            async with self._engine.connect() as conn:
                prev = (await conn.execute(select(*_PREVIOUS).where(
                    ingest_results.c.source == client.client_id, ingest_results.c.source_message_id == smid))).first()
                await conn.rollback()
            if prev is not None:  # the same event again: its first answer; another under the same id: 409
                return _replay(prev, client, smid, package_digest(data))
        # The access policy before validation: nothing of a line the caller may
        # not write is validated or kept (only an event too malformed to say
        # whom and which day it is about goes to validation first).
        allowed: _Allowed | None = None
        found = _who_and_when(data)
        if found is not None:
            action, pid, nhs, on = found
            decided = await self._decide(client, channel, action, pid, nhs, on, today)
            if isinstance(decided, Outcome):
                return decided
            allowed = decided
        elif (who := _who(data)) is not None:
            # The person can be read but not the action or the day: asked as of
            # today whether the caller is responsible at all. Someone else's
            # person gets the unknown person's answer and nothing is kept; the
            # allowed caller's line then meets validation (decided again below).
            refused = await self._decide(client, channel, "unknown", who[0], who[1], today, today)
            if isinstance(refused, Outcome):
                return refused
        try:
            p = PackageIn.model_validate(data)
        except ValidationError as exc:
            problems = [FieldProblem(f.field, "is not a field of the package contract")
                        if f.reason == "is not a field of the register change contract" else f
                        for f in problems_from_pydantic(exc)]
            return await self._quarantine(client, original, channel, problems, smid)
        problems = package_problems(p)
        if problems:
            return await self._quarantine(client, original, channel, problems, smid)
        if allowed is None:
            person = p.person.nhs_number if p.person is not None else None
            decided = await self._decide(client, channel, p.action, p.person_id, person, p.effective_date, today)
            if isinstance(decided, Outcome):
                return decided
            allowed = decided
        council, icb = _code(allowed.status.responsible_council), _code(allowed.status.responsible_commissioner)
        if p.action == "start" and (council is None or icb is None):
            async with self._engine.begin() as conn:
                await _audit_write(conn, client, channel, allowed.decision, allowed.person_id, "package-start",
                                   allowed.agreement_id)
            return await self._quarantine(client, original, channel, [FieldProblem(
                "effective_date", "the person has no responsible council and ICB on this date: a package is "
                                  "funded by the pair responsible when it starts")], smid)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await self._write(client, p, allowed, council or "", icb or "", original, channel)
            except IntegrityError:
                if attempt == ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def _decide(self, client: Client, channel: str, action: str, person_id: str | None,
                      nhs_number: str | None, on: date, today: date) -> _Allowed | Outcome:
        """May the caller write a line about the person from `on`? Allowed: the
        person's responsible council or ICB on `on` (for a change or an end, also
        a body some line of the person may be charged to on `on`: `_charged_role`;
        the line itself is checked in `_write`), with `funding` granted by an
        agreement in force today. Refused: audited, and the unknown person's answer."""
        pid = person_id if person_id is not None else await self._person_for(nhs_number or "")
        status = await self.status(pid, on) if pid else None
        role = responsible_role(status, client.org_code)
        if role is None and status is not None and pid is not None and action in ("change", "end"):
            role = await self._charged_role(pid, client.org_code, on)
        agreement = funding_agreement(self._sharing(), client, today) if role is not None else None
        if status is None or role is None or agreement is None:
            decision = Decision(False, Rule.NO_AGREEMENT if role is not None else Rule.NO_RELATIONSHIP, role)
            return await self._refuse(client, channel, decision, pid if status is not None else None,
                                      f"package-{action}", "person_id" if person_id is not None
                                      else "person.nhs_number")
        assert pid is not None
        return _Allowed(Decision(True, Rule.ALLOWED, role), pid, agreement, status)

    async def _charged_role(self, person_id: str, org_code: str, on: date) -> Role | None:
        """The caller's role as a body the person's lines may be charged to on `on`
        though the register does not name it responsible then as the rules read it
        (money counts a resolution from its notice: hub/domain/money/responsibility.py;
        an agreed interim share's party): a change from `on` or an end on `on` may
        be its to write. Which line, and whether that line is charged to it on
        `on`, is decided when it is written (`_write`)."""
        async with self._engine.connect() as conn:
            first = (await conn.execute(select(func.min(care_packages.c.start_date)).where(
                care_packages.c.person_id == person_id))).scalar()
            if first is None:
                await conn.rollback()
                return None
            pairs = (await load_pairs(conn, [person_id], min(first, on), on, self._ref,
                                      self._agreements)).get(person_id, ())
            interims = (await load_interims(conn, [person_id])).get(person_id, ())
            await conn.rollback()
        (council, icb), _ = pair_on(pairs, on, ("", ""))
        if org_code == council:
            return Role.RESPONSIBLE_COUNCIL
        if org_code == icb:
            return Role.RESPONSIBLE_COMMISSIONER
        if any(i.covers(on) and (org_code == i.lead_body or org_code in dict(i.shares)) for i in interims):
            return Role.DISPUTE_PARTY
        return None

    async def _refuse(self, client: Client, channel: str, decision: Decision, person_id: str | None,
                      change_type: str, field: str, conn: AsyncConnection | None = None) -> Outcome:
        """Audit a refused write (in `conn`, else alone) and answer as for an unknown person."""
        if conn is not None:
            await _audit_write(conn, client, channel, decision, person_id, change_type)
        else:
            async with self._engine.begin() as own:
                await _audit_write(own, client, channel, decision, person_id, change_type)
        log.info("package refused by the access policy", source=client.client_id, channel=channel,
                 change_type=change_type, reason_codes=[decision.rule.value])
        return not_found_answer(channel, field)

    async def _write(self, client: Client, p: PackageIn, allowed: _Allowed, council: str, icb: str,
                     original: bytes, channel: str) -> Outcome:
        now = datetime.now(UTC)
        person_id, change_type = allowed.person_id, f"package-{p.action}"
        digest = _digest_of(p)
        async with self._engine.begin() as conn:
            c = care_packages.c
            if p.line_recorded_by is None:  # the sender's own line
                q = select(care_packages).where(c.source == client.client_id, c.package_id == p.package_id)
            else:  # the line with this id that the named body's systems recorded for the person
                q = select(care_packages).select_from(care_packages.join(
                    api_clients, api_clients.c.client_id == c.source)).where(
                    api_clients.c.org_code == p.line_recorded_by, c.person_id == person_id,
                    c.package_id == p.package_id)
            found: dict[str, list[PackageLine]] = {}
            for r in (await conn.execute(q.order_by(c.source, c.version))).all():
                found.setdefault(r.source, []).append(line_from_row(r))
            # The same id answered since `record` looked (the same event sent several times at once): its first
            # answer, not the event applied again (a start "already started" and quarantined, a change a second
            # version). Read after the line's versions: a version committed before that read came with its
            # answer (one transaction), and under READ COMMITTED this later statement sees it too; one committed
            # after it makes this transaction's own write fail on the line's key, and the retry comes back here.
            prev = (await conn.execute(select(*_PREVIOUS).where(
                ingest_results.c.source == client.client_id,
                ingest_results.c.source_message_id == p.source_message_id))).first()
            if prev is not None:
                return _replay(prev, client, p.source_message_id, digest)
            # Who may change the line from its day or end it on its last day: a body of the pair it is charged
            # to that day (the register's, as the statements charge it, or an interim share's party): the old
            # pair for its days before a move, the new pair from the move (README "Packages and money").
            charged: dict[str, list[PackageLine]] = {}
            if found:
                first = min(v[0].start for v in found.values())
                pairs = (await load_pairs(conn, [person_id], min(first, p.effective_date),
                                          max(first, p.effective_date), self._ref,
                                          self._agreements)).get(person_id, ())
                interims = (await load_interims(conn, [person_id])).get(person_id, ())
                charged = {src: v for src, v in found.items()
                           if client.org_code in charged_on(v[-1], pairs, interims, p.effective_date)}
            own = p.line_recorded_by is None
            versions = found.get(client.client_id, []) if own else next(iter(charged.values()), [])
            if own and versions and versions[-1].person_id != person_id:
                problems = [FieldProblem("package_id", "belongs to another person: a line id is the sender's, "
                                                       "for one person")]
            elif (own and versions and client.client_id not in charged) or (not own and not charged):
                # A change or an end of a line not charged to the writer's pair on its day, or a line named as
                # another body's that is not charged to it then (or that does not exist): the unknown person's
                # answer, nothing kept.
                refused = Decision(False, Rule.NO_RELATIONSHIP)
                return await self._refuse(client, channel, refused, person_id, change_type,
                                          "person_id" if p.person_id is not None else "person.nhs_number", conn)
            elif not own and len(charged) > 1:
                problems = [FieldProblem("line_recorded_by", "names more than one line with this package_id for "
                                                             "the person (recorded by more than one of that body's "
                                                             "systems): the line cannot be told apart")]
            else:
                if versions:  # the answer names the pair the line is charged to
                    council, icb = versions[-1].council, versions[-1].icb
                new = None
                if p.action == "start":
                    new = PackageLine(
                        source=client.client_id, package_id=p.package_id, version=1, person_id=person_id,
                        council=council, icb=icb, paid_by=p.paid_by or ("icb" if client.org_kind == "icb" else "council"),
                        service_type=p.service_type or "", provider=Provider(p.provider.kind, p.provider.code),
                        need=NeedTag(p.need), start=p.effective_date, end=p.end_date,
                        weekly_cost_pence=p.weekly_cost_pence, unit_cost_pence=p.unit_cost_pence,
                        units_per_week=p.units_per_week,
                        s117_eligible=True if p.s117_eligible is None else p.s117_eligible,
                        exclusion=Exclusion(p.exclusion) if p.exclusion else None,
                        s17_leave=bool(p.s17_leave), cohort=p.cohort or "adult")
                changes: dict[str, Any] = {}
                if p.action == "change":
                    for f in ("service_type", "weekly_cost_pence", "unit_cost_pence", "units_per_week",
                              "s117_eligible", "s17_leave", "cohort", "paid_by"):
                        if getattr(p, f) is not None:
                            changes[f] = getattr(p, f)
                    if p.provider is not None:
                        changes["provider"] = Provider(p.provider.kind, p.provider.code)
                    if p.need is not None:
                        changes["need"] = NeedTag(p.need)
                    if p.exclusion is not None:
                        changes["exclusion"] = Exclusion(p.exclusion)
                    if p.end_date is not None:
                        changes["end"] = p.end_date
                written, found = apply_action(versions, PackageAction(p.action), p.effective_date, new, changes)
                problems = [FieldProblem(x.field, x.reason) for x in found]
            if not problems:
                ids = []
                for line in written:
                    values = {**_row_values(line), "source_message_id": p.source_message_id, "recorded_at": now}
                    if versions and line.version == versions[-1].version:
                        await conn.execute(care_packages.update().where(
                            care_packages.c.source == line.source, care_packages.c.package_id == line.package_id,
                            care_packages.c.version == line.version).values(end_date=line.end))
                    else:
                        await conn.execute(care_packages.insert().values(**values))
                    ids.append(line.version)
                body = {"status": "recorded", "package_id": p.package_id, "action": p.action,
                        "person_id": person_id, "versions": ids, "council": council, "icb": icb}
                if p.line_recorded_by is not None:  # another body's line: the answer (kept) names it
                    body["line_recorded_by"] = p.line_recorded_by
                await conn.execute(ingest_results.insert().values(
                    source=client.client_id, source_message_id=p.source_message_id, status_code=201, body=body,
                    payload_sha256=digest, created_at=now))
            # Allowed, and audited as such also when the line's own problems hold it in quarantine.
            await _audit_write(conn, client, channel, allowed.decision, person_id, change_type,
                               allowed.agreement_id)
        if problems:
            return await self._quarantine(client, original, channel, problems, p.source_message_id)
        log.info("package recorded", source=client.client_id, channel=channel, change_type=f"package-{p.action}")
        return Outcome(201, body)

    # ------------------------------------------------------------- reads

    async def funding_for(self, person_id: str, org: str | None, as_of: date | None) -> tuple[
            list[PackageLine], list[PersonDecision], tuple[InterimSpan, ...]]:
        """What the person query's `funding` part shows `org` (None: the hub
        operator): the line versions begun by `as_of` (all, without one) and
        charged to a pair `org` belongs to on some day up to then (`charged_to`:
        both bodies of a pair see the pair's lines, the new pair a line the
        register moved to it from the day it did); the decisions in force by
        then of a pair `org` belongs to; the agreed interim shares `org` is party to or that cover a line it sees."""
        q = select(care_packages, api_clients.c.org_code.label("recorded_by")).select_from(care_packages.outerjoin(
            api_clients, api_clients.c.client_id == care_packages.c.source)).where(
            care_packages.c.person_id == person_id)
        if as_of is not None:
            q = q.where(care_packages.c.start_date <= as_of)
        async with self._engine.connect() as conn:
            lines = [line_from_row(r) for r in (await conn.execute(
                q.order_by(care_packages.c.package_id, care_packages.c.version))).all()]
            interims = (await load_interims(conn, [person_id])).get(person_id, ())
            pairs: tuple[PairSpan, ...] = ()
            if org is not None and lines:
                pairs = (await load_pairs(conn, [person_id], min(line.start for line in lines), as_of or LAST_DAY,
                                          self._ref, self._agreements)).get(person_id, ())
            await conn.rollback()
        decisions = (await self.decisions([person_id])).get(person_id, [])
        if as_of is not None:
            decisions = [d for d in decisions if d.effective_from <= as_of]
        if org is not None:
            # A split is its pair's (Worcs 8.5, A2.3): shown to the two bodies that agreed it, not to a body
            # that took over from one of them (its days follow its own pair's arrangement).
            decisions = [d for d in decisions if org in (d.council, d.icb)]
            lines = [line for line in lines if org in charged_to(line, pairs, interims, as_of)]
            interims = tuple(i for i in interims if org == i.lead_body or org in dict(i.shares)
                             or any(interim_covers(i, line, as_of) for line in lines))
        return lines, decisions, interims

    async def lines_for_pair(self, council: str, icb: str, first: date, last: date) -> list[PackageLine]:
        q = select(care_packages).where(
            care_packages.c.council == council, care_packages.c.icb == icb, care_packages.c.start_date <= last,
            or_(care_packages.c.end_date.is_(None), care_packages.c.end_date >= first))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(q)).all()
            await conn.rollback()
        return [line_from_row(r) for r in rows]

    async def all_lines(self, first: date, last: date) -> list[PackageLine]:
        q = select(care_packages).where(care_packages.c.start_date <= last, or_(
            care_packages.c.end_date.is_(None), care_packages.c.end_date >= first))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(q)).all()
            await conn.rollback()
        return [line_from_row(r) for r in rows]

    async def statement(self, month: str, council: str, icb: str) -> Statement:
        """The pair's recharge statement for `month`: the lines recorded
        against the pair, and the lines of anyone the register may have moved
        to or from it since they started, or with a dispute case; each day
        charged to the pair responsible that day (or by agreed interim
        shares)."""
        first, last = month_bounds(month)
        recorded = and_(care_packages.c.council == council, care_packages.c.icb == icb)
        q = select(care_packages).where(overlapping(first, last), or_(recorded, moved_since_start(last),
                                                                       in_dispute()))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(q)).all()
            lines = [line_from_row(r) for r in rows]
            pairs, interims = await self._moves(conn, first, last)
            await conn.rollback()
        decisions = await self.decisions({line.person_id for line in lines})
        return statement_for(month, council, icb, lines, self._agreements.funding_history,
                             lambda pid: decisions.get(pid, ()), lambda pid: pairs.get(pid, ()),
                             lambda pid: interims.get(pid, ()))

    async def _moves(self, conn: AsyncConnection, first: date, last: date) -> tuple[
            dict[str, tuple[PairSpan, ...]], dict[str, tuple[InterimSpan, ...]]]:
        # Only people with a change after a line started, or a dispute, need the register.
        others = (await conn.execute(select(care_packages.c.person_id).distinct().where(
            overlapping(first, last), or_(moved_since_start(last), in_dispute())))).scalars().all()
        return (await load_pairs(conn, others, first, last, self._ref, self._agreements),
                await load_interims(conn, others))

    async def moves(self, first: date, last: date) -> tuple[
            dict[str, tuple[PairSpan, ...]], dict[str, tuple[InterimSpan, ...]]]:
        """Who is charged whose lines between `first` and `last`, where not the recorded pair."""
        async with self._engine.connect() as conn:
            out = await self._moves(conn, first, last)
            await conn.rollback()
        return out

    async def interim_costs(self, case: Case) -> CarriedCosts | None:
        """The reimbursement hook for a resolved dispute: what each body
        carried over the interim, from the person's packages."""
        if case.resolved_on is None:
            return None
        first, last = case.opened_on, case.resolved_on
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(care_packages).where(
                care_packages.c.person_id == case.person_id, overlapping(first, last)))).all()
            pairs = await load_pairs(conn, [case.person_id], first, last, self._ref, self._agreements)
            interims = await load_interims(conn, [case.person_id])
            await conn.rollback()
        decisions = await self.decisions([case.person_id])
        return CarriedCosts([line_from_row(r) for r in rows], self._agreements, decisions.get(case.person_id, ()),
                            pairs.get(case.person_id, ()), interims.get(case.person_id, ()))

    async def decisions(self, person_ids: Iterable[str] | None = None) -> dict[str, list[PersonDecision]]:
        """The agreed decisions of each person (all, without `person_ids`),
        oldest first, each with the pair that agreed it and the day it ends
        if responsibility has left that pair since (`last`, from the register
        as money sees it: hub/domain/money/responsibility.py decision_last).
        A decision applies only on its own pair's days, and an ended one does
        not come back on a return to its pair (hub/domain/money/splits.py)."""
        q = select(split_decisions).where(split_decisions.c.agreed_at.is_not(None))
        if person_ids is not None:
            q = q.where(split_decisions.c.person_id.in_(list(person_ids)))
        out: dict[str, list[PersonDecision]] = {}
        async with self._engine.connect() as conn:
            rows = (await conn.execute(q.order_by(split_decisions.c.effective_from))).all()
            for r in rows:
                out.setdefault(r.person_id, []).append(PersonDecision(
                    r.person_id, r.kind, r.council_share_bp, r.effective_from, england_day(r.proposed_at),
                    england_day(r.agreed_at), r.council, r.icb, r.reference))
            # The agreement checked the decision's pair over its days as the register stood then
            # (DecisionService.agree), so only a register change effective from its day on, or received
            # since it was proposed, can have moved responsibility away from it: only those people's
            # registers are evaluated (a report reads every decision: as `_moves`, bounded by who moved).
            sd, rc = split_decisions.c, register_changes.c
            since = select(sd.person_id).distinct().where(sd.agreed_at.is_not(None), select(rc.change_id).where(
                rc.person_id == sd.person_id,
                or_(rc.effective_date >= sd.effective_from, rc.received_at >= sd.proposed_at)).exists())
            if person_ids is not None:
                since = since.where(sd.person_id.in_(list(out)))
            moved = set((await conn.execute(since)).scalars()) if out else set()
            firsts = {pid: found[0].effective_from for pid, found in out.items() if pid in moved}
            pairs = await load_pairs(conn, firsts, firsts, LAST_DAY, self._ref, self._agreements)
            await conn.rollback()
        return {pid: list(decisions_ended(found, pairs.get(pid, ()))) for pid, found in out.items()}


class DecisionService:
    """Per-person splits: proposed by one responsible body, in force once the
    other agrees (Worcs 8.5, A2.3); agreed decisions are never changed, and a
    new one takes effect only after the last. Each body must be one of the
    pair responsible now and hold `funding`, as for package lines; every
    decision, allowed or refused, is audited.

    A split divides the costs of the days it covers between the council and
    the ICB jointly responsible on them, so it is for one pair: the register's
    pair on every day from its `effective_from` to the day it is proposed
    (a proposal reaching back past a change of pair is refused, naming the day
    from which it may take effect), and again to the day it is agreed
    (`_covered`). A proposal whose pair the
    register no longer names over those days (responsibility moved since,
    or a late change moved it before) can no longer be agreed, by the body
    that has left or by the one that took its place: `409 responsibility-moved`
    naming the side that moved; the pair responsible now proposes again.

    Agreed, it is recorded with its pair (`council`, `icb`) and divides only
    that pair's days: when responsibility later leaves the pair the split
    ends, the next pair's days follow the next pair's arrangement, and a
    return to the pair does not revive it (a new one is agreed):
    hub/domain/money/splits.py, `PackageService.decisions`."""

    PROPOSE, AGREE = "split-decision-propose", "split-decision-agree"

    def __init__(self, packages: PackageService) -> None:
        self._p = packages

    def _funding(self, client: Client) -> str | None:
        return funding_agreement(self._p._sharing(), client, england_day())

    async def _covered(self, conn: AsyncConnection, person_id: str, effective_from: date,
                       today: date) -> tuple[PairSpan, ...]:
        """The register's pairs over the days between `effective_from` and `today`
        (as money sees the register: hub/money/responsibility.py load_pairs)."""
        first, last = min(effective_from, today), max(effective_from, today)
        return (await load_pairs(conn, [person_id], first, last, self._p._ref,
                                 self._p._agreements)).get(person_id, ())

    async def propose(self, client: Client, data: dict[str, Any], original: bytes) -> Outcome:
        from hub.domain.money.splits import agreement_on, decision_problem
        from hub.money.contract import SplitDecisionIn
        try:
            d = SplitDecisionIn.model_validate(data)
        except ValidationError as exc:
            return await self._p._quarantine(client, original, "rest", problems_from_pydantic(exc), None)
        status = await self._p.status(d.person_id, england_day())
        council, icb = (_code(status.responsible_council), _code(status.responsible_commissioner)) if status \
            else (None, None)
        role = responsible_role(status, client.org_code)
        agreement = self._funding(client) if role is not None else None
        if role is None or agreement is None or council is None or icb is None:
            decision = Decision(False, Rule.NO_AGREEMENT if role is not None and agreement is None
                                else Rule.NO_RELATIONSHIP, role)
            async with self._p._engine.begin() as conn:
                await _audit_write(conn, client, "rest", decision, d.person_id if status else None, self.PROPOSE)
            return problem(404, "not-found", "Not found", NOT_FOUND)
        allowed = Decision(True, Rule.ALLOWED, role)
        agreement_now = agreement_on(self._p._agreements.funding_history(council, icb), d.effective_from)
        problems = []
        reason = decision_problem(agreement_now, d.kind)
        if reason:
            problems.append(FieldProblem("kind", reason))
        async with self._p._engine.connect() as conn:
            spans = await self._covered(conn, d.person_id, d.effective_from, england_day())
            await conn.rollback()
        if sides_moved(spans, (council, icb)):
            # Agreed, it would cover days another pair is responsible for (and could never be agreed).
            since = pair_since(spans, (council, icb))
            problems.append(FieldProblem("effective_from", (
                f"the person's responsible council or ICB changes on {since.isoformat()}: a split is agreed by "
                f"the pair responsible on all the days it covers (Worcs 8.5, A2.3), so it takes effect from "
                f"{since.isoformat()} or later") if since is not None else (
                "the person's responsible council or ICB is another on this date: a split is agreed by the pair "
                "responsible on all the days it covers (Worcs 8.5, A2.3)")))
        last = [x for x in (await self._p.decisions([d.person_id])).get(d.person_id, [])]
        if last and d.effective_from <= last[-1].effective_from:
            problems.append(FieldProblem("effective_from", "must be after the last agreed decision's: an earlier "
                                                           "decision is never rewritten (Worcs 8.5)"))
        if problems:
            async with self._p._engine.begin() as conn:
                await _audit_write(conn, client, "rest", allowed, d.person_id, self.PROPOSE, agreement)
            return await self._p._quarantine(client, original, "rest", problems, None)
        decision_id = uuid4()
        async with self._p._engine.begin() as conn:
            await conn.execute(split_decisions.insert().values(
                decision_id=decision_id, person_id=d.person_id, council=council, icb=icb, kind=d.kind,
                council_share_bp=int(d.council_share_percent * 100), effective_from=d.effective_from,
                reference=d.reference, proposed_by=client.org_code, proposed_at=datetime.now(UTC)))
            await _audit_write(conn, client, "rest", allowed, d.person_id, self.PROPOSE, agreement)
        other = icb if client.org_code == council else council
        log.info("split decision proposed", source=client.client_id, org_code=client.org_code)
        return Outcome(201, {"decision_id": decision_id, "status": "awaiting-agreement", "awaiting": other,
                             "citation": "Worcs 8.5, A2.3"})

    async def agree(self, client: Client, decision_id: str) -> Outcome:
        """The other body agrees. Asked of the pair the register names now and over
        the days the split covers, not only of the pair recorded when it was proposed:
        a body responsible now, holding `funding`, is allowed (audited so) and told
        if the proposal's pair has moved; a party to the proposal that is no longer
        responsible (holding `funding`) is refused (audited no-relationship) and
        told the proposal can no longer be agreed; anyone else gets the unknown
        decision's 404."""
        agreement = self._funding(client)
        today = england_day()
        async with self._p._engine.begin() as conn:
            row = (await conn.execute(select(split_decisions).where(
                split_decisions.c.decision_id == decision_id))).first()
            party = row is not None and client.org_code in (row.council, row.icb)
            status = await self._p.status_in(conn, row.person_id, today) if row is not None else None
            role = responsible_role(status, client.org_code)
            allowed = role is not None and agreement is not None
            # Told what became of the decision: a body allowed, or a party to it (holding `funding`) that is
            # no longer responsible; anyone else learns nothing of it.
            told = allowed or (party and role is None and agreement is not None)
            moved: tuple[str, ...] = ()
            if told:
                assert row is not None
                now = (_code(status.responsible_council), _code(status.responsible_commissioner)) if status \
                    else (None, None)
                spans = await self._covered(conn, row.person_id, row.effective_from, today)
                moved = tuple(side for i, side in enumerate(("council", "icb"))
                              if side in sides_moved(spans, (row.council, row.icb))
                              or now[i] != (row.council, row.icb)[i])
            if not allowed:
                decision = Decision(False, Rule.NO_RELATIONSHIP if role is None else Rule.NO_AGREEMENT, role)
                await _audit_write(conn, client, "rest", decision, row.person_id if row else None, self.AGREE)
            if told and row.agreed_at is not None:
                out = problem(409, "already-agreed", "Already agreed",
                              "this decision is agreed and in force; it is never changed: propose a new one")
            elif moved:
                reason = ("is no longer the body responsible for the person on all the days this split covers "
                          "(from its effective_from): a split is agreed by the pair responsible on them "
                          "(Worcs 8.5, A2.3); it can no longer be agreed: the bodies responsible now propose a "
                          "new one")
                out = problem(409, "responsibility-moved", "Responsibility moved",
                              f"the person's responsible {' and '.join(moved)} changed since this split was "
                              "proposed; propose a new one",
                              errors=[{"field": side, "reason": reason} for side in moved])
            elif not allowed:
                out = problem(404, "not-found", "Not found", "no split decision with that id for this client")
            elif row.proposed_by == client.org_code:
                out = problem(409, "needs-the-other-body", "Needs the other body",
                              "a split needs both bodies: the other one agrees (Worcs 8.5, A2.3)")
            elif (await conn.execute(select(split_decisions.c.decision_id).where(
                    split_decisions.c.person_id == row.person_id, split_decisions.c.agreed_at.is_not(None),
                    split_decisions.c.effective_from >= row.effective_from).limit(1))).first() is not None:
                # Agreed since it was proposed: a decision in force from this day or later. Agreeing this one
                # would rewrite what applied from then (two on one day, or one before the last).
                reason = ("must be after the last agreed decision's: an earlier decision is never rewritten "
                          "(Worcs 8.5); propose a new one")
                out = problem(409, "superseded", "Superseded", f"effective_from {reason}",
                              errors=[{"field": "effective_from", "reason": reason}])
            else:
                out = None
                await conn.execute(split_decisions.update().where(
                    split_decisions.c.decision_id == decision_id, split_decisions.c.agreed_at.is_(None))
                    .values(agreed_by=client.org_code, agreed_at=datetime.now(UTC)))
            if allowed:
                await _audit_write(conn, client, "rest", Decision(True, Rule.ALLOWED, role), row.person_id,
                                   self.AGREE, agreement)
        if out is not None:
            return out
        log.info("split decision agreed", source=client.client_id, org_code=client.org_code)
        return Outcome(200, {"decision_id": decision_id, "status": "agreed",
                             "effective_from": row.effective_from.isoformat(), "council": row.council,
                             "icb": row.icb, "citation": "Worcs 8.5, A2.3"})
