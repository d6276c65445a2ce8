"""What the rules need to know about the world, as a port.

hub/refdata implements it from the public reference files shipped in the
repository; unit tests may pass a small in-memory fake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from hub.domain.model import Org

# The kind of an `Org` naming a council the register of local authorities lists without a GSS code yet (a
# council made by a reorganisation before ONS gives it one): its `code` is the register's own code
# (mySociety's local-authority-code, e.g. "CHV"), never a GSS code, so it is never a body to address.
COUNCIL_WITHOUT_GSS = "council-without-gss"


@dataclass(frozen=True, slots=True)
class CouncilInPlace:
    """Who holds a council code's duties on a day (hazard H-03): the one rule, for every part of the hub that
    asks, of when a single council can be addressed for the code's area and when no council alone holds it.

    `with_gss`: every council with a GSS code holding (part of) the code's area on the day: the council
    itself while it stands (a lower-tier district's: its county), else the council or councils that took it
    over. `without_gss`: every successor the register of local authorities lists without a GSS code yet
    (kind `COUNCIL_WITHOUT_GSS`, named by the register's code). Both empty: the code is not known.

    From them, and only here: `council`, the one addressable council (exactly one with a GSS code and none
    without), else None; `successors`, when no one council is addressable, every successor (those with a
    GSS code, then those without: a split between several, or one the register lists without a GSS code
    yet), else empty."""

    with_gss: tuple[Org, ...]
    without_gss: tuple[Org, ...] = ()
    council: Org | None = field(init=False, repr=False, compare=False)
    successors: tuple[Org, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        one = len(self.with_gss) == 1 and not self.without_gss
        object.__setattr__(self, "council", self.with_gss[0] if one else None)
        object.__setattr__(self, "successors", () if one else self.with_gss + self.without_gss)

    @property
    def known(self) -> bool:
        """Whether the reference data knows the code (a council holds it, or successors do)."""
        return bool(self.with_gss or self.without_gss)


@dataclass(frozen=True, slots=True)
class LegalStatus:
    code: str  # England MHA legal status code, two digits ("03")
    description: str
    s117_qualifying: str  # "yes", "no" or "review" (code 31: depends on the order)
    detained: bool  # formally detained (not informal, guardianship, n/a)


@dataclass(frozen=True, slots=True)
class CommissionerResolution:
    """The NHS commissioner for a GP practice on a date, and its successor now.

    `at_date` is the body in place on the date asked (a CCG before
    1 July 2022, a sub-ICB location after); `successor` is the ICB (or, for a
    date before 1 July 2022, the ICB that took over the CCG's area) that holds
    the duty on `as_of`. `trail` says how it was resolved, for explanations.
    """

    at_date: Org
    successor: Org
    trail: str


class ReferenceData(Protocol):
    def legal_status(self, code: str) -> LegalStatus | None: ...

    def council(self, gss_code: str, on: date) -> Org | None:
        """The social services authority for a GSS code, following successions
        (e.g. the 2023 unitary reorganisations) to the one in place on `on`;
        None when not one council with a GSS code holds it."""
        ...

    def council_in_place(self, gss_code: str, on: date) -> CouncilInPlace:
        """Who holds the code's duties on `on`: the one addressable council (itself while it stands, or the
        one that took it over), or, when there is none, every successor (`CouncilInPlace`: the rule, made
        once). Cheap: asked for every evaluation of a change."""
        ...

    def council_successors(self, gss_code: str, on: date) -> tuple[Org, ...]:
        """Every council in place on `on` that took over the code's area: one
        for a rename or merger, several for a split (Cumbria 2023 into
        Cumberland and Westmorland and Furness), empty if unknown. Only those
        with a GSS code: see `council_successors_without_gss`."""
        ...

    def council_successors_without_gss(self, gss_code: str, on: date) -> tuple[Org, ...]:
        """The councils in place on `on` that took over (part of) the code's
        area and that the register lists without a GSS code yet (a new
        council listed before ONS gives it one), each an `Org` of kind
        `COUNCIL_WITHOUT_GSS` named by the register's code: empty for the
        usual succession. With any of them, no council alone holds the code's
        duty (`council` gives None)."""
        ...

    def is_known_council_code(self, gss_code: str) -> bool: ...

    def practice_commissioner(
        self, practice_ods: str, on: date, as_of: date
    ) -> CommissionerResolution | None:
        """The commissioner of the practice at `on`, and who holds that duty at `as_of`."""
        ...

    def is_known_practice(self, practice_ods: str) -> bool: ...

    def commissioner_successor(self, org_code: str, as_of: date) -> Org | None:
        """Resolve a CCG / sub-ICB location / ICB ODS code to the ICB at `as_of`."""
        ...

    def council_commissioner(self, gss_code: str, as_of: date) -> Org | None:
        """The ICB covering most of a council's area: the usual-residence
        fallback when the person has no GP (Worcs 4.4.1)."""
        ...

    def hospital(self, ods_code: str) -> Org | None: ...

    def hospital_trust(self, ods_code: str) -> str | None:
        """The ODS code of the trust that runs the hospital site (the ODS rule:
        a site code's first three characters are its trust)."""
        ...

    def hospital_council_gss(self, ods_code: str) -> str | None:
        """The council the hospital site lies in (coordinates no-fixed-abode cases)."""
        ...

    def bank_holidays(self) -> frozenset[date]:
        """England and Wales bank holidays."""
        ...

    def nhs_england(self) -> Org: ...
