"""HL7 v2 ADT (HSCIC ITK v2.4 profile) to the canonical register change.

Pure: text in, a MappingResult out; no I/O, no clock, no reference data. The
hub's ingest validates the mapped change (check digit, reference codes,
dates) and `origins` says which HL7 position each canonical field came from,
so that an error found there can be reported against the HL7 field.

README.md in this folder has the mapping table and the reasons behind it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import Any

import hl7
from hl7.exceptions import HL7Exception

from adapters.hl7v2.legal_status import DETAINED, NOT_DETAINED, NOT_KNOWN, QUALIFYING, england_code
from hub.domain.dates import england_day
from hub.domain.rules.legal_status import CPIA_ORDER_TYPES
from hub.ingest.contract import MAX_EXPECTED_STAY_WEEKS

# NHS Data Dictionary pseudo-postcode for "no fixed abode".
NO_FIXED_ABODE_POSTCODE = "ZZ993VZ"
_GSS_COUNCIL = re.compile(r"^E(06|07|08|09|10)[0-9]{6}$")
_ODS = re.compile(r"^[A-Z0-9]{3,6}$")
_NHS_TYPES = frozenset({"NH", "NHS"})
# ZU5-7, a hub-local field after the six the ITK profile defines (README.md, "CP(I)A order type"): with legal
# status 31, the order the court made, as the register change contract's `order_type` codes (any case).
ORDER_TYPE_FIELD = 7
ORDER_TYPE_POSITION = f"ZU5-{ORDER_TYPE_FIELD}"
# ZU5-8, hub-local too (README.md, "CTO recall or fresh application"): with a qualifying detention, whether it is
# the recall of a community patient under s17E (`cto-recalled`: the CTO stays in force) or a fresh application or
# order (`detained` / `section-changed`: it ends a CTO, MHA s6(4), s17C(c)). England's legal status codes have no
# code for a recall: a PAS reports one as an admission under the CTO's section (usually 03).
ADMISSION_KIND_FIELD = 8
ADMISSION_KIND_POSITION = f"ZU5-{ADMISSION_KIND_FIELD}"
CTO_RECALL = "cto-recall"
FRESH_APPLICATION = "fresh-application"
ADMISSION_KINDS = (CTO_RECALL, FRESH_APPLICATION)
# ZU5-8 on an A02 / A08 only (README.md, "CTO revocation"): the responsible clinician revoked the CTO of a patient
# recalled to hospital (MHA s17F(4)), who is detained again under the section the CTO was made on (s17G): the
# change `cto-revoked`, carrying that section (ZU5-3). A revocation is a change of legal status of a patient in
# hospital already (the recall admitted them), never an admission: not on an A01, and no A11 cancels it.
CTO_REVOCATION = "cto-revocation"
# ZU5-9, hub-local too (README.md, "A child's detention"): on an A01 `detained`, the council maintaining the
# person's Education, Health and Care plan (an ONS GSS code, the contract's `ehc_plan_la_gss`), told of the
# admission (Worcs 6.4). HL7 v2 has no field for it.
EHC_PLAN_FIELD = 9
EHC_PLAN_POSITION = f"ZU5-{EHC_PLAN_FIELD}"
# PV2-10 Estimated Length of Inpatient Stay (HL7 v2.4 3.4.4.10, NM, days): on an A01 `detained`, the contract's
# `expected_stay_weeks`, in whole weeks rounded down (84 days is 12 weeks, 83 days 11: an expected stay reaches
# the s85 12 weeks only when its days do). Under 7 days is under one whole week: not carried (the contract's
# smallest is 1; the notice then goes at 12 weeks in hospital, as without it). Over 260 weeks: refused.
EXPECTED_STAY_POSITION = "PV2-10"
MAX_EXPECTED_STAY_DAYS = MAX_EXPECTED_STAY_WEEKS * 7 + 6  # 1826 days: still 260 whole weeks
# HL7 NM (v2.4 2A.3.47): an optional leading sign, ASCII digits, an optional decimal point; no exponent.
_NM = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")

# PID-30 patient death indicator (HL7 table 0136) and PID-29 patient death date and time; on an A03, PV1-36
# (discharge disposition), which the ITK profile fills with the NHS Data Dictionary discharge method (the ITK
# A03 example: PV1-36 3, PV1-37 19, the discharge destination "usual place of residence"): 4 is "patient died".
# README.md, "Death (PID-29, PID-30)".
DEATH_INDICATOR_POSITION = "PID-30"
DEATH_DATE_POSITION = "PID-29"
DISCHARGE_METHOD_POSITION = "PV1-36"
DISCHARGE_METHOD_DIED = "4"

SUPPORTED_EVENTS = ("A01", "A02", "A03", "A08")
# Segments the HL7 v2.4 ADT A01/A02/A03/A08 structures (ITK v2.4) allow once, of those the hub reads: a
# second one is refused (AE), never read past.
ONCE_SEGMENTS = ("MSH", "EVN", "PID", "PD1", "PV1", "PV2", "ZU5")
# A frame with these (or with a second MSH) is a batch: HL7 v2 batch protocol (2.10.3), not taken.
_BATCH_SEGMENTS = frozenset(("FHS", "BHS", "BTS", "FTS"))
# HL7 v2.4 2.5.3: a field sent as `""` is present and null ("delete the value"): no value, never the two
# characters (a given name `""` was recorded as the name `""`).
HL7_NULL = '""'
BATCH_REASON = "batches are not taken: send each message in its own MLLP frame"
# A field read as one value (`_Msg.get` without a repetition) that carries the repetition separator (README.md,
# "Repetitions"): a field HL7 v2.4 (or the ITK profile, or the hub for its own ZU5 fields) does not let repeat.
# Refused, never cut to its first repetition (PV2-10 `84~90` was read as 84, a second ZU5-9 council dropped).
REPEATS_REASON = "repeats: the field takes one value, and which of its repetitions is meant cannot be told"
# Fields HL7 v2.4 lets repeat of which the hub reads one value (README.md, "Repetitions"): PD1-3 patient primary
# facility (XON), the GP practice (its ID number, XON-3), and PV1-45 discharge date/time (TS). The value their
# repetitions agree on (empty ones aside); repetitions with different values are refused.
REPEATS_DIFFER_REASON = ("repeats with different values: the hub reads one value of this field, and which of its "
                         "repetitions is meant cannot be told")
_AGREED_REPETITIONS = frozenset((("PD1", 3), ("PV1", 45)))
# Fields that decide whether the message is taken at all (who sent it, what it is): repeated, the message is
# refused (AR, nothing kept), as any other problem of theirs is.
_GATE_FIELDS = ("MSH-4", "MSH-9", "EVN-1", "MSH-11", "MSH-12")


class Disposition(StrEnum):
    CHANGE = "change"  # a register change: hand to IngestService.accept_mapped
    NO_CHANGE = "no-change"  # a supported message that changes nothing on the register: AA, nothing stored
    ERROR = "error"  # content the hub cannot map: quarantine, AE
    REJECT = "reject"  # a message the hub does not take: AR (quarantined only if `quarantine`)
    MERGE = "merge"  # A40: two NHS numbers merged (`merge`): hand to hub/merges.py PersonMergeService.merge


# HL7 table 0357 (message error condition codes) used in ERR-1.4.
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_PROCESSING_ID = "202"
UNSUPPORTED_VERSION_ID = "203"
APPLICATION_ERROR = "207"
REPEATS_CODES = {REPEATS_REASON: DATA_TYPE_ERROR, REPEATS_DIFFER_REASON: APPLICATION_ERROR}


@dataclass(frozen=True, slots=True)
class HL7Problem:
    """A field problem named by HL7 position ("PID-3", "ZU5-2"). Never quotes the value."""

    field: str
    reason: str
    code: str = APPLICATION_ERROR

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Header:
    sending_application: str = ""
    sending_facility: str = ""
    control_id: str = ""
    message_type: str = ""
    trigger_event: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class MappingResult:
    disposition: Disposition
    header: Header = field(default_factory=Header)
    change: dict[str, Any] | None = None
    problems: tuple[HL7Problem, ...] = ()
    notes: tuple[str, ...] = ()
    # canonical field (as ingest names it, e.g. "person.nhs_number") -> HL7 position
    origins: dict[str, str] = field(default_factory=dict)
    quarantine: bool = False  # REJECT only: keep the message for the source to see
    # ERROR (and a REJECT held in quarantine, A11 / A13: the change type it cancels): what the message is
    # about, as far as it could be read: the change type it would be, the NHS number (when PID-3 names exactly
    # one) and the hospital named; all the access policy asks before anything of the message is kept
    # (hub/mllp.py). None when the change type cannot be told.
    about: dict[str, Any] | None = None
    # A11 / A13 only: the date of the change it cancels, as the message gives it (A11: ZU5-5, PV1-44 or EVN-6,
    # the fields an A01's `effective_date` is read from; A13: PV1-45 or EVN-6, as an A03's), read where
    # `origins["effective_date"]` says; None when none holds a valid date. hub/mllp.py retracts the one change
    # it matches (hub/retraction.py `RetractionService.retract_cancelled`).
    cancelled_on: date | None = None
    # CHANGE only: a `detained` (A01) or `section-changed` (A02 / A08) without ZU5-8: the sender did not say
    # whether the detention is a CTO recall or a fresh application. hub/mllp.py has ingest refuse it (AE naming
    # ZU5-8, quarantined) when the register shows the person on a CTO in force that the detention would end.
    recall_unstated: bool = False
    # MERGE only (A40): {"retained": PID-3's NHS number, "superseded": MRG-1's}, as sent (the merge checks them).
    merge: dict[str, str] | None = None

    @property
    def parsed(self) -> bool:
        return bool(self.header.sending_facility or self.header.control_id)

    def hl7_field(self, canonical_field: str) -> str:
        """The HL7 position a canonical field came from (itself if unknown)."""
        if canonical_field in self.origins:
            return self.origins[canonical_field]
        top = canonical_field.split(".")[0]
        return self.origins.get(top, canonical_field)


class _Msg:
    """Read access to one message's fields by HL7 position, as python-hl7's
    accessor reads them ("PID.F3.R1.C4.S1"), with a missing segment, field,
    repetition, component or subcomponent read as empty, and so is a value that
    is the HL7 null `""` (python-hl7 reads the two characters).

    python-hl7 finds the delimiters (`create_parse_plan`, from MSH-1/MSH-2)
    and unescapes values (`Container.unescape`); the message is split into
    segments and fields with `str.split` once, and a field into repetitions,
    components and subcomponents only when read. `hl7.parse` builds a
    container for every subcomponent of every segment up front: about 0.8 ms
    for an ITK A01 on this machine, most of the cost of an MLLP message, for
    the dozen values the mapping reads (tests/unit/adapters compares every
    position of the fixtures with `hl7.parse`).

    A read without a repetition (`get(segment, f, c)`) is of the field's one
    value: a field sent with repetitions there is recorded in `repeats`
    (README.md, "Repetitions") and the mapping refuses the message naming it;
    a field the mapping reads repetition by repetition (PID-3, PID-5, PID-11,
    MRG-1) is read with `r`."""

    __slots__ = ("_segments", "_field_sep", "_rep", "_comp", "_sub", "_esc", "_separators", "_escaper",
                 "repeated", "bad_escapes", "repeats", "_reps")

    def __init__(self, text: str) -> None:
        # Raises hl7.ParseException (an HL7Exception) or IndexError, as hl7.parse
        # does, for text that does not start with an MSH segment and its delimiters.
        text = text.strip()  # as hl7.parse
        separators, self._esc = _delimiters(text)
        self._separators = separators
        # separators: segment, field, repetition, component, subcomponent
        _seg, self._field_sep, self._rep, self._comp, self._sub = separators
        self._escaper: hl7.Message | None = None  # made for the first value with an escape sequence
        self._segments: dict[str, list[str]] = {}
        # Segments met more than once, each with all its occurrences (the first is also in `_segments`, as
        # hl7's segment() reads it): a batch (several MSH) or a segment the message allows once is refused
        # (`map_adt`), never half read. None (the usual case) when no segment repeats.
        self.repeated: dict[str, list[list[str]]] | None = None
        self.bad_escapes: list[str] | None = None  # positions read whose escape sequences are not valid
        # Fields read as one value that were sent with repetitions ("ZU5-9"), each with why it is refused
        # (REPEATS_REASON, REPEATS_DIFFER_REASON); None (the usual case) when there are none.
        self.repeats: dict[str, str] | None = None
        # (segment, field) -> the field split into its repetitions, for a read past the first: split once, not
        # once a read (the mapping reads PID-3 and PID-11 repetition by repetition; a field repeated 100,000
        # times within the frame limit was scanned whole 100,000 times, minutes on the listener's loop).
        self._reps: dict[tuple[str, int], list[str]] | None = None
        segments = self._segments
        for segment in text.split("\r"):
            fields = segment.split(self._field_sep)
            name = fields[0]
            if name == "MSH":
                # MSH-1 is the field separator itself: MSH.F1 "|", F2 "^~\\&", F3 ...
                fields.insert(1, self._field_sep)
            if name in segments:
                if self.repeated is None:
                    self.repeated = {}
                self.repeated.setdefault(name, [segments[name]]).append(fields)
            else:
                segments[name] = fields

    def has(self, segment: str) -> bool:
        return segment in self._segments

    def get(self, segment: str, f: int, c: int = 1, r: int = 0, s: int = 1) -> str:
        """Component `c`, subcomponent `s` of the field's repetition `r`; without `r` (0), of the field's one
        value: a field sent with repetitions is recorded in `repeats` (a field HL7 v2.4 lets repeat and the
        hub reads one value of, `_AGREED_REPETITIONS`, only when its repetitions differ) and the first
        repetition is read (the one they agree on)."""
        fields = self._segments.get(segment)
        if fields is None or f >= len(fields):
            return ""
        value = fields[f]
        if not value:
            return ""
        if segment == "MSH" and (f == 1 or f == 2):
            if f == 1:
                return value
            return value if (c, r, s) in ((1, 0, 1), (1, 1, 1)) else ""
        # The first repetition, component or subcomponent (most reads) by
        # `partition`, which makes no list; a later one by `split`.
        if r == 0:  # the field's one value: a branch on the partition, the rest only for a repeated field
            first, repeated, _ = value.partition(self._rep)
            value = self._one_value(segment, f, c, s, value) if repeated else first
        elif r == 1:
            value = value.partition(self._rep)[0]
        else:
            parts = self._repetitions_of(segment, f, value)
            if r > len(parts):
                return ""
            value = parts[r - 1]
        if c == 1:
            value = value.partition(self._comp)[0]
        else:
            parts = value.split(self._comp)
            if c > len(parts):
                return ""
            value = parts[c - 1]
        if s == 1:
            value = value.partition(self._sub)[0]
        else:
            parts = value.split(self._sub)
            if s > len(parts):
                return ""
            value = parts[s - 1]
        if not value or value == HL7_NULL:
            return ""
        if self._esc in value:
            if not _valid_escapes(value, self._esc):  # refused (`_Mapper._error`); not unescaped
                if self.bad_escapes is None:
                    self.bad_escapes = []
                self.bad_escapes.append(f"{segment}-{f}")
                return value.strip()
            if self._escaper is None:
                self._escaper = hl7.Message("\r", [], esc=self._esc, separators=self._separators)
            value = self._escaper.unescape(value)
        return value.strip()

    def _one_value(self, segment: str, f: int, c: int, s: int, value: str) -> str:
        """The repetition to read of a field read as one value and sent with repetitions (`value`, the
        field's text), recording the field in `repeats`: the first repetition; for a field of
        `_AGREED_REPETITIONS`, the first whose component `c` (subcomponent `s`) holds a value, recorded only
        when another holds a different one."""
        position = f"{segment}-{f}"
        if (segment, f) not in _AGREED_REPETITIONS:
            self._repeat(position, REPEATS_REASON)
            return value.partition(self._rep)[0]
        chosen: str | None = None
        held = ""
        for repetition in self._repetitions_of(segment, f, value):
            part = repetition
            if c > 1:
                parts = part.split(self._comp)
                part = parts[c - 1] if c <= len(parts) else ""
            else:
                part = part.partition(self._comp)[0]
            subs = part.split(self._sub)
            part = subs[s - 1].strip() if s <= len(subs) else ""
            if not part or part == HL7_NULL:
                continue
            if chosen is None:
                chosen, held = repetition, part
            elif part != held:
                self._repeat(position, REPEATS_DIFFER_REASON)
                break
        return chosen if chosen is not None else value.partition(self._rep)[0]

    def _repeat(self, position: str, reason: str) -> None:
        if self.repeats is None:
            self.repeats = {}
        self.repeats.setdefault(position, reason)

    def _repetitions_of(self, segment: str, f: int, value: str) -> list[str]:
        """The field's repetitions (`value`, the field's text), split the first time they are asked for."""
        if self._reps is None:
            self._reps = {}
        parts = self._reps.get((segment, f))
        if parts is None:
            parts = self._reps[(segment, f)] = value.split(self._rep)
        return parts

    def raw(self, segment: str, f: int) -> str:
        """A field exactly as sent: no escape undone, nothing stripped (MSH-10, the idempotency key and MSA-2).
        It is the field's one value: sent with repetitions, it is recorded in `repeats` (and read whole)."""
        fields = self._segments.get(segment)
        if fields is None or f >= len(fields):
            return ""
        value = fields[f]
        if self._rep in value:
            self._repeat(f"{segment}-{f}", REPEATS_REASON)
        return value

    def occurrence(self, segment: str, i: int) -> _Msg:
        """This message read with the i-th (0-based) occurrence of a repeated segment in place of the first."""
        other = object.__new__(_Msg)
        for name in _Msg.__slots__:
            object.__setattr__(other, name, getattr(self, name))
        other._segments = {**self._segments, segment: self.repeated[segment][i]}  # type: ignore[index]
        other.bad_escapes = None
        other.repeats = None  # (the occurrence's reads are its own, never the message's)
        other._reps = None  # the occurrence's fields are not the first's
        return other

    def repetitions(self, segment: str, f: int) -> int:
        fields = self._segments.get(segment)
        if fields is None or f >= len(fields) or not fields[f]:
            return 0
        return len(self._repetitions_of(segment, f, fields[f]))


