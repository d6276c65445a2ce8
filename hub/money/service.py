"""Package lines in and out of the store.

A package event (REST or a council-file row) is idempotent per (source,
source_message_id) like a register change (the answer is kept in
ingest_results), validated with named problems, and quarantined when bad.
Only the person's responsible council or ICB may write their packages; the
line is funded by the person's responsible pair on its start date.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.codec import from_jsonable
from hub.crypto import DataProtector
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
from hub.domain.money.responsibility import InterimSpan, PairSpan
from hub.domain.rules import evaluate
from hub.domain.workflows.model import Case
from hub.ingest.nhs_number import normalise
from hub.ingest.service import PROBLEM_BASE, Client, IngestService, Outcome, problem
from hub.ingest.validation import FieldProblem, problems_from_pydantic
from hub.money.contract import PackageIn, package_problems
from hub.money.responsibility import CarriedCosts, in_dispute, load_interims, load_pairs, moved_since_start, overlapping
from hub.observability.logging import get_logger
from hub.store.schema import care_packages, ingest_results, persons, register_changes, split_decisions

log = get_logger("hub.money")
NOT_FOUND = "no person with that id is on the register for which the caller is responsible"
ATTEMPTS = 3


def line_from_row(r: Any) -> PackageLine:
    return PackageLine(
        source=r.source, package_id=r.package_id, version=r.version, person_id=r.person_id, council=r.council,
        icb=r.icb, paid_by=r.paid_by, service_type=r.service_type, provider=Provider(r.provider_kind, r.provider_code),
        need=NeedTag(r.need), start=r.start_date, end=r.end_date, weekly_cost_pence=r.weekly_cost_pence,
        unit_cost_pence=r.unit_cost_pence,
        units_per_week=Decimal(r.units_per_week) if r.units_per_week is not None else None,
        s117_eligible=r.s117_eligible, exclusion=Exclusion(r.exclusion) if r.exclusion else None,
        s17_leave=r.s17_leave, cohort=r.cohort,
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
        "council": line.council, "icb": line.icb,
    }


class PackageService:
    def __init__(self, engine: AsyncEngine, ref: ReferenceData, agreements: AgreementBook,
                 protector: DataProtector, ingest: IngestService) -> None:
        self._engine, self._ref, self._agreements = engine, ref, agreements
        self._protector, self._ingest = protector, ingest

    async def status(self, person_id: str, on: date) -> S117Status | None:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(register_changes.c.canonical)
                                       .where(register_changes.c.person_id == person_id))).scalars().all()
            await conn.rollback()
        if not rows:
            return None
        return evaluate(person_id, [from_jsonable(RegisterChange, c) for c in rows], self._ref, self._agreements, on)

    async def _person_id(self, p: PackageIn) -> str | None:
        if p.person_id is not None:
            return p.person_id
        assert p.person is not None
        index = self._protector.index(normalise(p.person.nhs_number))
        async with self._engine.connect() as conn:
            pid = (await conn.execute(select(persons.c.person_id)
                                      .where(persons.c.nhs_number_index == index))).scalar()
            await conn.rollback()
        return pid

    async def _quarantine(self, client: Client, original: bytes, channel: str, problems: list[FieldProblem],
                          smid: str | None) -> Outcome:
        out = await self._ingest.reject_unmapped(client, original, channel, problems, smid)
        return Outcome(out.status_code, {**out.body, "type": PROBLEM_BASE + "invalid-package",
                                         "title": "Package rejected"})

    async def record(self, client: Client, data: dict[str, Any], original: bytes, channel: str,
                     today: date | None = None) -> Outcome:
        """One package event. Never raises for bad input."""
        today = today or datetime.now(UTC).date()
        smid = data.get("source_message_id") if isinstance(data.get("source_message_id"), str) else None
        if smid:
            async with self._engine.connect() as conn:
                prev = (await conn.execute(select(ingest_results.c.status_code, ingest_results.c.body).where(
                    ingest_results.c.source == client.client_id, ingest_results.c.source_message_id == smid))).first()
                await conn.rollback()
            if prev is not None:
                return Outcome(prev.status_code, {**prev.body, "duplicate": True})
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
        person_id = await self._person_id(p)
        status = await self.status(person_id, today) if person_id else None
        responsible = set()
        if status is not None:
            responsible = {d.org.code for d in (status.responsible_council, status.responsible_commissioner)
                           if d is not None and d.org is not None}
        if status is None or client.org_code not in responsible:
            # The same answer as for an unknown person: do not confirm who is on the register.
            return problem(404, "not-found", "Not found", NOT_FOUND, errors=[
                {"field": "person_id" if p.person_id else "person.nhs_number", "reason": NOT_FOUND}])
        at_start = await self.status(person_id, p.effective_date) if p.action == "start" else status
        council = at_start.responsible_council if at_start else None
        icb = at_start.responsible_commissioner if at_start else None
        if council is None or council.org is None or icb is None or icb.org is None:
            return await self._quarantine(client, original, channel, [FieldProblem(
                "effective_date", "the person has no responsible council and ICB on this date: a package is "
                                  "funded by the pair responsible when it starts")], smid)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await self._write(client, p, person_id, council.org.code, icb.org.code, original, channel)
            except IntegrityError:
                if attempt == ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def _write(self, client: Client, p: PackageIn, person_id: str, council: str, icb: str,
                     original: bytes, channel: str) -> Outcome:
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            rows = (await conn.execute(select(care_packages).where(
                care_packages.c.source == client.client_id, care_packages.c.package_id == p.package_id)
                .order_by(care_packages.c.version))).all()
            versions = [line_from_row(r) for r in rows]
            if versions and versions[-1].person_id != person_id:
                problems = [FieldProblem("package_id", "belongs to another person: a line id is the sender's, "
                                                       "for one person")]
            else:
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
                await conn.execute(ingest_results.insert().values(
                    source=client.client_id, source_message_id=p.source_message_id, status_code=201, body=body,
                    created_at=now))
        if problems:
            return await self._quarantine(client, original, channel, problems, p.source_message_id)
        log.info("package recorded", source=client.client_id, channel=channel, change_type=f"package-{p.action}")
        return Outcome(201, body)

    # ------------------------------------------------------------- reads

    async def lines_for_person(self, person_id: str) -> list[PackageLine]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(care_packages).where(care_packages.c.person_id == person_id)
                                       .order_by(care_packages.c.package_id, care_packages.c.version))).all()
            await conn.rollback()
        return [line_from_row(r) for r in rows]

    async def interims_for_person(self, person_id: str) -> tuple[InterimSpan, ...]:
        """The agreed interim shares of the person's disputes, as the statements apply them."""
        async with self._engine.connect() as conn:
            found = await load_interims(conn, [person_id])
            await conn.rollback()
        return found.get(person_id, ())

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
        q = select(split_decisions).where(split_decisions.c.agreed_at.is_not(None))
        if person_ids is not None:
            q = q.where(split_decisions.c.person_id.in_(list(person_ids)))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(q.order_by(split_decisions.c.effective_from))).all()
            await conn.rollback()
        out: dict[str, list[PersonDecision]] = {}
        for r in rows:
            out.setdefault(r.person_id, []).append(PersonDecision(
                r.person_id, r.kind, r.council_share_bp, r.effective_from, r.proposed_at.date(),
                r.agreed_at.date(), r.reference))
        return out


