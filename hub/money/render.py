"""A recharge statement as JSON, CSV (what finance teams import) and PDF (a
person can read it: a table per body)."""

from __future__ import annotations

import csv
import io
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from hub.domain.money.statements import LineItem, Statement, Totals

MONEY_FIELDS = ("cost_pence", "eligible_pence", "council_pence", "icb_pence", "excluded_pence",
                "awaiting_panel_pence", "icb_owes_council_pence", "council_owes_icb_pence")


def pounds(pence: int | Decimal) -> str:
    """Pence as pounds with two decimals, exactly: 123456 -> '1234.56'."""
    return f"{Decimal(pence) / 100:.2f}"


def _totals(t: Totals) -> dict[str, Any]:
    return {**{f: getattr(t, f) for f in MONEY_FIELDS}, "net_icb_to_council_pence": t.net_icb_to_council_pence}


def _item(i: LineItem) -> dict[str, Any]:
    return {
        "package_id": i.package_id, "version": i.version, "service_type": i.service_type, "provider": i.provider,
        "paid_by": i.paid_by, "cohort": i.cohort, "from": i.first.isoformat(), "to": i.last.isoformat(),
        "days": i.days, "weekly_cost_pence": str(i.weekly_cost_pence),
        **{f: getattr(i, f) for f in MONEY_FIELDS},
        "basis": i.basis, "arrangement": i.arrangement, "explanation": i.explanation, "citation": i.citation,
        "note": i.note, "dispute_id": i.dispute_id,
        "interim_share_percent": None if i.interim_share_bp is None else f"{Decimal(i.interim_share_bp) / 100:.2f}",
    }


