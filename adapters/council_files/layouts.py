"""The hub's published council file layouts, as data.

There is no public SWIFT (or Liquidlogic, Mosaic) export specification for
s117 register changes, so these are the hub's own layouts, written in the
style of a SWIFT nightly flat file. Councils implement them; README.md in this
package is the contract. Each column names the canonical field it fills
(a dotted path into hub.ingest.contract.RegisterChangeIn) and how its text is
read (`kind`). Fixed-width positions are 1-based and count characters of the
UTF-8 decoded record, not bytes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Column:
    name: str  # the column's name in the file (CSV header / published fixed-width name)
    target: str | None  # canonical field path, e.g. "person.nhs_number"; None: read by the adapter itself
    kind: str  # how the text is read: see mapping.PARSERS
    start: int = 0  # fixed width only: 1-based first character
    width: int = 0  # fixed width only: characters
    required: bool = False  # must be present (and non-blank) on every data record

    @property
    def end(self) -> int:
        """1-based last character (fixed width)."""
        return self.start + self.width - 1


# id(columns) -> (columns, name -> the first column of that name): looked up for
# every field of every row, so not by hashing the tuple of columns each time.
_BY_NAME: dict[int, tuple[tuple[Column, ...], dict[str, Column]]] = {}


def _columns_by_name(columns: tuple[Column, ...]) -> dict[str, Column]:
    entry = _BY_NAME.get(id(columns))
    if entry is None or entry[0] is not columns:
        by_name: dict[str, Column] = {}
        for c in columns:
            by_name.setdefault(c.name, c)
        entry = _BY_NAME[id(columns)] = (columns, by_name)
    return entry[1]


@dataclass(frozen=True, slots=True)
class Layout:
    name: str
    kind: str  # "csv" or "fixed"
    columns: tuple[Column, ...]
    date_formats: tuple[str, ...]  # strptime formats, tried in order
    date_format_label: str  # how a problem names the expected form, e.g. "DD/MM/YYYY"
    source_system: str  # canonical source_system when the file does not name one
    list_separator: str = ";"
    # Fixed width: header and trailer records (record type in column 1).
    header: tuple[Column, ...] = ()
    trailer: tuple[Column, ...] = ()
    file_type: str = ""  # the header's FILE_TYPE value this layout accepts
    record_length: int = 0

    def column(self, name: str) -> Column | None:
        return _columns_by_name(self.columns).get(name)

    def column_for_target(self, target: str) -> str | None:
        return next((c.name for c in self.columns if c.target == target), None)


# The data columns every layout shares, in CSV order. `kind`s: id, event, date,
# nhs, name, postcode, gss, ods, flag, text, list, reasons, dispute_kind, code.
_DATA_COLUMNS: tuple[tuple[str, str | None, str, int, bool], ...] = (
    # name, canonical target, kind, fixed width, required
    ("RECORD_ID", "source_message_id", "id", 20, True),
    ("EVENT", "change_type", "event", 16, True),
    ("EFFECTIVE_DATE", "effective_date", "date", 8, True),
    ("NOTIFIED_DATE", "notified_on", "date", 8, False),
    ("NHS_NO", "person.nhs_number", "nhs", 10, True),
    ("SURNAME", "person.family_name", "name", 35, False),
    ("FORENAME", "person.given_name", "name", 35, False),
    ("DOB", "person.birth_date", "date", 8, False),
    ("POSTCODE", "person.postcode", "postcode", 8, False),
    ("LA_GSS", "residence_la_gss", "gss", 9, False),
    ("NFA", "no_fixed_abode", "flag", 1, False),
    ("GP_ODS", "gp_practice_ods", "ods", 6, False),
    ("REVIEW_REASON", "review_reason", "text", 60, False),
    ("LA_AGREES", "discharge.council_agrees", "flag", 1, False),
    ("NHS_AGREES", "discharge.commissioner_agrees", "flag", 1, False),
    ("PERSON_INVOLVED", "discharge.person_involved", "flag", 1, False),
    ("END_REASONS", "discharge.reasons", "reasons", 60, False),
    ("PARTICIPANTS", "discharge.participants", "list", 100, False),
    ("DISPUTE_ID", "dispute.dispute_id", "text", 20, False),
    ("DISPUTE_TYPE", "dispute.kind", "dispute_kind", 3, False),
    ("DISPUTE_PARTIES", "dispute.parties", "codes", 40, False),
    ("RESOLVED_RESPONSIBLE", "dispute.resolved_responsible", "code", 9, False),
    # Aftercare package records (PKG_START / PKG_CHANGE / PKG_END), appended
    # after the register columns so a 460-character export stays valid.
    ("PACKAGE_ID", "package_id", "id", 20, False),
    ("SERVICE_TYPE", "service_type", "text", 40, False),
    ("PROVIDER_TYPE", "provider.kind", "provider_kind", 3, False),
    ("PROVIDER", "provider.code", "provider", 20, False),
    ("NEED", "need", "need", 2, False),
    ("WEEKLY_COST", "weekly_cost_pence", "money", 10, False),
    ("UNIT_COST", "unit_cost_pence", "money", 10, False),
    ("UNITS_PER_WEEK", "units_per_week", "decimal", 6, False),
    ("S117_NEED", "s117_eligible", "flag", 1, False),
    ("EXCLUSION", "exclusion", "exclusion", 10, False),
    ("S17_LEAVE", "s17_leave", "flag", 1, False),
    ("COHORT", "cohort", "cohort", 3, False),
    ("PAID_BY", "paid_by", "payer", 3, False),
    ("END_DATE", "end_date", "date", 8, False),
    # A county split between several successors (hazard H-03): on ADDR_CHANGE, the successor council whose
    # area covers the residence the responsible council was determined by. Appended after every earlier
    # column, so a 597-character (or 460-character) export stays valid.
    ("PRE_DETENTION_LA_GSS", "residence_before_detention_la_gss", "gss", 9, False),
)


def _csv_columns() -> tuple[Column, ...]:
    return tuple(Column(name, target, kind, required=req) for name, target, kind, _w, req in _DATA_COLUMNS)


def _fixed_columns() -> tuple[Column, ...]:
    cols = [Column("REC_TYPE", None, "record_type", start=1, width=1, required=True)]
    start = 2
    for name, target, kind, width, req in _DATA_COLUMNS:
        kind = "date_fixed" if kind == "date" else kind
        cols.append(Column(name, target, kind, start=start, width=width, required=req))
        start += width
    return tuple(cols)


SWIFT_CSV = Layout(
    name="swift_csv",
    kind="csv",
    columns=_csv_columns(),
    date_formats=("%d/%m/%Y", "%Y-%m-%d"),
    date_format_label="DD/MM/YYYY (or YYYY-MM-DD)",
    source_system="SWIFT (council file)",
)

_FIXED_COLUMNS = _fixed_columns()

SWIFT_FIXED = Layout(
    name="swift_fixed",
    kind="fixed",
    columns=_FIXED_COLUMNS,
    date_formats=("%Y%m%d",),
    date_format_label="YYYYMMDD",
    source_system="SWIFT (council file)",
    header=(
        Column("REC_TYPE", None, "record_type", start=1, width=1, required=True),  # "H"
        Column("FILE_TYPE", None, "text", start=2, width=8, required=True),  # "S117REG1"
        Column("COUNCIL_GSS", None, "gss", start=10, width=9, required=True),  # the sending council
        Column("CREATED", None, "date_fixed", start=19, width=8, required=True),  # YYYYMMDD
        Column("SYSTEM", None, "text", start=27, width=20),  # e.g. "SWIFT", "MOSAIC"
    ),
    trailer=(
        Column("REC_TYPE", None, "record_type", start=1, width=1, required=True),  # "T"
        Column("RECORD_COUNT", None, "count", start=2, width=9, required=True),  # data records, zero-padded
    ),
    file_type="S117REG1",
    record_length=_FIXED_COLUMNS[-1].end,
)

LAYOUTS: dict[str, Layout] = {SWIFT_CSV.name: SWIFT_CSV, SWIFT_FIXED.name: SWIFT_FIXED}
