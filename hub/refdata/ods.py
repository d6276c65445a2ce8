"""ODS code structure: which organisation a site belongs to.

NHS ODS codes for NHS trusts (and independent sector providers) are three
characters (e.g. ``RNU``); their sites are five characters, the first three
being the parent organisation's code (``RNU01`` -> ``RNU``). This is ODS's
documented code structure, used here because no public ODS trust / site list
can be shipped with the repository yet (see data/PROVENANCE.md).
"""

from __future__ import annotations

import re

_ORG = re.compile(r"[A-Z0-9]{3}")
_SITE = re.compile(r"[A-Z0-9]{3}[A-Z0-9]{2}")


def ods_parent_org(code: str | None) -> str | None:
    """The organisation (trust) code for an ODS organisation or site code;
    None for anything that is neither (e.g. a GP practice's 6 characters)."""
    c = (code or "").strip().upper()
    if _ORG.fullmatch(c):
        return c
    if _SITE.fullmatch(c):
        return c[:3]
    return None
