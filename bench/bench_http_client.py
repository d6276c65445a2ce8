"""The webhook client's CPU per POST (hub/delivery/http1.py HostClients)
beside aiohttp's (the client it replaced, if installed) and httpx's, each
POSTing the same 5 KB body with a delivery's headers, one after the other
on a kept-alive connection, to a local uvicorn receiver in a child process.

    .venv/bin/python bench/bench_http_client.py [--posts 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from hub.delivery.http1 import HostClients  # noqa: E402
from tests.support import free_port  # noqa: E402

HEADERS = {"Content-Type": "application/fhir+json", "S117-Signature": "t=1700000000,v1=" + "a" * 64,
           "S117-Event-Id": "e" * 36, "S117-Event-Number": "12", "S117-Message-Id": "m" * 36,
           "S117-Delivery-Id": "d" * 36, "S117-Event-Type": "s117-entitlement-started", "X-Correlation-Id": "c" * 36}


async def receiver(scope, receive, send) -> None:  # noqa: ANN001
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def serve(port: int) -> None:
    uvicorn.run(receiver, host="127.0.0.1", port=port, log_level="error", access_log=False)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def measure(name: str, post, n: int) -> float:  # noqa: ANN001
    for _ in range(50):  # connection made, code warm
        assert await post() in (200, 204)
    c0, t0 = cpu(), time.perf_counter()
    for _ in range(n):
        await post()
    per = (cpu() - c0) / n * 1e6
    print(f"  {name:<28} {per:6.0f} us CPU per POST, {n / (time.perf_counter() - t0):7,.0f} POSTs/s")
    return per


async def main(port: int, n: int) -> None:
    url, body = f"http://127.0.0.1:{port}/hook", os.urandom(2500).hex().encode()
    print(f"{n} POSTs of {len(body)} bytes each, one at a time on a kept-alive connection, to a local receiver")
    ours = HostClients(10.0, allowed_hosts=["127.0.0.1"])
    mine = await measure("hub.delivery.http1", lambda: _status(ours.post(url, content=body, headers=HEADERS)), n)
    await ours.aclose()
    try:
        import aiohttp
    except ImportError:
        print("  aiohttp                      not installed (pip install aiohttp to compare)")
    else:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=10), trust_env=False,
                                         auto_decompress=False, skip_auto_headers=("User-Agent",)) as s:
            async def via_aiohttp() -> int:
                async with s.post(url, data=body, headers=HEADERS, allow_redirects=False) as r:
                    await r.content.read(65536)
                    return r.status
            other = await measure("aiohttp", via_aiohttp, n)
            print(f"  aiohttp / hub.delivery.http1: {other / mine:.1f}x the CPU")
    async with httpx.AsyncClient() as h:
        other = await measure("httpx", lambda: _status(h.post(url, content=body, headers=HEADERS)), n)
        print(f"  httpx / hub.delivery.http1: {other / mine:.1f}x the CPU")


async def _status(answer) -> int:  # noqa: ANN001
    return (await answer).status_code


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--posts", type=int, default=3000)
    args = ap.parse_args()
    port = free_port()
    child = multiprocessing.Process(target=serve, args=(port,), daemon=True)
    child.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    try:
        asyncio.run(main(port, args.posts))
    finally:
        child.terminate()
