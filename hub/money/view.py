"""The person query's `funding` part: the pair's arrangement in force with its
citation, the person's agreed decisions (each with the pair that agreed it,
whether it is in force on the day for the pair responsible then, and the day
it ended if responsibility has left its pair: a decision applies only on its
own pair's days, hub/domain/money/splits.py), each package line with this
week's split, and the agreed interim dispute shares (each arrangement, its period
and each disputing body's share, with the part of each line's week each body
carries while it is in force, by the statements' own arithmetic:
hub/domain/money/statements.py `interim_parts`). Shown only to bodies granted
the `funding` field group."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from hub.domain.agreements import WHOLE, AgreementBook, FundingKind
from hub.domain.model import S117Status
from hub.domain import citations
from hub.domain.money import InterimSpan, PackageLine, PersonDecision
from hub.domain.money.responsibility import interim_on
from hub.domain.money.splits import agreement_on, rule_for, split_amount
from hub.domain.money.statements import interim_parts
from hub.money.service import line_json


def _percent(bp: int | None) -> str | None:
    return None if bp is None else f"{Decimal(bp) / 100:.2f}"


def _interim_json(span: InterimSpan, on: date, carried: dict[str, int] | None) -> dict[str, Any]:
    """An agreed interim arrangement as known on `on` (a later end is not shown)."""
    side = "council" if span.kind == "council" else "NHS"
    return {
        "dispute_id": span.dispute_id, "kind": span.kind, "side": side,
        "from": span.first.isoformat(),
        "to": span.last.isoformat() if span.last is not None and span.last <= on else None,
        "in_force": span.covers(on), "lead_body": span.lead_body,
        "shares": [{"org": org, "percent": _percent(bp), "lead": org == span.lead_body} for org, bp in span.shares],
        "carried_per_week_pence": carried,
        "explanation": (f"agreed interim shares: the {side} share of each line is divided between the disputing "
                        f"bodies; {span.lead_body} leads and carries the other side, exclusions and anything awaiting"
                        f" a panel, until resolution, then reimbursement"),
        "citation": f"{span.citation}; {citations.DISPUTE_RESOLVED_REIMBURSE}",
    }


def funding_view(status: S117Status, book: AgreementBook, lines: list[PackageLine],
                 decisions: list[PersonDecision], on: date,
                 interims: tuple[InterimSpan, ...] = ()) -> dict[str, Any]:
    council = status.responsible_council.org.code if status.responsible_council and status.responsible_council.org else None
    icb = (status.responsible_commissioner.org.code
           if status.responsible_commissioner and status.responsible_commissioner.org else None)
    history = book.funding_history(council, icb)
    agreement = agreement_on(history, on)
    since = max((d for d, a in history if d is not None and d <= on), default=None)
    fixed = agreement.kind not in (FundingKind.NEEDS_MATRIX, FundingKind.PANEL)
    interim = interim_on(interims, on) if council and icb else None
    carried: dict[str, int] = {}
    out_lines = []
    weekly = dict.fromkeys(("cost_pence", "council_pence", "icb_pence", "excluded_pence", "awaiting_panel_pence"), 0)
    for line in lines:
        entry = line_json(line)
        if line.in_force(on):
            rule = rule_for(line, on, history, decisions, (council, icb) if council and icb else None)
            amount = int(line.weekly_cost.quantize(Decimal(1), rounding=ROUND_HALF_UP))
            s = split_amount(line, amount, rule)
            awaiting = amount - s.council_pence - s.commissioner_pence - s.excluded_pence
            entry["split_per_week"] = {"council_pence": s.council_pence, "icb_pence": s.commissioner_pence,
                                       "excluded_pence": s.excluded_pence, "awaiting_panel_pence": awaiting,
                                       "basis": rule.basis, "explanation": s.explanation, "citation": s.citation}
            if interim is not None:
                parts = interim_parts(s, interim, council, icb)
                entry["split_per_week"]["interim"] = {"dispute_id": interim.dispute_id, "parts": [
                    {"org": p.org, "share_percent": _percent(p.share_bp), "lead": p.lead, "council": p.council,
                     "icb": p.icb, "council_pence": p.council_pence, "icb_pence": p.icb_pence,
                     "excluded_pence": p.excluded_pence, "awaiting_panel_pence": p.awaiting_panel_pence,
                     "note": p.note} for p in parts]}
                for p in parts:
                    carried[p.org] = carried.get(p.org, 0) + (p.council_pence if interim.kind == "council"
                                                              else p.icb_pence)
            for k, v in (("cost_pence", amount), ("council_pence", s.council_pence), ("icb_pence", s.commissioner_pence),
                         ("excluded_pence", s.excluded_pence), ("awaiting_panel_pence", awaiting)):
                weekly[k] += v
        out_lines.append(entry)
    return {
        "as_of": on.isoformat(),
        "council": council, "icb": icb,
        "arrangement": {
            "name": agreement.name, "kind": agreement.kind.value,
            "council_percent": _percent(agreement.council_share_bp) if fixed else None,
            "nhs_percent": _percent(WHOLE - agreement.council_share_bp) if fixed and agreement.council_share_bp
            is not None else None,
            "s17_leave_nhs_percent": _percent(agreement.s17_leave_commissioner_share_bp),
            "cohorts": {c: _percent(bp) for c, bp in agreement.cohort_shares},
            "in_force_from": since.isoformat() if since else None,
            "citation": agreement.citation,
        },
        "decisions": [{"kind": d.kind, "council_percent": _percent(d.council_share_bp),
                       "effective_from": d.effective_from.isoformat(), "reference": d.reference,
                       "council": d.council, "icb": d.icb,
                       "to": d.last.isoformat() if d.last is not None and d.last <= on else None,
                       "in_force": council is not None and icb is not None and d.applies_on(on, (council, icb))}
                      for d in decisions],
        "packages": out_lines,
        "weekly_in_force": weekly,
        "interim_shares": [_interim_json(span, on, carried if span is interim else None)
                           for span in interims if span.first <= on],
    }
