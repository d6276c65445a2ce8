"""The HTTP server's CPU per small request: a FastAPI app answering a few
bytes of JSON behind the hub's own server configuration (hub/server.py
`uvicorn_config`, uvloop, httptools), in a child process, and one raw
keep-alive client sending requests one after another. Prints the server
process's CPU (utime + stime from /proc) per request and its kernel share:
what the server does per response, apart from the hub's own work.
Alternate two checkouts' runs to compare them (PYTHONPATH=<checkout>).

    .venv/bin/python bench/bench_http_response.py                 # 12,000 requests
    .venv/bin/python bench/bench_http_response.py --requests 3000
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import free_port  # noqa: E402

SERVER = """
import sys, uvicorn
from fastapi import FastAPI
from hub.server import uvicorn_config
from hub.settings import Settings
app = FastAPI()
@app.get("/x")
async def x():
    return {"ok": 1}
uvicorn.Server(uvicorn_config(app, Settings(), host="127.0.0.1", port=int(sys.argv[1]), lifespan="off")).run()
"""


def _cpu(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, int(fields[12]) / tick


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=12_000)
    args = ap.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n"

        def one() -> None:
            conn.sendall(request)
            got = b""
            while not got.endswith(b'{"ok":1}'):
                got += conn.recv(4096)

        for _ in range(500):  # warm up
            one()
        cpu0, kernel0 = _cpu(server.pid)
        for _ in range(args.requests):
            one()
        cpu1, kernel1 = _cpu(server.pid)
        n = args.requests
        print(f"server CPU per request: {(cpu1 - cpu0) / n * 1e6:.1f} us ({(kernel1 - kernel0) / n * 1e6:.1f} kernel)"
              f"; {n:,} requests, load average {os.getloadavg()[0]:.1f}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
