"""Held register changes (Worcs 8.5), for the ingest path.

hub/ingest/service.py asks hub.domain.workflows.held.hold_reason with the
statuses it computed before and after a change; when a dispute is open and
the change would end or move funding, it rolls back and calls `hold_change`:
nothing is applied: the change is kept in quarantine with status "held" (the source sees
it under GET /v1/quarantine and sends it again once the dispute is resolved)
and the answer is a 409 problem naming the rule.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine

import orjson

from hub.ids import uuid4
from hub.domain.citations import FUNDING_NO_WITHDRAWAL
from hub.domain.model import RegisterChange
from hub.domain.workflows.held import HOLD_RULE
from hub.observability.logging import get_logger
from hub.store.schema import quarantine

if TYPE_CHECKING:
    from hub.crypto import DataProtector
    from hub.ingest.contract import RegisterChangeIn
    from hub.ingest.service import Client, Outcome

log = get_logger("hub.workflows.held")


async def hold_change(
    engine: AsyncEngine, protector: DataProtector, client: Client, channel: str, change_in: RegisterChangeIn,
    change: RegisterChange, reason: str, correlation_id: str,
) -> Outcome:
    """Keep the change (encrypted) in quarantine as "held"; the 409 answer names the rule.
    Called after the ingest transaction rolled back, so nothing of the change is applied."""
    from hub.ingest.service import problem  # the ingest module imports this one

    held_id = uuid4()
    errors: list[dict[str, Any]] = [{"field": "change_type", "reason": reason}]
    original = orjson.dumps(change_in.model_dump(mode="json", exclude_none=True))
    async with engine.begin() as conn:
        await conn.execute(quarantine.insert().values(
            quarantine_id=held_id, source=client.client_id, channel=channel,
            source_message_id=change_in.source_message_id[:200], errors=errors, raw=protector.encrypt(original),
            received_at=datetime.now(UTC), status="held"))
    log.info("register change held", source=client.client_id, channel=channel, quarantine_id=held_id,
             change_type=change.change_type.value, correlation_id=correlation_id)
    return problem(409, HOLD_RULE, "Register change held: a dispute is open", reason, rule=HOLD_RULE,
                   citation=FUNDING_NO_WITHDRAWAL, errors=errors, quarantine_id=held_id, correlation_id=correlation_id)
