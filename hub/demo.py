"""`s117hub demo`: the hub in embedded mode with sample data flowing.

Runs three things in one process: the hub (HTTP API + workers, SQLite), a
sample council/ICB webhook receiver that verifies signatures and prints what
it gets, and a sample trust that pushes synthetic register changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import signal
import socket
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import uvicorn
from fastapi import FastAPI, Request, Response

from hub.api.app import create_app
from hub.clients import add_client
from hub.crypto import verify_webhook_request
from hub.sample_data import bad_change, detention_to_move_scenario
from hub.server import uvicorn_config
from hub.settings import REPO_ROOT, Settings
from hub.store.db import create_engine, create_schema
from hub.domain.dates import england_day

RECEIVER_SECRET = "demo-receiver-secret-0123456789abcdef"  # demo only
ORGS = {
    "E06000060": "Buckinghamshire Council",
    "QU9": "NHS Buckinghamshire, Oxfordshire and Berkshire West ICB",
    "E10000034": "Worcestershire County Council",
    "QGH": "NHS Herefordshire and Worcestershire ICB",
}


def receiver_app(seen: dict[str, set[str]], out=print) -> FastAPI:  # noqa: ANN001
    app = FastAPI(title="Sample council webhook receiver")

    @app.post("/hooks/{org}")
    async def hook(org: str, request: Request) -> Response:
        body = await request.body()
        if not verify_webhook_request(RECEIVER_SECRET, request.headers, body):
            out(f"[{org}] REJECTED: bad signature")
            return Response(status_code=401)
        event_id = request.headers.get("S117-Event-Id", "")
        dup = event_id in seen.setdefault(org, set())
        seen[org].add(event_id)
        bundle = orjson.loads(body)
        header = bundle["entry"][0]["resource"]
        code = header["eventCoding"]["code"]
        ep = next((e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "EpisodeOfCare"), None)
        status = ep.get("status") if ep else "-"
        out(f"[{ORGS.get(org, org)}] {code} (episode {status}){' DUPLICATE ignored' if dup else ''}"
            f" signature ok, {len(body)} bytes")
        return Response(status_code=204)

    return app


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves Ctrl-C to the demo, which then stops the
    sample trust first and the servers after, in that order."""

    @contextlib.contextmanager
    def capture_signals(self):  # noqa: ANN201
        yield


async def _serve(app: FastAPI, port: int, settings: Settings | None = None) -> uvicorn.Server:
    config = (uvicorn_config(app, settings, host="127.0.0.1", port=port, lifespan="on") if settings is not None
              else uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    server._task = task  # type: ignore[attr-defined]
    return server


def _port_free(port: int) -> bool:
    """Whether a server can listen on 127.0.0.1:`port` (bound as uvicorn binds, SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def run_demo(port: int = 8117, receiver_port: int = 8118, duration: float | None = None,
                   interval: float = 5.0, fresh: bool = True, data_dir: Path | None = None) -> dict[str, set[str]]:
    for taken, flag in ((port, "--port"), (receiver_port, "--receiver-port")):
        # Before anything is started or removed: a second `make run` wiped the running demo's database
        # (var/demo) and then failed on the port; a busy receiver port ended in a cancelled hub's traceback.
        if not _port_free(taken):
            raise SystemExit(f"demo: 127.0.0.1:{taken} is in use (another demo or hub?): stop it, or choose "
                             f"another port with {flag}")
    data_dir = data_dir or REPO_ROOT / "var" / "demo"
    if fresh and data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{data_dir / 'hub.db'}",
                        data_key_file=data_dir / "data.key", port=port, webhook_backoff_base_seconds=0.5,
                        # The sample receiver runs on this machine: allow loopback webhooks for it only.
                        # The workers run in this process (a change every few seconds needs no more):
                        # `s117hub serve` chooses its processes by the host's cores (serving_layout).
                        webhook_allowed_hosts=["127.0.0.1"])
    engine = create_engine(settings.database_url, sqlite_page_size=settings.sqlite_page_size)
    await create_schema(engine)
    _, trust_key = await add_client(engine, "Oxford Health (demo trust)", "RNU", "trust", ["register:write", "s117:read"])
    org_keys = {org: (await add_client(engine, name, org, "council" if org.startswith("E") else "icb",
                                       ["subscriptions:write", "s117:read"]))[1] for org, name in ORGS.items()}
    _, admin_key = await add_client(engine, "Demo integration engineer", "HUB", "hub-operator", ["hub:admin"])
    await engine.dispose()

    seen: dict[str, set[str]] = {}
    hub_server = await _serve(create_app(settings), port, settings)
    recv_server = await _serve(receiver_app(seen), receiver_port)
    base = f"http://127.0.0.1:{port}"
    print(f"S117 Hub (embedded mode) on {base}  - API docs {base}/docs, metrics {base}/metrics")
    print(f"Integration console {base}/console  (demo admin key: {admin_key})")
    print(f"Sample webhook receiver on http://127.0.0.1:{receiver_port}; data in {data_dir}")
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        for org, key in org_keys.items():
            r = await http.post("/v1/subscriptions", headers={"X-API-Key": key},
                                json={"url": f"http://127.0.0.1:{receiver_port}/hooks/{org}", "secret": RECEIVER_SECRET})
            r.raise_for_status()
        rng = random.Random(117)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if duration:
            loop.call_later(duration, stop.set)
        cycle = 0
        while not stop.is_set():
            cycle += 1
            run_id = f"demo-{uuid.uuid4().hex[:8]}"
            start = england_day() - timedelta(days=400 - cycle)
            for change in detention_to_move_scenario(rng, run_id, start):
                r = await http.post("/v1/register-changes", headers={"X-API-Key": trust_key}, json=change)
                print(f"trust -> hub: {change['change_type']:<16} {r.status_code} "
                      f"events={[e['event_type'] for e in r.json().get('events', [])]}")
            r = await http.post("/v1/register-changes", headers={"X-API-Key": trust_key}, json=bad_change(run_id))
            print(f"trust -> hub: bad input         {r.status_code} "
                  f"{[e['field'] + ' ' + e['reason'] for e in r.json().get('errors', [])]} (quarantined)")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
        print("stopping: letting deliveries in flight land")
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        # Let deliveries in flight land before stopping.
        await asyncio.sleep(min(3.0, interval))
    for server in (hub_server, recv_server):
        server.should_exit = True
        await server._task  # type: ignore[attr-defined]
    return seen
