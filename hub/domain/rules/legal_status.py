"""Which England MHA legal status codes ground s117 entitlement."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args

from hub.domain import citations
from hub.domain.ports import ReferenceData

CPIA_CODE = "31"
CPIA_HOSPITAL_ORDER = "hospital-order"
# The order a court made on a CP(I)A 1964 finding (s5(2), as substituted in
# 2004): a hospital order (with or without a restriction order; s37 effect:
# qualifies, Worcs 3.3), a supervision order or an absolute discharge (neither
# detains nor qualifies). The register change contract takes these codes only
# (hub/ingest/contract.py): entitlement turns on them, so they are never free text.
CpiaOrderType = Literal["hospital-order", "supervision-order", "absolute-discharge"]
CPIA_ORDER_TYPES: tuple[str, ...] = get_args(CpiaOrderType)


@dataclass(frozen=True, slots=True)
class SectionVerdict:
    code: str
    label: str  # "s3", "s37/41", "CP(I)A 1964 hospital order"
    known: bool
    detained: bool
    qualifying: bool
    explanation: str
    citation: str


def normalise_code(code: str) -> str:
    code = code.strip()
    return code.zfill(2) if code.isascii() and code.isdigit() else code


@lru_cache(maxsize=256)  # a pure function of a few dozen codes' texts; every detention's evaluation asks (about 2 us)
def section_label(code: str, description: str) -> str:
    if code == CPIA_CODE:
        return "CP(I)A 1964 order"
    sections = re.findall(r"Section (\w+(?:\(\d\))?)", description)
    if not sections:
        return description.lower()
    return "/".join(f"s{section}" for section in sections)


def classify(ref: ReferenceData, raw_code: str | None, order_type: str | None) -> SectionVerdict:
    code = normalise_code(raw_code or "")
    status = ref.legal_status(code) if code else None
    if status is None:
        return SectionVerdict(
            code=code,
            label=f"legal status {code or '(none)'}",
            known=False,
            detained=bool(code),
            qualifying=False,
            explanation=f"legal status code {code or '(none)'} is not an England MHA code, so it cannot ground s117",
            citation=citations.QUALIFYING_SECTIONS,
        )
    label = section_label(code, status.description)
    if status.s117_qualifying == "yes":
        return SectionVerdict(code, label, True, status.detained, True,
                              f"{label} is a qualifying section", citations.QUALIFYING_SECTIONS)
    if status.s117_qualifying == "review":
        # A CP(I)A disposal qualifies only when the court made a hospital order.
        if order_type == CPIA_HOSPITAL_ORDER:
            return SectionVerdict(code, "CP(I)A 1964 hospital order", True, status.detained, True,
                                  "a CP(I)A 1964 hospital order has s37 effect and qualifies", citations.CPIA_ORDER)
        # The code, never other text: a change recorded before the codes were closed may hold anything.
        recorded = order_type if order_type in CPIA_ORDER_TYPES else "not one of the order codes" if order_type \
            else "none"
        return SectionVerdict(code, label, True, status.detained, False,
                              f"a CP(I)A 1964 disposal qualifies only as a hospital order (order recorded: "
                              f"{recorded})", citations.CPIA_ORDER)
    return SectionVerdict(code, label, True, status.detained, False,
                          f"{label} is not a qualifying section", citations.NOT_QUALIFYING)
