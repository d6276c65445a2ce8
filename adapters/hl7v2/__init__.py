"""HL7 v2 ADT (HSCIC ITK v2.4 profile) adapter: pure mapping to the canonical
register change, and the ACK text. No I/O; hub/mllp.py does the network."""

from adapters.hl7v2.ack import build_ack
from adapters.hl7v2.mapping import Disposition, Header, HL7Problem, MappingResult, map_adt

__all__ = ["Disposition", "HL7Problem", "Header", "MappingResult", "build_ack", "map_adt"]
