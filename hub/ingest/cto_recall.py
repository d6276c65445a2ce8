"""Whether a detention would end a community treatment order in force, for a source that cannot say a CTO
recall from a fresh application (HL7 v2 without ZU5-8: adapters/hl7v2/README.md).

England's legal status codes have no code for a recall (MHA s17E): a trust's PAS reports the recall of a
community patient as an admission under the CTO's section (usually 03). The rules engine reads a `detained`
or `section-changed` change under a qualifying section as a fresh application or order, which ends a CTO in
force (hub/domain/rules/engine.py `_end_cto_by_new_detention`); a recall is `cto-recalled`, and the CTO stays
in force. So such a change from a source that did not say which is not recorded when it would end a CTO:
`IngestService.accept_mapped(..., cto_question=...)` quarantines it and asks.
"""

from __future__ import annotations

from collections.abc import Sequence

from hub.domain.agreements import AgreementBook
from hub.domain.model import ChangeType, RegisterChange
from hub.domain.ports import ReferenceData
from hub.domain.rules import evaluate
from hub.domain.rules.legal_status import classify
from hub.domain.rules.precedence import change_order

# The changes the engine reads as a fresh application or order when their section qualifies.
ENDS_CTO_TYPES = frozenset({ChangeType.DETAINED, ChangeType.SECTION_CHANGED})


def ends_cto_in_force(person_id: str, history: Sequence[RegisterChange], change: RegisterChange,
                      ref: ReferenceData, agreements: AgreementBook) -> bool:
    """True when recording `change` would end a CTO: it is a `detained` or `section-changed` under a
    qualifying section, and the person's history shows them on a CTO in force at the point the change is
    folded (every change that sorts before it: hub/domain/rules/precedence.py), however late it arrives.
    A history with no `cto-started` change (nearly everyone's) is answered without folding anything."""
    if change.change_type not in ENDS_CTO_TYPES:
        return False
    if not any(c.change_type is ChangeType.CTO_STARTED for c in history):
        return False
    if not classify(ref, change.legal_status_code, change.order_type).qualifying:
        return False
    key = change_order(change)
    before = [c for c in history if change_order(c) < key]
    return evaluate(person_id, before, ref, agreements, change.effective_date).on_cto