def statement_json(s: Statement, names: dict[str, str], issue: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {
        "month": s.month, "from": s.first.isoformat(), "to": s.last.isoformat(),
        "council": {"code": s.council, "name": names.get(s.council, s.council)},
        "icb": {"code": s.icb, "name": names.get(s.icb, s.icb)},
        "currency": "GBP", "amounts": "integer pence", "rounding": s.rounding,
        "persons": [{"person_id": p.person_id, "lines": [_item(i) for i in p.lines], "totals": _totals(p.totals)}
                    for p in s.persons],
        "totals": _totals(s.totals),
    }
    if issue is not None:
        out["issue"] = issue
    return out


CSV_COLUMNS = ("month", "council", "icb", "person_id", "package_id", "version", "service_type", "provider",
               "paid_by", "cohort", "from", "to", "days", "weekly_cost", "cost", "eligible", "council_share",
               "icb_share", "excluded", "awaiting_panel", "icb_owes_council", "council_owes_icb", "basis",
               "citation", "note", "dispute_id", "interim_share_percent")


# A cell a spreadsheet would read as a formula (OWASP "CSV injection"): text
# a body sent (a service type, a provider or package id) beginning with one of
# these is written with a leading apostrophe, so finance teams opening the
# statement see the text, never a formula run. Amounts are written by the hub
# (never negative) and are left as they are.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_text(value: str) -> str:
    """`value` as a CSV text cell that no spreadsheet evaluates."""
    return "'" + value if value.startswith(FORMULA_START) else value


def statement_csv(s: Statement, issue: dict[str, Any] | None = None) -> str:
    """One row per line item, amounts in pounds (two decimals), and a TOTAL
    row whose note says which issue this is (and what it restates). Text a
    body sent never starts a cell as a formula (`csv_text`)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)

    def money(x: LineItem | Totals) -> list[str]:
        return [pounds(getattr(x, f)) for f in MONEY_FIELDS]

    for p in s.persons:
        for i in p.lines:
            w.writerow([s.month, s.council, s.icb, p.person_id, csv_text(i.package_id), i.version,
                        csv_text(i.service_type), csv_text(i.provider), i.paid_by, i.cohort, i.first.isoformat(),
                        i.last.isoformat(), i.days,
                        pounds(i.weekly_cost_pence.quantize(Decimal(1), rounding=ROUND_HALF_UP)), *money(i),
                        csv_text(i.basis), csv_text(i.citation), csv_text(i.note), csv_text(i.dispute_id or ""),
                        "" if i.interim_share_bp is None else f"{Decimal(i.interim_share_bp) / 100:.2f}"])
    w.writerow([s.month, s.council, s.icb, "TOTAL", "", "", "", "", "", "", s.first.isoformat(), s.last.isoformat(),
                "", "", *money(s.totals), "", "", csv_text(issue.get("explanation", "")) if issue else "", "", ""])
    return out.getvalue()


def _latin1(text: str) -> str:
    # The core fonts are Latin-1; policy citations use plain quotes and dashes.
    return text.replace("\u2019", "'").replace("\u2013", "-").encode("latin-1", "replace").decode("latin-1")


# Helvetica at 7 pt: digits are 0.556 em = 1.37 mm; 1.45 mm a character keeps
# mixed text inside its column.
DIGIT_MM = 0.556 * 7 * 25.4 / 72
CHAR_MM = 1.45


def statement_pdf(s: Statement, names: dict[str, str], issue: dict[str, Any] | None = None) -> bytes:
    pdf = FPDF(orientation="L", unit="mm", format="A4")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.set_title(f"S117 recharge statement {s.month}")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    council, icb = names.get(s.council, s.council), names.get(s.icb, s.icb)
    pdf.cell(0, 8, _latin1(f"Section 117 aftercare recharge statement: {s.month}"),
             new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 10)
    pdf.cell(0, 6, _latin1(f"Council: {council} ({s.council})    ICB: {icb} ({s.icb})    "
                           f"{s.first.isoformat()} to {s.last.isoformat()}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    t = s.totals
    net = t.net_icb_to_council_pence
    summary = (f"{icb} owes {council} GBP {pounds(net)}" if net >= 0 else f"{council} owes {icb} GBP {pounds(-net)}")
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 8, _latin1(f"Net: {summary}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 8)
    if issue is not None and issue.get("explanation"):
        pdf.set_font("Helvetica", "B" if issue.get("restated") else "", 9)
        pdf.multi_cell(0, 5, _latin1(("RESTATEMENT: " if issue.get("restated") else "Issue: ")
                                     + issue["explanation"]), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("Helvetica", "", 8)
    pdf.multi_cell(0, 4, _latin1("Rounding: " + s.rounding), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)
    notes: dict[str, int] = {}
    for p in s.persons:
        for i in p.lines:
            if i.note:
                notes.setdefault(i.note, len(notes) + 1)
    for payer, title, field in (("council", f"{icb} owes {council} (council-paid lines, NHS share)",
                                 "icb_owes_council_pence"),
                                ("icb", f"{council} owes {icb} (ICB-paid lines, council share)",
                                 "council_owes_icb_pence")):
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 7, _latin1(title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("Helvetica", "", 8)
        widths = (16, 20, 38, 26, 18, 18, 9, 18, 18, 18, 18, 18, 50)
        header = ("Person", "Package", "Service", "Provider", "From", "To", "Days", "Cost", "Eligible", "Council",
                  "ICB", "Owed", "Basis (citation)")
        right = {6, 7, 8, 9, 10, 11}

        def row(cells: tuple[str, ...], bold: bool = False) -> None:
            # Plain text and rules, one row a line: linear in the rows (fpdf2's
            # table and cell layout cost about a millisecond a cell, and a
            # statement may run to tens of thousands of lines).
            if pdf.will_page_break(5):
                pdf.add_page()
                if not bold:
                    row(header, bold=True)
            pdf.set_font("Helvetica", "B" if bold else "", 7)
            x, y = pdf.l_margin, pdf.get_y()
            for n, (w, text) in enumerate(zip(widths, cells)):
                text = _latin1(text)
                budget = int(w / CHAR_MM)
                if len(text) > budget:
                    text = text[:budget - 2] + ".."
                tx = x + 1 if n not in right else x + w - 1 - len(text) * DIGIT_MM
                pdf.text(tx, y + 3.6, text)
                x += w
            pdf.line(pdf.l_margin, y + 5, x, y + 5)
            pdf.set_y(y + 5)

        row(header, bold=True)
        section = Totals.of(i for p in s.persons for i in p.lines if i.paid_by == payer)
        for p in s.persons:
            for i in p.lines:
                if i.paid_by != payer:
                    continue
                row((p.person_id[:8], i.package_id, i.service_type, i.provider, i.first.isoformat(),
                     i.last.isoformat(), str(i.days), pounds(i.cost_pence), pounds(i.eligible_pence),
                     pounds(i.council_pence), pounds(i.icb_pence), pounds(getattr(i, field)),
                     (f"[{notes[i.note]}] " if i.note else "") + f"{i.basis} ({i.citation})"))
        row(("Total", "", "", "", "", "", "", pounds(section.cost_pence), pounds(section.eligible_pence),
             pounds(section.council_pence), pounds(section.icb_pence), pounds(getattr(t, field)), ""), bold=True)
        pdf.ln(4)
    # The statement's totals as the JSON and the CSV's TOTAL row give them, so the three agree on every figure.
    pdf.set_font("Helvetica", "B", 9)
    pdf.multi_cell(0, 5, _latin1(
        f"Totals: cost {pounds(t.cost_pence)}; eligible {pounds(t.eligible_pence)}; council share "
        f"{pounds(t.council_pence)}; ICB share {pounds(t.icb_pence)}; excluded {pounds(t.excluded_pence)}; awaiting "
        f"a panel {pounds(t.awaiting_panel_pence)}; {icb} owes {council} {pounds(t.icb_owes_council_pence)}; "
        f"{council} owes {icb} {pounds(t.council_owes_icb_pence)}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 8)
    if notes:
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 7, "Notes", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("Helvetica", "", 8)
        for text, n in notes.items():
            pdf.multi_cell(0, 4, _latin1(f"[{n}] {text}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())
