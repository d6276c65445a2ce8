"""Wrong-person check: does a change's person match the person the register holds for its NHS number?

A register change finds its person by NHS number alone. A number keyed wrongly can still pass the
modulus-11 check (a different real person's number), and the change would then be recorded against
that person, their details overwritten with the sender's and every council and ICB told (clinical
safety hazard H-01, docs/clinical-safety/hazard-log.yaml). The identifiers the change carries besides
the number are the check (as a PDS trace matches them):

- a date of birth other than the one held: not the person held;
- a family name other than the one held, unless the change also carries the date of birth held (people
  change their names; the date of birth then says it is the same person). Names are compared without
  case, accents, spaces or punctuation (`O'Brien` and `OBRIEN`, `Zoë` and `ZOE` are one name), so a
  case system that writes names in capitals is not refused.

When it is the details held that are wrong (a date of birth keyed wrongly when the person was first
registered, corrected since in the trust's PAS against PDS), every later message would be held too: the
source resubmits the held input with `identity_confirmed=true` (POST /v1/quarantine/{id}/resubmit), the
check is not made, the details it sent replace those held, and the write is recorded as the access decision
`confirm-identity` (`audit person` shows who confirmed, when). Its later messages then match.

A field the held details or the change leave out is not compared. Given names are not compared (known
names, initials). The reasons never quote either value.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from hub.ingest.validation import FieldProblem

# The access decision's action for a write whose sender confirmed the person's identity over a mismatch
# (a held input resubmitted with identity_confirmed: hub/api/quarantine_triage.py): its details replaced
# those held. `audit person` lists it.
CONFIRM_IDENTITY = "confirm-identity"

BIRTH_DATE_DIFFERS = (
    "does not match the date of birth held for this NHS number: check the NHS number (the change is not "
    "recorded against a person it does not describe); if it is the date of birth held that is wrong, have the "
    "source resubmit the held change confirming the identity (POST /v1/quarantine/{id}/resubmit?identity_confirmed=true)")
FAMILY_NAME_UNCONFIRMED = (
    "does not match the family name held for this NHS number, and no date of birth matching the one held "
    "says it is the same person: check the NHS number, or send the date of birth with the new family name")


def name_key(name: str) -> str:
    """A family name as compared: letters and digits only, accents dropped, case folded."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if c.isalnum() and not unicodedata.combining(c)).casefold()


def identity_problem(held: dict[str, Any], sent: dict[str, Any]) -> FieldProblem | None:
    """None if `sent` (the change's person fields, JSON form) may be the person `held`; else the field
    that says it is not. `held`: the person's stored details."""
    held_birth, sent_birth = held.get("birth_date"), sent.get("birth_date")
    if held_birth and sent_birth and held_birth != sent_birth:
        return FieldProblem("person.birth_date", BIRTH_DATE_DIFFERS)
    held_name, sent_name = held.get("family_name"), sent.get("family_name")
    # (The same name as held, as nearly every change sends it, is not taken apart: on the hot path.)
    if held_name and sent_name and held_name != sent_name and name_key(held_name) != name_key(sent_name) \
            and not (held_birth and sent_birth == held_birth):
        return FieldProblem("person.family_name", FAMILY_NAME_UNCONFIRMED)
    return None