# HL7 v2.4 2.7: the escape sequences a field the hub reads may hold. Formatting (\.br\, \H\), character set
# switches (\C..\, \M..\) and locally defined ones (\Z..\) mean nothing in a name, number, code or date, and
# python-hl7 drops or replaces what it cannot undo: such a value is refused rather than read changed.
_SIMPLE_ESCAPES = frozenset(("F", "S", "T", "R", "E"))
_HEX_ESCAPE = re.compile(r"X(?:[0-9A-Fa-f]{2})+")


def _valid_escapes(value: str, esc: str) -> bool:
    parts = value.split(esc)
    if len(parts) % 2 == 0:  # an escape sequence left open
        return False
    for sequence in parts[1::2]:
        if sequence not in _SIMPLE_ESCAPES and not _HEX_ESCAPE.fullmatch(sequence):
            return False
    return True


def _delimiters(text: str) -> tuple[str, str]:
    """`create_parse_plan(text)`'s separators and escape character (or its
    exception): they depend only on the text up to MSH-2's end (its first
    three characters and those between the first and second field
    separators), so each such head is worked out once and remembered (an
    interface engine sends every message with the same few)."""
    end = text.find(text[3], 4) if len(text) > 3 else -1
    if end < 0:  # no second field separator: python-hl7 reads to the text's end
        return _plan_of.__wrapped__(text)
    return _plan_of(text[:end + 1])  # raises as for the whole text (an exception is not kept)


