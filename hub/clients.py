"""API clients: each source or recipient organisation authenticates with its own key."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.crypto import hash_api_key, new_api_key
from hub.ingest.service import Client
from hub.store.db import read_only
from hub.store.schema import api_clients

SCOPES = ("register:write", "subscriptions:write", "s117:read", "reports:read", "workflows:write", "packages:write",
          "hub:admin")


async def add_client(
    engine: AsyncEngine, name: str, org_code: str, org_kind: str, scopes: list[str], api_key: str | None = None,
) -> tuple[str, str]:
    """Register a client; returns (client_id, api_key). Only the key's hash is stored."""
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"scopes: unknown {sorted(unknown)}; known: {list(SCOPES)}")
    key = api_key or new_api_key()
    client_id = f"{org_code.lower()}-{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(api_clients.insert().values(
            client_id=client_id, name=name, org_code=org_code, org_kind=org_kind,
            key_hash=hash_api_key(key), scopes=scopes, active=True, created_at=datetime.now(UTC),
        ))
    return client_id, key


class ClientCache:
    """API keys recognised in the last `ttl` seconds, so a busy source's every
    request does not read `api_clients`. Only keys found active are kept; an
    unknown key is looked up each time (a key just added works at once). A key
    revoked in the store (`active` false) stops working within `ttl` seconds;
    `ttl` 0 looks every request up. Requests that find a held key's time up
    while its look-up is in flight wait for that one look-up."""

    def __init__(self, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self._max = max_entries
        self._held: dict[str, tuple[float, Client]] = {}
        # A held key's look-up in flight, shared by the requests that find its time up meanwhile:
        # a busy source's every connection found it up at once (32 look-ups, and on PostgreSQL a
        # burst of pool connections opened and closed again, every `ttl` seconds).
        self._looking: dict[str, asyncio.Future[Client | None]] = {}

    async def client_for(self, engine: AsyncEngine, key_hash: str) -> Client | None:
        now = time.monotonic()
        held = self._held.get(key_hash)
        if held is not None and held[0] > now:
            return held[1]
        if held is None:  # not known: looked up each time (a key just added works at once)
            return await self._look_up(engine, key_hash, now)
        looking = self._looking.get(key_hash)
        if looking is None or looking.get_loop() is not asyncio.get_running_loop():
            looking = self._looking[key_hash] = asyncio.ensure_future(self._look_up(engine, key_hash, now))
            looking.add_done_callback(lambda done: self._looking.pop(key_hash, None)
                                      if self._looking.get(key_hash) is done else None)
        return await asyncio.shield(looking)  # one waiter cancelled does not cancel the others' look-up

    async def _look_up(self, engine: AsyncEngine, key_hash: str, now: float) -> Client | None:
        async with read_only(engine) as conn:
            row = (await conn.execute(select(api_clients).where(
                api_clients.c.key_hash == key_hash, api_clients.c.active.is_(True)))).first()
        if row is None:
            self._held.pop(key_hash, None)
            return None
        client = Client(row.client_id, row.name, row.org_code, row.org_kind, tuple(row.scopes))
        if self.ttl > 0:
            if len(self._held) >= self._max:
                self._held.clear()
            self._held[key_hash] = (now + self.ttl, client)
        return client
