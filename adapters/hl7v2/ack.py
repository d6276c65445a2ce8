"""HL7 v2 original-mode acknowledgements (ACK) with ERR segments.

Built as text rather than with python-hl7's `Message.create_ack`: that needs
a parsed original (an unparseable message still gets an answer) and has no
ERR segment. Pure: the caller passes the time and the ACK's control id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache

from adapters.hl7v2.mapping import Header, HL7Problem

HUB_APPLICATION = "S117HUB"
_POSITION = re.compile(r"^([A-Z][A-Z0-9]{2})(?:-(\d+))?")
MSA_TEXT_LIMIT = 200  # MSA-3 is ST(80) in v2.4; receivers commonly accept more, keep it bounded
_MAX_TEXT = MSA_TEXT_LIMIT


def escape(text: str) -> str:
    """HL7 escape sequences for the default delimiters |^~\\&."""
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    out = out.replace("&", "\\T\\").replace("~", "\\R\\")
    return out.replace("\r", " ").replace("\n", " ")


def err_segment(problem: HL7Problem) -> str:
    """v2.4 ERR-1 (ELD): segment ^ sequence ^ field position ^ code&text&HL70357."""
    m = _POSITION.match(problem.field)
    segment, position = (m.group(1), m.group(2) or "") if m else ("", "")
    text = f"{problem.field} {problem.reason}"
    return f"ERR|{segment}^{'1' if segment else ''}^{position}^{problem.code}&{escape(text)}&HL70357"


def build_ack(
    header: Header, ack_code: str, control_id: str, now: datetime,
    text: str = "", problems: Iterable[HL7Problem] = (),
) -> str:
    """ACK for `header`'s message: MSA-1 `ack_code`, MSA-2 the original MSH-10 as sent.

    From a template: the MSH's fields before and after its time come from the
    sender's header (one interface engine sends thousands with the same
    application, facility, event and version) and MSA-3's text is one of a
    few, each escaped once and remembered (`_msh_around`, `_escaped`)."""
    control = header.control_id  # MSA-2: the MSH-10 as sent, byte for byte (escapes and all)
    if "|" in control:  # only from a sender with other delimiters: ours must not end MSA-2 early
        control = control.replace("|", "\\F\\")
    head, tail = _msh_around(header.sending_application, header.sending_facility, header.trigger_event,
                             header.version)
    ack = (f"{head}{_timestamp(now)}{tail[0]}{control_id}{tail[1]}"
           f"MSA|{ack_code}|{control}|{_escaped(text[:_MAX_TEXT])}\r")
    for p in problems:
        ack += err_segment(p) + "\r"
    return ack


def _timestamp(now: datetime) -> str:
    """`now.strftime("%Y%m%d%H%M%S")` (MSH-7), by %-formatting its fields: a
    fifth of the time (strftime goes through the C library's, about 3.7 us
    an ACK). Years before 1000 (never the clock's) through strftime itself,
    which does not pad them. The last one made is kept for the same `now`
    object: the MLLP listener passes one a second (hub/mllp.py `_this_second`)."""
    global _last_timestamp
    held, text = _last_timestamp
    if held is now:
        return text
    if now.year < 1000:
        text = now.strftime("%Y%m%d%H%M%S")
    else:
        text = "%04d%02d%02d%02d%02d%02d" % (now.year, now.month, now.day, now.hour, now.minute, now.second)
    _last_timestamp = (now, text)
    return text


_last_timestamp: tuple[datetime | None, str] = (None, "")  # the datetime object last formatted, its MSH-7


@lru_cache(maxsize=256)
def _msh_around(application: str, facility: str, trigger_event: str, version: str) -> tuple[str, tuple[str, str]]:
    """The ACK's MSH up to its date/time (MSH-7), and the text between that and MSH-10 and after MSH-10."""
    event = trigger_event if trigger_event.isalnum() else ""
    head = "|".join(["MSH", "^~\\&", HUB_APPLICATION, HUB_APPLICATION, escape(application), escape(facility), ""])
    return head, (f"||ACK^{event}^ACK|", f"|P|{escape(version) or '2.4'}\r")  # a `|` sent as data: never a field


_escaped = lru_cache(maxsize=1024)(escape)  # MSA-3's texts: a few, sent again and again

