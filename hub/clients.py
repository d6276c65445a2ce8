"""API clients: each source or recipient organisation authenticates with its own key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from hub.crypto import hash_api_key, new_api_key
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
