"""HL7 v2 original-mode acknowledgements (ACK) with ERR segments.

Built as text rather than with python-hl7's `Message.create_ack`: that needs
a parsed original (an unparseable message still gets an answer) and has no
ERR segment. Pure: the caller passes the time and the ACK's control id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from adapters.hl7v2.mapping import Header, HL7Problem

HUB_APPLICATION = "S117HUB"
_POSITION = re.compile(r"^([A-Z][A-Z0-9]{2})(?:-(\d+))?")
_MAX_TEXT = 200  # MSA-3 is ST(80) in v2.4; receivers commonly accept more, keep it bounded


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
    """ACK for `header`'s message: MSA-1 `ack_code`, MSA-2 the original MSH-10."""
    event = header.trigger_event if header.trigger_event.isalnum() else ""
    msh = "|".join([
        "MSH", "^~\\&", HUB_APPLICATION, HUB_APPLICATION,
        escape(header.sending_application), escape(header.sending_facility),
        now.strftime("%Y%m%d%H%M%S"), "", f"ACK^{event}^ACK", control_id, "P", header.version or "2.4",
    ])
    msa = f"MSA|{ack_code}|{escape(header.control_id)}|{escape(text[:_MAX_TEXT])}"
    segments = [msh, msa, *(err_segment(p) for p in problems)]
    return "\r".join(segments) + "\r"

