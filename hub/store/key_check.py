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
process that opens the store gets its key through `store_protector`, which
runs `check_data_key` once the schema is migrated and before any record is
read or written: the hub's processes (hub/bootstrap.py, and `s117hub serve`
before it starts them), `s117hub export` and `s117hub audit`. A missing key
file beside a store written under a key is refused, not replaced by a new
one. If it cannot open the token it stops with `DataKeyMismatch`,
which names the settings to look at and never any key material. The first
process on an empty store writes the row. Two processes starting together on
an empty store with different keys: one row is written, and the other process
fails the check. A store from before this check has its key proved, before
the row is written, on the first of what it already holds encrypted: a
person's details, else a subscription's signing secret, else quarantined
input not yet emptied by the retention purge (a store may hold subscriptions
or quarantined input before anyone is on the register). Only a store with
none of these takes the key it is first given.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.crypto import DataProtector
from hub.store.schema import persons, quarantine, store_key_rotations, store_keys, subscriptions

NAME = "data"
CHECK_TEXT = b"s117hub: the data key this store was written under"


# What a store from before the check may already hold encrypted under its key, in the order tried:
# (what it is, for the error; the query for one token). The retention purge empties quarantined
# input (b""), which proves nothing.
_HELD = (
    ("the people already on the register", select(persons.c.details).limit(1)),
    ("the subscriptions' signing secrets", select(subscriptions.c.secret)
     .where(subscriptions.c.secret.is_not(None)).limit(1)),
    ("the quarantined input", select(quarantine.c.raw).where(func.length(quarantine.c.raw) > 0).limit(1)),
)


class DataKeyMismatch(RuntimeError):
    """The configured data key does not open what the store was written under (or there is none)."""

    def __init__(self, what: str, *, missing: bool = False) -> None:
        if missing:
            said = ("S117_DATA_KEY is not set and the key file S117_DATA_KEY_FILE does not exist, but this "
                    f"store holds {what} under a key: no new key file was made. Start with the key the store "
                    "was written under")
        else:
            said = (f"the data key (S117_DATA_KEY, else the file S117_DATA_KEY_FILE) does not open {what}: "
                    "this store was written under another key. Start with the key the store was written under")
        super().__init__(said + " (every instance and tool on one store shares one key); no record was read "
                                "or written")


class RotationInProgress(DataKeyMismatch):
    """A data key rotation was started and has not finished: the store holds data under two keys."""

    def __init__(self) -> None:
        RuntimeError.__init__(self, "a data key rotation is in progress: run s117hub rotate-data-key again with "
                                    "the same new key (S117_DATA_KEY / S117_DATA_KEY_FILE still the old key until "
                                    "it finishes); no record was read or written")


_ROTATING = select(store_key_rotations.c.name).where(store_key_rotations.c.name == "data")


def _opens(protector: DataProtector, token: bytes) -> bool:
    try:
        return protector.decrypt(bytes(token)) == CHECK_TEXT
    except ValueError:
        return False


async def store_protector(engine: AsyncEngine, data_key: str | None, key_file: Path) -> DataProtector:
    """The data protector the settings give (`DataProtector.from_settings`), checked against the store
    (`check_data_key`). A key file is made only for a store that holds nothing under any key yet: a
    missing key file beside a store written under a key is refused, rather than replaced by a new key
    that would then be refused anyway (and left behind for the next start to trip over)."""
    if not data_key and not key_file.exists():
        token, held = await _recorded(engine)
        if token is not None or held is not None:
            raise DataKeyMismatch("its key record (store_keys)" if token is not None else held[0], missing=True)
    protector = DataProtector.from_settings(data_key, key_file)
    await check_data_key(engine, protector)
    return protector


_TOKEN = select(store_keys.c.check_token).where(store_keys.c.name == NAME)


async def _recorded(engine: AsyncEngine) -> tuple[bytes | None, tuple[str, bytes] | None]:
    """The store's key record (its token), or else the first of `_HELD` it holds (what it is, its
    token); None for either it has not. `RotationInProgress` while a data key rotation is unfinished."""
    async with engine.connect() as conn:
        if (await conn.execute(_ROTATING)).first() is not None:
            raise RotationInProgress()
        token = (await conn.execute(_TOKEN)).scalar_one_or_none()
        if token is not None:
            return bytes(token), None
        for what, query in _HELD:
            found = (await conn.execute(query)).scalar_one_or_none()
            if found is not None:
                return None, (what, bytes(found))
    return None, None


async def check_data_key(engine: AsyncEngine, protector: DataProtector) -> None:
    """Raise `DataKeyMismatch` unless `protector`'s key is the one the store was
    written under; on a store without a record of it, record it (after proving
    it on the first of what the store holds encrypted, `_HELD`, if anything)."""
    token, held = await _recorded(engine)
    if token is None:
        if held is not None:
            try:
                protector.decrypt(held[1])
            except ValueError:
                raise DataKeyMismatch(held[0]) from None
        try:
            async with engine.begin() as conn:
                await conn.execute(store_keys.insert().values(
                    name=NAME, check_token=protector.encrypt(CHECK_TEXT), created_at=datetime.now(UTC)))
            return
        except IntegrityError:  # another process recorded its key first: it must be ours
            async with engine.connect() as conn:
                token = (await conn.execute(_TOKEN)).scalar_one()
    if not _opens(protector, token):
        raise DataKeyMismatch("the store's key record (store_keys)")