@lru_cache(maxsize=64)
def _plan_of(head: str) -> tuple[str, str]:
    plan = hl7.parser.create_parse_plan(head)
    return plan.separators, plan.esc


def _normalise_segments(text: str) -> str:
    # HL7 separates segments with CR. python-hl7 parses an LF-separated
    # message as one long MSH segment without complaint, so LF and CRLF are
    # turned into CR first (a literal LF inside a field must be escaped in HL7).
    if "\n" in text:  # (one scan, and no copies, for the usual CR-only message)
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    return text.strip("\r")


def _header(msg: _Msg) -> Header:
    trigger = msg.get("MSH", 9, 2) or msg.get("EVN", 1)
    return Header(
        sending_application=msg.get("MSH", 3),
        sending_facility=msg.get("MSH", 4).upper(),
        # as sent: the idempotency key, echoed byte for byte in MSA-2 (the HL7 null: none)
        control_id=control_id if (control_id := msg.raw("MSH", 10)) != HL7_NULL else "",
        message_type=msg.get("MSH", 9, 1).upper(),
        trigger_event=trigger.upper(),
        version=msg.get("MSH", 12),
    )


# A TS with a time and an explicit offset (HL7 v2.4 2A.3.77: YYYYMMDDHHMM[SS[.S...]][+/-ZZZZ]).
_TS_WITH_OFFSET = re.compile(r"^(\d{12})(\d{2})?(?:\.\d{1,4})?([+-])(\d{2})(\d{2})$")


def _hl7_date(value: str) -> date | None:
    """TS/DT -> the day in England: the first eight digits (YYYYMMDD) as sent, the sender's local day; a
    time given with an explicit offset the day its instant falls on in England (20250531233000+0000,
    00:30 BST, is 1 June: hub/domain/dates.py). None if not a date."""
    if len(value) < 8 or not (value[:8].isascii() and value[:8].isdigit()):
        return None
    try:
        day = date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return None
    m = _TS_WITH_OFFSET.match(value) if len(value) > 8 else None
    if m is not None:
        try:
            offset = timedelta(hours=int(m[4]), minutes=int(m[5])) * (1 if m[3] == "+" else -1)
            at = datetime(day.year, day.month, day.day, int(m[1][8:10]), int(m[1][10:12]), int(m[2] or 0),
                          tzinfo=timezone(offset))
        except ValueError:
            return day  # an impossible time or offset: the day as written
        return england_day(at)
    return day


