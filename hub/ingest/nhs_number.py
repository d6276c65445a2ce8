"""NHS number check digit (modulus 11), per the NHS Data Dictionary."""

from __future__ import annotations


def nhs_number_problem(value: str) -> str | None:
    """None if valid, else the reason (never quoting the number)."""
    digits = value.replace(" ", "")
    if len(digits) != 10 or not digits.isdigit():
        return "must be 10 digits"
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1)))
    check = 11 - (total % 11)
    if check == 11:
        check = 0
    if check == 10:
        return "is not a valid NHS number (no check digit is possible)"
    if check != int(digits[9]):
        return "fails the modulus-11 check digit"
    return None


def normalise(value: str) -> str:
    return value.replace(" ", "")


def with_check_digit(first_nine: str) -> str | None:
    """Complete nine digits to a valid NHS number, or None if impossible (check 10)."""
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1)))
    check = 11 - (total % 11)
    check = 0 if check == 11 else check
    return None if check == 10 else first_nine + str(check)
