"""The MLLP listener's sending facilities: the trust client behind MSH-4 is
remembered for SOURCE_TTL seconds, and when it expires the engine's
connections, all finding it expired at once, wait for one read of the store."""

from __future__ import annotations

import asyncio

from sqlalchemy import update

from hub import mllp
from hub.mllp import MllpServer
from hub.store.schema import api_clients


async def test_connections_finding_the_facility_expired_wait_for_one_read(app_hub, monkeypatch):
    server = MllpServer(app_hub.hub.engine, app_hub.hub.ingest, "127.0.0.1", 0)
    reads = 0
    look_up = server._look_up

    async def counted(facility: str):  # noqa: ANN202
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)  # the read is in flight while the others ask
        return await look_up(facility)

    monkeypatch.setattr(server, "_look_up", counted)
    try:
        clients = await asyncio.gather(*(server._source("RNU") for _ in range(8)))
        assert reads == 1 and all(c is not None and c.org_code == "RNU" for c in clients)
        assert len({c.client_id for c in clients}) == 1
        await server._source("RNU")  # remembered
        assert reads == 1
        assert await server._source("ZZZ") is None and reads == 2  # not registered: read each time
        assert await server._source("ZZZ") is None and reads == 3
        assert not server._looking_up

        # A client made inactive stops once the remembered one expires.
        async with app_hub.hub.engine.begin() as conn:
            await conn.execute(update(api_clients).where(api_clients.c.org_code == "RNU").values(active=False))
        monkeypatch.setattr(mllp, "SOURCE_TTL", 0.0)
        server._sources.clear()
        assert await server._source("RNU") is None
    finally:
        server._sock.close()