def _reject(header: Header, f: str, reason: str, code: str, quarantine: bool = False) -> MappingResult:
    return MappingResult(Disposition.REJECT, header, problems=(HL7Problem(f, reason, code),), quarantine=quarantine)


def map_adt(message_text: str) -> MappingResult:
    """Map one HL7 v2 ADT message (segments separated by CR; LF tolerated)."""
    try:
        msg = _Msg(_normalise_segments(message_text))
    except (HL7Exception, IndexError, ValueError):
        return _reject(Header(), "MSH", "the message could not be parsed as HL7 v2 (it must start with an MSH segment)",
                       APPLICATION_ERROR)
    header = _header(msg)
    if not _BATCH_SEGMENTS.isdisjoint(msg._segments) or (msg.repeated is not None and "MSH" in msg.repeated):
        # Nothing of a batch is kept or answered message by message: one AR, naming the batch.
        named = next((s for s in ("FHS", "BHS", "BTS", "FTS") if msg.has(s)), "MSH")
        return _reject(header, named, BATCH_REASON if named != "MSH" else
                       "appears more than once: " + BATCH_REASON, UNSUPPORTED_MESSAGE_TYPE)
    processing = msg.get("MSH", 11, 1)
    if msg.repeats is not None and (gate := next((f for f in _GATE_FIELDS if f in msg.repeats), None)):
        # Who sent it or what it is cannot be told: refused as any other problem of these fields (AR, not kept).
        return _reject(header, gate, f"{REPEATS_REASON}; the message was not taken", DATA_TYPE_ERROR)
    if not header.control_id:
        return _reject(header, "MSH-10", "message control id is required (it is the idempotency key)",
                       REQUIRED_FIELD_MISSING)
    if not header.version.startswith("2."):
        return _reject(header, "MSH-12", "only HL7 version 2.x is accepted (ITK profile: 2.4)", UNSUPPORTED_VERSION_ID)
    if processing.upper() != "P":
        return _reject(header, "MSH-11", "only production messages (processing id P) change the register",
                       UNSUPPORTED_PROCESSING_ID)
    if header.message_type != "ADT":
        return _reject(header, "MSH-9", "only ADT messages are accepted", UNSUPPORTED_MESSAGE_TYPE)
    event = header.trigger_event
    if event == "A11":
        # An A11 carries the ZU5 of the admission it cancels: with ZU5-8 `cto-recall` that admission was a
        # recall (`cto-recalled`, dated as the A01 dated it), else a detention.
        kind = (msg.get("ZU5", ADMISSION_KIND_FIELD, 1) or "").lower()
        if kind == CTO_REVOCATION:
            # No admission was a revocation: read as cancelling a detention, it could retract the detention the
            # CTO followed (ZU5-5 may be its day). Refused (AE naming ZU5-8), about the revocation it names.
            mapper = _Mapper(msg, header)
            mapper._about_type = "cto-revoked"
            mapper.problem(ADMISSION_KIND_POSITION, f"is {CTO_REVOCATION} on an A11 (cancel admit): an A11 cancels "
                           f"an admission, a detention or a CTO recall ({CTO_RECALL}), and a revocation (MHA s17F) "
                           "is neither; nothing was cancelled. A revocation recorded in error is retracted through "
                           "the register (POST /v1/register-changes/{change_id}/retraction)")
            return mapper._error()
        recall = kind == CTO_RECALL
        return _held_cancellation(msg, header, "cto-recalled" if recall else "detained",
                                  "A11 (cancel admit) cannot be applied: the register change "
                                  "contract has no cancellation; a detention already recorded stays until corrected "
                                  "by hand. The message is held in quarantine for review")
    if event == "A13":
        return _held_cancellation(msg, header, "left-hospital", "A13 (cancel discharge) cannot be applied: the "
                                  "register change contract has no cancellation of 'left-hospital', and an "
                                  "entitlement it started is not withdrawn. The message is held in quarantine for "
                                  "review")
    if event == "A40":
        return _merge(msg, header)
    if event in ("A28", "A31"):
        return _reject(header, "MSH-9", f"{event} (person update) is not a register change: a change of address "
                       "cannot be told from other person updates without the register's state, and the council of "
                       "residence cannot be derived from a postcode; send a move as a canonical 'moved' change "
                       "with residence_la_gss", UNSUPPORTED_EVENT_CODE)
    if event not in SUPPORTED_EVENTS:
        return _reject(header, "MSH-9", "this ADT event is not taken; accepted: A01, A02, A03, A08, A11, A13 "
                       "and A40", UNSUPPORTED_EVENT_CODE)
    return _Mapper(msg, header).map()


def _merge(msg: _Msg, header: Header) -> MappingResult:
    """A40 (merge patient, patient identifier list): PDS merged two NHS numbers. PID-3 the retained number,
    MRG-1 the superseded one, each exactly one NHS number (a repetition with assigning authority NHS or
    identifier type NH); one merge a message (a second PID or MRG is refused). Errors: AE naming the field,
    held in quarantine as any message that does not map."""
    mapper = _Mapper(msg, header)
    mapper.origins = {"retained": "PID-3", "superseded": "MRG-1", "birth_date": "PID-7"}
    if msg.repeated is not None and not {"PID", "MRG"}.isdisjoint(msg.repeated):
        named = "MRG" if "MRG" in msg.repeated else "PID"
        mapper.problem(named, "appears more than once: one merge a message (send each PID / MRG pair as its "
                       "own A40)", SEGMENT_SEQUENCE_ERROR)
        return mapper._error()
    numbers: dict[str, str] = {}
    for segment, key, field_name in (("PID", "retained", "PID-3"), ("MRG", "superseded", "MRG-1")):
        if not msg.has(segment):
            mapper.problem(segment, "segment is required on an A40 (merge patient)", REQUIRED_FIELD_MISSING)
            continue
        found = _Mapper._identifiers(msg, segment)
        if not found:
            mapper.problem(field_name, "has no NHS number (a repetition with assigning authority NHS or "
                           "identifier type NH)", REQUIRED_FIELD_MISSING)
        elif len(found) > 1:
            mapper.problem(field_name, "has more than one different NHS number")
        else:
            numbers[key] = found.pop()
    if mapper.problems or msg.bad_escapes is not None or msg.repeats is not None:
        return mapper._error()
    return MappingResult(Disposition.MERGE, header, origins=dict(mapper.origins), merge=numbers)


def _held_cancellation(msg: _Msg, header: Header, cancels: str, reason: str) -> MappingResult:
    """A11 / A13: refused (AR) and held in quarantine, once the access policy has been asked about what it
    cancels (`about`: the change type it would undo, PID-3's one NHS number, the hospital named), as for any
    message: nothing of one about someone the trust has no role for is kept."""
    mapper = _Mapper(msg, header)
    mapper._about_type = cancels
    result = _reject(header, "MSH-9", reason, UNSUPPORTED_EVENT_CODE, quarantine=True)
    about = mapper._about()  # (records where the hospital was read: a refusal's ERR names that HL7 field)
    cancelled_on = mapper._cancelled_on(_CANCELLED_DATES[cancels])
    if msg.repeats is not None:  # a field it is read from was sent with repetitions: nothing is cancelled (AE)
        return mapper._error()
    return MappingResult(result.disposition, header, problems=result.problems, quarantine=True, about=about,
                         origins=dict(mapper.origins), cancelled_on=cancelled_on)


