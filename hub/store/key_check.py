"""The data key must be the store's: checked before anything is read or written.

Personal details, quarantined input, webhook secrets and queued messages are
encrypted under the data key, and the NHS number look-up index is an HMAC
keyed from it (hub/crypto.py). A process given another key, whether a second
instance that made its own key file, a key file lost or moved, or a database
restored beside another installation's key, would read none of the people
the store holds, and would fail to find them by NHS number, so each one's
next change would record them again as someone new. It would also write rows
the other instances cannot read. Nothing would say so until someone looked.

So the store records which key it was written under: `store_keys` holds one
row, "data", a fixed text encrypted under the key (migration 0031). Every
process that opens the store runs `check_data_key` before it does anything
else: the hub's processes (hub/bootstrap.py), `s117hub export` and
`s117hub audit`. If it cannot open the token it stops with `DataKeyMismatch`,
which names the settings to look at and never any key material. The first
process on an empty store writes the row. Two processes starting together on
an empty store with different keys: one row is written, and the other process
fails the check. A store from before this check has its key proved on a
person's details, if it holds any, before the row is written.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.crypto import DataProtector
from hub.store.schema import persons, store_keys

NAME = "data"
CHECK_TEXT = b"s117hub: the data key this store was written under"


class DataKeyMismatch(RuntimeError):
    """The configured data key does not open what the store was written under."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"the data key (S117_DATA_KEY, else the file S117_DATA_KEY_FILE) does not open {what}: "
            "this store was written under another key. Start with the key the store was written "
            "under (every instance and tool on one store shares one key); nothing was read or written")


def _opens(protector: DataProtector, token: bytes) -> bool:
    try:
        return protector.decrypt(bytes(token)) == CHECK_TEXT
    except ValueError:
        return False


async def check_data_key(engine: AsyncEngine, protector: DataProtector) -> None:
    """Raise `DataKeyMismatch` unless `protector`'s key is the one the store was
    written under; on a store without a record of it, record it (after proving
    it on a person's details, if there are any)."""
    async with engine.connect() as conn:
        token = (await conn.execute(select(store_keys.c.check_token)
                                    .where(store_keys.c.name == NAME))).scalar_one_or_none()
        if token is None:
            details = (await conn.execute(select(persons.c.details).limit(1))).scalar_one_or_none()
    if token is None:
        if details is not None:
            try:
                protector.decrypt(bytes(details))
            except ValueError:
                raise DataKeyMismatch("the people already on the register") from None
        try:
            async with engine.begin() as conn:
                await conn.execute(store_keys.insert().values(
                    name=NAME, check_token=protector.encrypt(CHECK_TEXT), created_at=datetime.now(UTC)))
            return
        except IntegrityError:  # another process recorded its key first: it must be ours
            async with engine.connect() as conn:
                token = (await conn.execute(select(store_keys.c.check_token)
                                            .where(store_keys.c.name == NAME))).scalar_one()
    if not _opens(protector, token):
        raise DataKeyMismatch("the store's key record (store_keys)")