class DecisionService:
    """Per-person splits: proposed by one responsible body, in force once the
    other agrees (Worcs 8.5, A2.3); agreed decisions are never changed, and a
    new one takes effect only after the last."""

    def __init__(self, packages: PackageService) -> None:
        self._p = packages

    async def propose(self, client: Client, data: dict[str, Any], original: bytes) -> Outcome:
        from hub.domain.money.splits import agreement_on, decision_problem
        from hub.money.contract import SplitDecisionIn
        try:
            d = SplitDecisionIn.model_validate(data)
        except ValidationError as exc:
            return await self._p._quarantine(client, original, "rest", problems_from_pydantic(exc), None)
        status = await self._p.status(d.person_id, datetime.now(UTC).date())
        council = status.responsible_council.org.code if status and status.responsible_council and \
            status.responsible_council.org else None
        icb = status.responsible_commissioner.org.code if status and status.responsible_commissioner and \
            status.responsible_commissioner.org else None
        if client.org_code not in (council, icb) or council is None or icb is None:
            return problem(404, "not-found", "Not found", NOT_FOUND)
        agreement = agreement_on(self._p._agreements.funding_history(council, icb), d.effective_from)
        problems = []
        reason = decision_problem(agreement, d.kind)
        if reason:
            problems.append(FieldProblem("kind", reason))
        last = [x for x in (await self._p.decisions([d.person_id])).get(d.person_id, [])]
        if last and d.effective_from <= last[-1].effective_from:
            problems.append(FieldProblem("effective_from", "must be after the last agreed decision's: an earlier "
                                                           "decision is never rewritten (Worcs 8.5)"))
        if problems:
            return await self._p._quarantine(client, original, "rest", problems, None)
        decision_id = str(uuid.uuid4())
        async with self._p._engine.begin() as conn:
            await conn.execute(split_decisions.insert().values(
                decision_id=decision_id, person_id=d.person_id, council=council, icb=icb, kind=d.kind,
                council_share_bp=int(d.council_share_percent * 100), effective_from=d.effective_from,
                reference=d.reference, proposed_by=client.org_code, proposed_at=datetime.now(UTC)))
        other = icb if client.org_code == council else council
        log.info("split decision proposed", source=client.client_id, org_code=client.org_code)
        return Outcome(201, {"decision_id": decision_id, "status": "awaiting-agreement", "awaiting": other,
                             "citation": "Worcs 8.5, A2.3"})

    async def agree(self, client: Client, decision_id: str) -> Outcome:
        async with self._p._engine.begin() as conn:
            row = (await conn.execute(select(split_decisions).where(
                split_decisions.c.decision_id == decision_id))).first()
            if row is None or client.org_code not in (row.council, row.icb):
                return problem(404, "not-found", "Not found", "no split decision with that id for this client")
            if row.agreed_at is not None:
                return problem(409, "already-agreed", "Already agreed",
                               "this decision is agreed and in force; it is never changed: propose a new one")
            if row.proposed_by == client.org_code:
                return problem(409, "needs-the-other-body", "Needs the other body",
                               "a split needs both bodies: the other one agrees (Worcs 8.5, A2.3)")
            await conn.execute(split_decisions.update().where(
                split_decisions.c.decision_id == decision_id, split_decisions.c.agreed_at.is_(None))
                .values(agreed_by=client.org_code, agreed_at=datetime.now(UTC)))
        log.info("split decision agreed", source=client.client_id, org_code=client.org_code)
        return Outcome(200, {"decision_id": decision_id, "status": "agreed",
                             "effective_from": row.effective_from.isoformat(), "citation": "Worcs 8.5, A2.3"})
