"""MHA legal status: the HSCIC ITK HL7 v2 tables ZU047 / ZU048 (2014) to the
England legal status classification the hub keeps (hub/refdata/data/
mha_legal_status_england.csv).

The ITK tables carry the same values unpadded ("3" for s3) and two codes the
England list no longer has: 33 Supervised Discharge (abolished on 3 November
2008, when community treatment orders began) and 34 s45A (one code, which
England split into 37 "limitation direction in force" and 38 "limitation
direction ended").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

# England codes shared with the ITK table value for value (padded to two digits).
_SAME = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 19, 20, 31, 32, 35, 36, 98, 99})
# England codes that mean "formally detained" (a hospital stay under a section).
DETAINED = frozenset({"02", "03", "04", "05", "06", "07", "08", "09", "10", "12", "13", "14", "15", "16",
                      "17", "18", "19", "20", "31", "32", "37", "38"})
# Not detained: informal, guardianship (s7, s37 guardianship order), not applicable.
NOT_DETAINED = frozenset({"01", "35", "36", "98"})
NOT_KNOWN = "99"
# The detentions that qualify for s117 (England list `s117_qualifying` yes, and 31 CP(I)A "review": qualifies
# as a hospital order). A CTO follows a qualifying detention (s3, or an unrestricted hospital order or transfer
# direction), so the legal status a CTO recall (s17E) is reported under is one of these (mapping.py, ZU5-8).
# A test keeps it equal to the England list.
QUALIFYING = frozenset({"03", "09", "10", "15", "16", "17", "18", "31", "37", "38"})

S45A_NOTE = ("ITK value 34 (s45A, single code in the 2014 table) recorded as England 37 "
             "(s45A, limitation direction in force); both qualify for s117")


@dataclass(frozen=True, slots=True)
class LegalStatus:
    england_code: str | None
    problem: str | None = None  # why it cannot be mapped (never quotes the value)
    note: str | None = None


def england_code(itk_value: str) -> LegalStatus:
    """Map one ZU047/ZU048 value (CE identifier, e.g. "3" or "03"). One of
    up to two characters is remembered (a LegalStatus is immutable; the
    mapping asks for one or two a message, of a handful an engine sends)."""
    if len(itk_value) <= 2:
        return _short(itk_value)
    return _england_code(itk_value)


def _england_code(itk_value: str) -> LegalStatus:
    if not (itk_value.isascii() and itk_value.isdigit()) or len(itk_value) > 2:
        return LegalStatus(None, "is not a value of ITK table ZU047/ZU048 (one or two digits)")
    n = int(itk_value)
    if n in _SAME:
        return LegalStatus(f"{n:02d}")
    if n == 34:
        return LegalStatus("37", note=S45A_NOTE)
    if n == 33:
        return LegalStatus(None, "is 33 Supervised Discharge (Mental Health (Patients in the Community) Act 1995), "
                                 "abolished on 3 November 2008 and not in the England legal status list; "
                                 "send the patient's current legal status")
    return LegalStatus(None, "is not a value of ITK table ZU047/ZU048")


_short = lru_cache(maxsize=512)(_england_code)
