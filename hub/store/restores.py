"""What the store's restores (`s117hub restore`, hub/restore_cli.py) left for the running hub.

- The restore epoch: the newest `store_restores` row's id, `NO_RESTORE` ("0")
  for a store never restored. Subscribers see it as `S117-Restore-Epoch`
  (webhook POSTs, pull-feed pages) and `restore_epoch` (the subscription's
  status, a pull-feed page and its items, a Kafka topic record's header, a
  file channel line; hub/bootstrap.py hands it to every deliverer): a new
  value says the hub's store was put back to a backup, so messages the
  subscriber received since the backup's time may be sent again (same event
  id) and numbers between may never come (README, "Backup and restore").
- The position-version floor: every message about a person to an
  organisation is numbered above it (hub/delivery/dispatcher.py), so no
  version the displaced store had given is given again, even for a person the
  restored store has never told that organisation of.
- The council file `EVENT_NO` floor of each file subscription (hub/exports.py).

Read once when the hub starts (a restore is made with the hub stopped), and by
`subscription_status` when a subscriber asks. A store before migration 0036
has none of it: the epoch is "0" and the floors 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hub.store.schema import store_restores

NO_RESTORE = "0"
EPOCH_HEADER = "S117-Restore-Epoch"


@dataclass(frozen=True)
class RestoreState:
    epoch: str = NO_RESTORE
    version_floor: int = 0
    export_floors: dict[str, int] = field(default_factory=dict)  # file subscription id -> last EVENT_NO given


async def epoch_of(conn: AsyncConnection) -> str:
    """The store's restore epoch (the newest restore's id, else "0")."""
    row = (await conn.execute(select(store_restores.c.restore_id)
                              .order_by(store_restores.c.restored_at.desc(), store_restores.c.restore_id.desc())
                              .limit(1))).first()
    return row.restore_id if row is not None else NO_RESTORE


async def restore_state(engine: AsyncEngine) -> RestoreState:
    async with engine.connect() as conn:
        try:
            epoch = await epoch_of(conn)
            floor = (await conn.execute(select(func.max(store_restores.c.version_floor)))).scalar()
            rows = (await conn.execute(select(store_restores.c.advanced))).all()
        except (OperationalError, ProgrammingError):  # no table: a store the hub has not migrated
            await conn.rollback()
            return RestoreState()
        await conn.rollback()
    exports: dict[str, int] = {}
    for (advanced,) in rows:
        for sid, n in (_mapping(advanced).get("export_event_no") or {}).items():
            exports[sid] = max(exports.get(sid, 0), int(n))
    return RestoreState(epoch, int(floor or 0), exports)


def _mapping(value: Any) -> dict:
    if isinstance(value, str):  # a driver that does not decode JSON itself
        import json

        value = json.loads(value)
    return value if isinstance(value, dict) else {}