# Where an A11 / A13 gives the date of the change it cancels: the fields the A01 / A03 mapping reads the
# change's `effective_date` from, then EVN-6 (event occurred).
_CANCELLED_DATES = {"detained": (("ZU5", 5), ("PV1", 44), ("EVN", 6)),
                    "cto-recalled": (("PV1", 44), ("ZU5", 5), ("EVN", 6)),  # a recall: the admit date first
                    "left-hospital": (("PV1", 45), ("EVN", 6))}


_UNREAD_ABOUT = {"A03": "left-hospital", "A02": "section-changed", "A08": "section-changed"}


class _Mapper:
    def __init__(self, msg: _Msg, header: Header) -> None:
        self.msg = msg
        self.header = header
        self.problems: list[HL7Problem] = []
        self.notes: list[str] = []
        self._home: int | None | bool = False  # `_home_address`, once found
        self._about_type: str | None = None  # the change type the message would be (`about`) ...
        self._change: dict[str, Any] | None = None  # ... and the change as far as mapped (`_base`)
        self.origins: dict[str, str] = {
            "source_message_id": "MSH-10", "source_system": "MSH-3", "notified_on": "EVN-2",
            "person": "PID", "person.nhs_number": "PID-3", "person.given_name": "PID-5.2",
            "person.family_name": "PID-5.1", "person.birth_date": "PID-7", "person.postcode": "PID-11.5",
        }

    def problem(self, f: str, reason: str, code: str = APPLICATION_ERROR) -> None:
        self.problems.append(HL7Problem(f, reason, code))

    def map(self) -> MappingResult:
        event = self.header.trigger_event
        if event == "A01":
            result = self._admit()
        elif (death := self._death()) is not None:  # A02, A03, A08 saying the patient died: nothing else read
            result = death
        elif event == "A03":
            result = self._discharge()
        else:
            result = self._legal_status_update()  # A02, A08
        if self.msg.repeated is not None:
            repeated = [name for name in ONCE_SEGMENTS if name in self.msg.repeated]
            if repeated:
                return self._repeated(repeated)
        return result

    def _repeated(self, names: list[str]) -> MappingResult:
        """AE naming each segment the message allows once and carries more often: which one the sender
        meant cannot be told, so none is read. `about` as far as every occurrence agrees."""
        assert self.msg.repeated is not None
        self.problems = []
        for name in names:
            count = len(self.msg.repeated[name])
            self.problem(name, f"appears {'twice' if count == 2 else f'{count} times'}: the "
                         f"{self.header.trigger_event} message allows it once", SEGMENT_SEQUENCE_ERROR)
        self._about_unread()
        self._change = None  # read afresh from every occurrence (`_about`)
        return MappingResult(Disposition.ERROR, self.header, problems=tuple(self.problems),
                             origins=dict(self.origins), about=self._about())

    def _about_unread(self) -> None:
        """A message refused before its change type was told (a repeated segment, a repeated field on a message
        that would change nothing): on an A03, `left-hospital`; on an A02 / A08 `section-changed` (any change of
        legal status is the care provider's to report, `_legal_status_update`); on an A01 none (a detention
        cannot be told from an informal admission)."""
        if self._about_type is None:
            self._about_type = _UNREAD_ABOUT.get(self.header.trigger_event)

    # -- events --------------------------------------------------------------

    def _admit(self) -> MappingResult:
        code = self._legal_status(2, required_reason=(
            "legal status on admission is required on A01: without it a detention cannot be told from an "
            "informal admission"))
        if self.problems or code is None:
            return self._error()
        if self._zu5_8() == CTO_REVOCATION:
            # About the revocation it names (the care provider's to report), whatever ZU5-2 holds.
            self._base("cto-revoked")
            self.problem(ADMISSION_KIND_POSITION, f"is {CTO_REVOCATION} on an A01: a revocation (MHA s17F) is of "
                         "a community patient already in hospital on recall (the A01 with ZU5-8 "
                         f"{CTO_RECALL}); send it as the change of legal status it is, an A02 / A08 with ZU5-3 the "
                         "section the patient is detained under again")
            return self._error()
        kind = self._admission_kind()
        if code in NOT_DETAINED or code == NOT_KNOWN:
            if kind == CTO_RECALL:  # a recall reported with no detention: which one is wrong cannot be told
                self._base("cto-recalled")
                self._recall_needs_qualifying(code, "ZU5-2")
                return self._error()
            if code == NOT_KNOWN:
                self.problem("ZU5-2", "is 99 (not known): the hub cannot tell whether the admission is a "
                             "detention", TABLE_VALUE_NOT_FOUND)
                return self._error()
            # (ZU5-8 is not read on a message that changes nothing: a value it does not take is no problem here)
            return self._no_change("the admission is not a detention (ZU5-2): not a register change")
        if kind == CTO_RECALL:
            # Dated by the admission (the day the patient was recalled to hospital) before ZU5-5: "date detention
            # commenced" may be the original detention's, which the CTO followed.
            return self._recall(code, "ZU5-2", (("PV1", 44), ("ZU5", 5)),
                                "the admit date (PV1-44), or ZU5-5, is required to date a recall")
        change = self._base("detained")
        change["legal_status_code"] = code
        self.origins["legal_status_code"] = "ZU5-2"
        self.origins["change_type"] = ADMISSION_KIND_POSITION
        self._order_type(change)
        change["effective_date"] = self._first_date(
            (("ZU5", 5), ("PV1", 44)), "date detention commenced (ZU5-5), or the admit date (PV1-44), is required")
        self._residence(change)
        self._child_facts(change)
        return self._done(change, recall_unstated=kind is None)

    def _discharge(self) -> MappingResult:
        change = self._base("left-hospital")
        change["effective_date"] = self._first_date((("PV1", 45),), "discharge date/time is required on A03")
        return self._done(change)

    def _death(self) -> MappingResult | None:
        """PID-30 (patient death indicator) `Y`, or on an A03 PV1-36 (discharge method) 4 "patient died": the
        change `died`, dated PID-29 (patient death date and time), else on an A03 the discharge (PV1-45). None
        when the message says nothing of a death (PID-30 `N` or empty, no PID-29, no PV1-36 4): read as before.
        Refused (AE, about `died`): PID-30 another value; PID-30 `N` with PID-29 or PV1-36 4 (contradictory);
        PID-29 without PID-30 `Y` or PV1-36 4 (a death date alone is not taken as a death); no date of death; on
        an A03, a death after the discharge (the patient left hospital alive: two changes, not one)."""
        discharge = self.header.trigger_event == "A03"
        indicator = self.msg.get("PID", 30).upper()
        died_at = self.msg.get("PID", 29)
        by_method = discharge and self.msg.get("PV1", 36) == DISCHARGE_METHOD_DIED
        if not (indicator or died_at or by_method):
            return None
        if indicator not in ("Y", "N", ""):
            self._about_type = "died"
            self.problem(DEATH_INDICATOR_POSITION, "is not Y (the patient has died) or N (the patient has not "
                         "died), HL7 table 0136", TABLE_VALUE_NOT_FOUND)
            return self._error()
        if indicator == "N":
            if not (died_at or by_method):
                return None
            self._about_type = "died"
            says = " and ".join(what for what, present in (
                (f"{DEATH_DATE_POSITION} gives a date of death", died_at),
                (f"the discharge method ({DISCHARGE_METHOD_POSITION}) is {DISCHARGE_METHOD_DIED}, patient died",
                 by_method)) if present)
            self.problem(DEATH_INDICATOR_POSITION, f"is N (the patient has not died), but {says}: the message "
                         "contradicts itself; nothing was recorded")
            return self._error()
        if not indicator and not by_method:  # PID-29 alone
            self._about_type = "died"
            self.problem(DEATH_INDICATOR_POSITION, f"is required (Y) with a date of death in {DEATH_DATE_POSITION}: "
                         "a death is recorded only when the message says the patient died", REQUIRED_FIELD_MISSING)
            return self._error()
        change = self._base("died", care_facts=False)
        self.origins["change_type"] = DEATH_INDICATOR_POSITION if indicator else DISCHARGE_METHOD_POSITION
        if discharge:
            change["effective_date"] = self._first_date(
                (("PID", 29), ("PV1", 45)), "patient death date and time is required when the patient died "
                "(PID-30 Y or PV1-36 4), or the discharge date/time (PV1-45)")
            if died_at and change["effective_date"] is not None:
                left = _hl7_date(self.msg.get("PV1", 45))
                if left is not None and change["effective_date"] > left.isoformat():
                    self.problem(DEATH_DATE_POSITION, "is after the discharge date (PV1-45): the patient left "
                                 "hospital alive and died later, two register changes (left-hospital, then died) "
                                 "that one A03 cannot carry; nothing was recorded")
        else:
            change["effective_date"] = self._first_date(
                (("PID", 29),), f"patient death date and time is required with PID-30 Y on "
                f"{self.header.trigger_event}: the day the person died")
        return self._done(change)

    def _legal_status_update(self) -> MappingResult:
        event = self.header.trigger_event
        if self._zu5_8() == CTO_REVOCATION:
            return self._revocation()
        if not self.msg.get("ZU5", 3):
            return self._no_change(f"{event} carries no legal status (ZU5-3): not a register change")
        # A change of legal status, or leaving detention for an informal stay, or nothing: the first two
        # are the care provider's to report alike (the access policy asks the same of both).
        self._about_type = "section-changed"
        current = self._legal_status(3)
        before = self._legal_status(2, required_reason=(
            f"legal status on admission is required with ZU5-3 on {event}: a change of legal status is told "
            "by comparing the two"))
        if self.problems or current is None or before is None:
            return self._error()
        if current == before:
            return self._no_change(f"legal status unchanged (ZU5-3 = ZU5-2): {event} is not a register change")
        if current == NOT_KNOWN:
            self.problem("ZU5-3", "is 99 (not known): the change of legal status cannot be recorded",
                         TABLE_VALUE_NOT_FOUND)
            return self._error()
        kind = self._admission_kind() if current in DETAINED else None
        if kind == CTO_RECALL:
            return self._recall(current, "ZU5-3", (("EVN", 6),), "event occurred date/time is required to date "
                                "a recall")
        if current in DETAINED:
            change = self._base("section-changed")
            change["legal_status_code"] = current
            self.origins["legal_status_code"] = "ZU5-3"
            self.origins["change_type"] = ADMISSION_KIND_POSITION
            self._order_type(change)
        elif current == "01" and before in DETAINED:
            change = self._base("section-ended-stayed-informally")
        else:
            return self._no_change(f"{event}: legal status moved between statuses that are not detentions")
        change["effective_date"] = self._first_date((("EVN", 6),), "event occurred date/time is required "
                                                    "to date a change of legal status")
        return self._done(change, recall_unstated=kind is None and change["change_type"] == "section-changed")

    # -- fields --------------------------------------------------------------

    def _base(self, change_type: str, care_facts: bool = True) -> dict[str, Any]:
        """The fields every change carries; with `care_facts` the hospital (PV1-3.4 ...) and GP (PD1-3.3) too
        (not on `died`, which takes neither)."""
        self._about_type = change_type
        change: dict[str, Any] = {
            "source_system": self.header.sending_application or self.header.sending_facility,
            "source_message_id": self.header.control_id,
            "change_type": change_type,
            "person": self._person(),
        }
        self._change = change
        recorded = self.msg.get("EVN", 2)
        if recorded:
            notified = _hl7_date(recorded)
            if notified is None:
                self.problem("EVN-2", "is not a valid HL7 date/time", DATA_TYPE_ERROR)
            else:
                change["notified_on"] = notified.isoformat()
        if not care_facts:
            return change
        hospital, origin = self._hospital()
        if hospital:
            change["hospital_ods"] = hospital
            self.origins["hospital_ods"] = origin
        gp = self.msg.get("PD1", 3, 3).upper()
        if gp:
            change["gp_practice_ods"] = gp
            self.origins["gp_practice_ods"] = "PD1-3.3"
        return change

    def _person(self) -> dict[str, Any]:
        if not self.msg.has("PID"):
            self.problem("PID", "segment is required", REQUIRED_FIELD_MISSING)
            return {}
        person: dict[str, Any] = {}
        numbers = self._nhs_numbers()
        if not numbers:
            self.problem("PID-3", "has no NHS number (a repetition with assigning authority NHS or "
                         "identifier type NH)", REQUIRED_FIELD_MISSING)
        elif len(numbers) > 1:
            self.problem("PID-3", "has more than one different NHS number")
        else:
            person["nhs_number"] = numbers.pop()
        name = self._legal_name()
        family, given = self.msg.get("PID", 5, 1, name), self.msg.get("PID", 5, 2, name)
        if family:
            person["family_name"] = family
        if given:
            person["given_name"] = given
        birth = self.msg.get("PID", 7)
        if birth:
            parsed = _hl7_date(birth)
            if parsed is None:
                self.problem("PID-7", "is not a valid HL7 date/time", DATA_TYPE_ERROR)
            else:
                person["birth_date"] = parsed.isoformat()
        address = self._home_address()
        postcode = self.msg.get("PID", 11, 5, address) if address else ""
        if postcode:
            person["postcode"] = postcode.upper()
        return person

    def _nhs_numbers(self) -> set[str]:
        """PID-3's NHS numbers: the repetitions with assigning authority NHS or identifier type NH/NHS."""
        return self._identifiers(self.msg, "PID")

    @staticmethod
    def _identifiers(msg: _Msg, segment: str) -> set[str]:
        """The NHS numbers of `segment`'s patient identifier list (PID-3, MRG-1: both CX, repeating): the
        repetitions with assigning authority NHS or identifier type NH/NHS."""
        f = 3 if segment == "PID" else 1
        numbers = set()
        for r in range(1, msg.repetitions(segment, f) + 1):
            authority = msg.get(segment, f, 4, r).upper()
            id_type = msg.get(segment, f, 5, r).upper()
            value = msg.get(segment, f, 1, r)
            if value and (authority == "NHS" or id_type in _NHS_TYPES):
                numbers.add(value.replace(" ", ""))
        return numbers

    def _about(self) -> dict[str, Any] | None:
        """What a message that did not map is about (`MappingResult.about`), read afresh (nothing of a
        problem found on the way is needed): its change type, its one NHS number, the hospital named."""
        if self._about_type is None:
            return None
        about: dict[str, Any] = {"change_type": self._about_type}
        if self._change is not None:  # read already (`_base`)
            nhs, hospital = self._change["person"].get("nhs_number"), self._change.get("hospital_ods")
            origin = self.origins.get("hospital_ods", "")
        elif self.msg.repeated is not None:  # every occurrence of PID and PV1 must name the same
            numbers: set[str] = set()
            for i in range(len(self.msg.repeated.get("PID", (None,)))):
                numbers |= _Mapper(self.msg.occurrence("PID", i) if "PID" in self.msg.repeated else self.msg,
                                   self.header)._nhs_numbers()
            nhs = next(iter(numbers)) if len(numbers) == 1 else None
            read = [_Mapper(self.msg.occurrence("PV1", i) if "PV1" in self.msg.repeated else self.msg,
                            self.header)._hospital() for i in range(len(self.msg.repeated.get("PV1", (None,))))]
            hospital, origin = read[0] if len({h for h, _ in read}) == 1 else (None, "")
        else:
            numbers = self._nhs_numbers()
            nhs = next(iter(numbers)) if len(numbers) == 1 else None
            hospital, origin = self._hospital()
        if nhs:
            about["person"] = {"nhs_number": nhs}
        if hospital and self.msg.repeats is not None and origin.partition(".")[0] in self.msg.repeats:
            hospital = None  # read from a field sent with repetitions: which hospital is meant cannot be told
        if hospital:
            about["hospital_ods"] = hospital
            if self._change is None:  # (`_base` recorded it) where it was read: a refusal's ERR names it
                self.origins["hospital_ods"] = origin
        return about

    def _legal_name(self) -> int:
        """The PID-5 repetition (XPN, repeating in HL7 v2.4) that is the person's name: the one with name type
        (XPN-7) `L`, legal, else the first (v2.4 3.4.2.5: "the primary or legal name of the patient is reported
        first"; the ITK examples send one, typed L)."""
        for r in range(1, self.msg.repetitions("PID", 5) + 1):
            if self.msg.get("PID", 5, 7, r).upper() == "L":
                return r
        return 1

    def _home_address(self) -> int | None:
        """The PID-11 repetition that is the home address (XAD-7 "H", or the
        first one if none is typed); found once (the person and the residence
        both ask)."""
        if self._home is not False:
            return self._home
        count = self.msg.repetitions("PID", 11)
        home = 1 if count else None
        for r in range(1, count + 1):
            if self.msg.get("PID", 11, 7, r).upper() == "H":
                home = r
                break
        self._home = home
        return home

    def _hospital(self) -> tuple[str | None, str]:
        # ITK: PV1-3 assigned location, PL-4 facility = the site's ODS code
        # (the A01 example has RCB55 under sending facility RCB); PV1-39
        # servicing facility if that is empty; else the sending trust (MSH-4).
        # Each read only when the one before gives no code: a field is read (and refused for a repetition) only
        # when its value would be used.
        for segment, f, c, origin in (("PV1", 3, 4, "PV1-3.4"), ("PV1", 39, 1, "PV1-39"), ("MSH", 4, 1, "MSH-4")):
            value = self.header.sending_facility if segment == "MSH" else self.msg.get(segment, f, c)
            if value and _ODS.match(value.upper()):
                return value.upper(), origin
        return None, "PV1-3.4"

    def _residence(self, change: dict[str, Any]) -> None:
        """Council of ordinary residence: never guessed. HL7 v2.4 XAD-9
        (county/parish code) of the home address, when it holds an English
        council GSS code; the NHS pseudo-postcode ZZ99 3VZ means no fixed abode."""
        address = self._home_address()
        postcode = (self.msg.get("PID", 11, 5, address) if address else "").replace(" ", "").upper()
        council = (self.msg.get("PID", 11, 9, address) if address else "").upper()
        self.origins["residence_la_gss"] = "PID-11.9"
        self.origins["no_fixed_abode"] = "PID-11.5"
        if postcode == NO_FIXED_ABODE_POSTCODE:
            change["no_fixed_abode"] = True
        elif council and _GSS_COUNCIL.match(council):
            change["residence_la_gss"] = council
        elif council:
            self.problem("PID-11.9", "is not an English council GSS code (E06, E07, E08, E09 or E10 and six digits)",
                         TABLE_VALUE_NOT_FOUND)
        else:
            self.problem("PID-11.9", "council of ordinary residence (GSS code in XAD-9 county/parish code of the home "
                         "address) is required for a detention: responsibility follows ordinary residence and is "
                         "not derived from a postcode; use postcode ZZ99 3VZ for no fixed abode",
                         REQUIRED_FIELD_MISSING)

    def _child_facts(self, change: dict[str, Any]) -> None:
        """A detention's two optional facts for a child's notices (hub/domain/children.py), read on an A01
        `detained` only (neither is a fact any other change takes, and an A02 / A08 repeats PV2 as it stands):
        PV2-10, the expected stay in days, as `expected_stay_weeks` (whole weeks, rounded down: module
        constants), and ZU5-9, the council maintaining an EHC plan (component 1, any case), as
        `ehc_plan_la_gss`. Ingest checks them as it checks REST's (a GSS code, a social services authority;
        1-260 weeks), naming PV2-10 / ZU5-9 (`origins`). PV2-10 not a number, negative, or over 1826 days:
        a problem naming PV2-10, never quoting it."""
        self.origins["expected_stay_weeks"] = EXPECTED_STAY_POSITION
        self.origins["ehc_plan_la_gss"] = EHC_PLAN_POSITION
        days = self.msg.get("PV2", 10)
        if days:
            if not (days.isascii() and _NM.fullmatch(days)):
                self.problem(EXPECTED_STAY_POSITION, "is not a number (HL7 NM): the estimated length of inpatient "
                             "stay in days", DATA_TYPE_ERROR)
            elif (value := Decimal(days)) < 0:
                self.problem(EXPECTED_STAY_POSITION, "must not be negative: the estimated length of inpatient stay "
                             "in days")
            elif value > MAX_EXPECTED_STAY_DAYS:
                self.problem(EXPECTED_STAY_POSITION, f"must be at most {MAX_EXPECTED_STAY_DAYS} days (the register "
                             f"takes an expected stay of up to {MAX_EXPECTED_STAY_WEEKS} weeks)")
            elif (weeks := int(value) // 7) >= 1:
                change["expected_stay_weeks"] = weeks
            else:
                self.notes.append(f"{EXPECTED_STAY_POSITION}: an expected stay under 7 days is under one whole week, "
                                  "not carried")
        council = self.msg.get("ZU5", EHC_PLAN_FIELD, 1)
        if council:
            change["ehc_plan_la_gss"] = council.upper() if council.isascii() else council

    def _legal_status(self, zu5_field: int, required_reason: str | None = None) -> str | None:
        position = f"ZU5-{zu5_field}"
        value = self.msg.get("ZU5", zu5_field, 1)
        if not value:
            if required_reason:
                self.problem(position, required_reason, REQUIRED_FIELD_MISSING)
            return None
        mapped = england_code(value)
        if mapped.problem:
            self.problem(position, mapped.problem, TABLE_VALUE_NOT_FOUND)
            return None
        if mapped.note:
            self.notes.append(f"{position}: {mapped.note}")
        return mapped.england_code

    def _order_type(self, change: dict[str, Any]) -> None:
        """ZU5-7 (hub-local): the CP(I)A 1964 order made, read with the legal status the change carries
        (ZU5-2 on A01, ZU5-3 on A02 / A08). Component 1, the contract's code in any case. Left out, it is
        not sent: ingest then asks for it with legal status 31, naming ZU5-7 (as REST names order_type)."""
        self.origins["order_type"] = ORDER_TYPE_POSITION
        value = self.msg.get("ZU5", ORDER_TYPE_FIELD, 1)
        if not value:
            return
        code = value.lower() if value.isascii() else value
        if code not in CPIA_ORDER_TYPES:
            self.problem(ORDER_TYPE_POSITION, "is not a CP(I)A 1964 order code: one of "
                         f"{', '.join(CPIA_ORDER_TYPES)} (any case); only a hospital order qualifies for s117",
                         TABLE_VALUE_NOT_FOUND)
            return
        change["order_type"] = code

    def _zu5_8(self) -> str:
        """ZU5-8 component 1, lower case when ASCII ("" when not sent)."""
        value = self.msg.get("ZU5", ADMISSION_KIND_FIELD, 1)
        return value.lower() if value.isascii() else value

    def _admission_kind(self) -> str | None:
        """ZU5-8 (hub-local): `cto-recall` or `fresh-application` (any case; component 1), None when not sent
        (`cto-revocation` is read before: `_revocation`). Another value is a problem naming ZU5-8 (never quoting
        it) and is read as `fresh-application`, the reading without ZU5-8 (the message is refused: nothing of it
        is recorded)."""
        kind = self._zu5_8()
        if not kind:
            return None
        if kind not in ADMISSION_KINDS:
            self.problem(ADMISSION_KIND_POSITION, f"is not {CTO_RECALL} (the recall of a community patient to "
                         f"hospital, MHA s17E: the CTO stays in force), {FRESH_APPLICATION} (a new application "
                         f"or order: it ends a CTO, s6(4), s17C(c)) or, on an A02 / A08, {CTO_REVOCATION} (the "
                         "CTO revoked, s17F(4): the section it was made on revived), in any case",
                         TABLE_VALUE_NOT_FOUND)
            return FRESH_APPLICATION
        return kind

    def _revocation(self) -> MappingResult:
        """ZU5-8 `cto-revocation` on an A02 / A08: the change `cto-revoked`, dated EVN-6 as any change of legal
        status, carrying the section the patient is detained under again (ZU5-3, with ZU5-7 for a CP(I)A order),
        which must be a qualifying detention (a CTO follows one, and its revocation revives it: MHA s17G). Told
        by ZU5-8, not by comparing ZU5-3 with ZU5-2: after a recall both are usually the CTO's section, so ZU5-2
        is not read. The person need not be on a CTO on the register: ingest takes it as it takes a REST
        `cto-revoked` (the rules engine reads one without a CTO on record as evidence of the detention)."""
        change = self._base("cto-revoked")
        self.origins["change_type"] = ADMISSION_KIND_POSITION
        code = self._legal_status(3, required_reason=(
            f"legal status at the event is required with ZU5-8 {CTO_REVOCATION}: the section the patient is "
            "detained under again, the one the CTO was made on (MHA s17G)"))
        if code is not None:
            if code not in QUALIFYING:
                self.problem(ADMISSION_KIND_POSITION, f"is {CTO_REVOCATION}, but the legal status (ZU5-3) is not a "
                             "qualifying detention: a community treatment order follows detention under s3, or a "
                             "hospital order or transfer direction, and revoking it (MHA s17F(4)) detains the "
                             "patient again under that section (s17G)")
            change["legal_status_code"] = code
            self.origins["legal_status_code"] = "ZU5-3"
            self._order_type(change)
        change["effective_date"] = self._first_date((("EVN", 6),), "event occurred date/time is required to date "
                                                    "a revocation")
        return self._done(change)

    def _recall(self, code: str, legal_status_at: str, dates: tuple[tuple[str, int], ...],
                missing: str) -> MappingResult:
        """ZU5-8 `cto-recall`: the change `cto-recalled`, dated by `dates`. The legal status (`code`, read
        from `legal_status_at`) must be a qualifying detention (a CTO follows one, and its recall detains under
        it); it is not carried: `cto-recalled` takes none (the CTO keeps the section it was made on), nor does
        it take a council of residence (not read) or an order type (ZU5-7 not read)."""
        change = self._base("cto-recalled")
        self.origins["change_type"] = ADMISSION_KIND_POSITION
        self._recall_needs_qualifying(code, legal_status_at)
        change["effective_date"] = self._first_date(dates, missing)
        return self._done(change)

    def _recall_needs_qualifying(self, code: str | None, legal_status_at: str) -> None:
        if code not in QUALIFYING:
            self.problem(ADMISSION_KIND_POSITION, f"is {CTO_RECALL}, but the legal status ({legal_status_at}) is "
                         "not a qualifying detention: a community treatment order follows detention under s3, or "
                         "a hospital order or transfer direction, and a recall (MHA s17E) detains under it")

    def _cancelled_on(self, positions: tuple[tuple[str, int], ...]) -> date | None:
        """The first of `positions` holding a value, read as a date (None if none does, or it is not a date);
        `origins["effective_date"]` names the field read (or the first, when none holds a value)."""
        for segment, f in positions:
            value = self.msg.get(segment, f)
            if value:
                self.origins["effective_date"] = f"{segment}-{f}"
                return _hl7_date(value)
        self.origins["effective_date"] = "{}-{}".format(*positions[0])
        return None

    def _first_date(self, positions: tuple[tuple[str, int], ...], missing: str) -> str | None:
        for segment, f in positions:
            value = self.msg.get(segment, f)
            if value:
                parsed = _hl7_date(value)
                self.origins["effective_date"] = f"{segment}-{f}"
                if parsed is None:
                    self.problem(f"{segment}-{f}", "is not a valid HL7 date/time", DATA_TYPE_ERROR)
                    return None
                return parsed.isoformat()
        segment, f = positions[0]
        self.origins["effective_date"] = f"{segment}-{f}"
        self.problem(f"{segment}-{f}", missing, REQUIRED_FIELD_MISSING)
        return None

    # -- results -------------------------------------------------------------

    def _done(self, change: dict[str, Any], recall_unstated: bool = False) -> MappingResult:
        if self.problems or self.msg.bad_escapes is not None or self.msg.repeats is not None:
            return self._error()
        return MappingResult(Disposition.CHANGE, self.header, change=change, notes=tuple(self.notes),
                             origins=dict(self.origins), recall_unstated=recall_unstated)

    def _error(self) -> MappingResult:
        if self.msg.repeats is not None:
            self._about_unread()
        about = self._about()
        repeats = self.msg.repeats or {}  # (after `_about`, whose reads may add to it)
        if repeats:  # a problem found in a repeated field's first repetition: the repetition is the problem
            self.problems = [p for p in self.problems if p.field.partition(".")[0] not in repeats]
        for position in dict.fromkeys(self.msg.bad_escapes or ()):  # each position read with a bad escape, once
            if position in repeats:
                continue
            self.problem(position, "holds an escape sequence that is not valid HL7 (v2.4 2.7: \\F\\ \\S\\ \\T\\ "
                         "\\R\\ \\E\\ or \\Xhh..\\): the value cannot be read as sent", DATA_TYPE_ERROR)
        for position, reason in repeats.items():
            self.problem(position, reason, REPEATS_CODES[reason])
        return MappingResult(Disposition.ERROR, self.header, problems=tuple(self.problems), notes=tuple(self.notes),
                             origins=dict(self.origins), about=about)

    def _no_change(self, reason: str) -> MappingResult:
        if self.msg.repeats is not None:  # a field it was told from was sent with repetitions
            return self._error()
        return MappingResult(Disposition.NO_CHANGE, self.header, notes=(*self.notes, reason),
                             origins=dict(self.origins))
