"""NHS numbers: the one place every channel (REST, FHIR, MLLP, council files,
look-up) checks them. Exactly ten ASCII digits 0-9 (ASCII spaces between them
are allowed and dropped) with a valid modulus-11 check digit, per the NHS Data
Dictionary.

`str.isdigit()` is not enough: it accepts superscripts (`²`), Arabic-Indic
(`٣`), full-width (`３`) and other Unicode digits, which `int()` then either
refuses (a 500) or reads as an ASCII digit (a second person for an existing
NHS number). Only the bytes 0x30-0x39 count here.
"""

from __future__ import annotations

import re

_TEN_ASCII_DIGITS = re.compile(r"[0-9]{10}", re.ASCII)
# Passes the check digit but is never issued: a placeholder some systems send
# for "no number", which must not collect everyone without one into one person.
NEVER_ISSUED = frozenset({"0000000000"})


def _check_digit(first_nine: str) -> int:
    """The modulus-11 check digit of nine ASCII digits; 10 means none is possible."""
    # sum((ord(d) - 48) * w for d, w in zip(first_nine, range(10, 1, -1))), unrolled (a few times faster:
    # every channel checks every number, a council file's row three times); 2592 = 48 * (10 + 9 + ... + 2).
    a, b, c, d, e, f, g, h, i = map(ord, first_nine)
    total = 10 * a + 9 * b + 8 * c + 7 * d + 6 * e + 5 * f + 4 * g + 3 * h + 2 * i - 2592
    check = 11 - (total % 11)
    return 0 if check == 11 else check


def nhs_number_problem(value: object) -> str | None:
    """None if valid, else the reason (never quoting the number). Never raises."""
    if not isinstance(value, str):
        return "must be 10 digits (ASCII 0-9 only) as a string"
    digits = normalise(value)
    if _TEN_ASCII_DIGITS.fullmatch(digits) is None:
        return "must be 10 digits (ASCII 0-9 only)"
    if digits in NEVER_ISSUED:
        return "is not an NHS number (all zeros is never issued)"
    check = _check_digit(digits[:9])
    if check == 10:
        return "is not a valid NHS number (no check digit is possible)"
    if check != ord(digits[9]) - 48:
        return "fails the modulus-11 check digit"
    return None


def is_valid(value: object) -> bool:
    return nhs_number_problem(value) is None


def normalise(value: str) -> str:
    """Drop ASCII spaces ("943 476 5919" -> "9434765919"); nothing else is changed."""
    return value.replace(" ", "")


def with_check_digit(first_nine: str) -> str | None:
    """Complete nine ASCII digits to a valid NHS number, or None if impossible (check 10)."""
    if re.fullmatch(r"[0-9]{9}", first_nine, re.ASCII) is None:
        return None
    check = _check_digit(first_nine)
    return None if check == 10 else first_nine + str(check)
