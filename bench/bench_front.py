"""The REST front's work for one register change at a time, in-process.

`POST /v1/register-changes` through the whole ASGI app (`create_app`: the
correlation and limits middleware, `RegisterChangeRoute`, the key check,
`IngestService.accept`, the group commit on a SQLite file in WAL mode with
synchronous=FULL, the response) called directly as the server calls it, one
request at a time, as at one client; no sockets and no workers. Logging as
deployed: JSON lines at INFO (to /dev/null). Prints the process's CPU a
request (`time.process_time`: user and kernel, the COMMIT's writes and fsync
with it) and, with `--calls`, cProfile's top functions and Python calls a request.

    .venv/bin/python bench/bench_front.py                 # 300 people, 4 changes each
    .venv/bin/python bench/bench_front.py 500 --rounds 3
    .venv/bin/python bench/bench_front.py --calls --top 30
    .venv/bin/python bench/bench_front.py 100 --dump FILE  # each answer (status, headers, body) and every
                                                           # table's rows, ids and times masked: diff two checkouts
                                                           # (FILE.log: the log lines, FILE.metrics: the counts)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import random
import re
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_mllp_inproc import _CLIENT  # noqa: E402
from bench.bench_mllp_inproc import dump as dump_tables  # noqa: E402
from hub.api.app import create_app  # noqa: E402
from hub.clients import add_client  # noqa: E402
from hub.observability.logging import configure_logging  # noqa: E402
from hub.sample_data import detention_to_move_scenario  # noqa: E402
from hub.settings import REPO_ROOT, Settings  # noqa: E402

PATH = "/v1/register-changes"
OUT: Any = sys.stdout  # the figures (stdout itself takes the log lines: /dev/null)
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# A log line's fields that differ from run to run whatever the code: when, and how long.
_LOG_TIMES = re.compile(rb'"(timestamp|duration_ms)":("[^"]*"|[0-9.e+-]+)')
_REDACTED_UUID = re.compile(rb"[0-9a-f-]{10,}\[nhs-number\][0-9a-f]*")  # a random id the redactor masked in part


async def post(app: Any, key: bytes, body: bytes) -> list[dict[str, Any]]:
    """One request through the app as uvicorn calls it; the messages it sent."""
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": PATH, "raw_path": PATH.encode(), "root_path": "",
             "query_string": b"", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
             "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()), (b"x-api-key", key)]}
    sent: list[dict[str, Any]] = []
    done = False

    async def receive() -> dict[str, Any]:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # never: the app does not read past the body
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def masked(messages: list[dict[str, Any]]) -> bytes:
    """Status, headers and body with every UUID and the correlation id masked."""
    out = []
    for m in messages:
        if m["type"] == "http.response.start":
            out.append(f"{m['status']} ".encode() + b" ".join(k + b"=" + v for k, v in m["headers"]))
        else:
            out.append(m.get("body", b""))
    return _UUID.sub(b"<uuid>", b" | ".join(out))


async def run(people: int, rounds: int, calls: bool, top: int, dump: Path | None) -> None:
    rng = random.Random(117)
    for r in range(rounds):
        tmp = Path(tempfile.mkdtemp())
        settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp / 'hub.db'}", data_key_file=tmp / "data.key",
                            sharing_agreements_path=REPO_ROOT / "contracts" / "data-sharing-agreements.yaml",
                            run_workers=False)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            hub = app.state.hub
            key = (await add_client(hub.engine, "Bench Trust", "RNU", "trust", ["register:write"]))[1].encode()
            bodies = [orjson.dumps(c) for i in range(people)
                      for c in detention_to_move_scenario(rng, f"f{r}-{i}", date(2024, 1, 1))]
            for body in bodies[:20]:  # warm up (first imports, caches)
                await post(app, key, body)
            bodies = bodies[20:]
            answers = []
            prof = cProfile.Profile(time.process_time) if calls else None
            cpu0, t0 = time.process_time(), time.perf_counter()
            if prof is not None:
                prof.enable()
            for body in bodies:
                sent = await post(app, key, body)
                if dump is not None:
                    answers.append(masked(sent))
            if prof is not None:
                prof.disable()
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
            n = len(bodies)
            print(f"round {r + 1}: {n} requests one at a time, CPU a request {cpu / n * 1e6:.1f} us, "
                  f"wall {wall / n * 1e6:.0f} us", file=OUT, flush=True)
            if prof is not None:
                s = io.StringIO()
                st = pstats.Stats(prof, stream=s)
                print(f"  Python calls a request: {st.total_calls / n:.1f}", file=OUT)
                st.sort_stats("tottime").print_stats(top)
                print(s.getvalue(), file=OUT, flush=True)
            if dump is not None:  # the answers, and every table's rows (masked as bench_mllp_inproc's)
                await dump_tables(hub.engine, [a.decode() for a in answers],
                                  dump.with_name(f"{dump.name}.{r + 1}") if rounds > 1 else dump)
    if dump is not None:
        dump_metrics(dump.with_name(dump.name + ".metrics"))


def dump_metrics(path: Path) -> None:
    """Every s117 counter's value and every histogram's count, by labels (not
    the times a histogram sums, nor the WAL checkpoints, a thread's on a timer: they differ from run to run)."""
    from prometheus_client import REGISTRY  # noqa: PLC0415

    lines = sorted(f"{s.name}{sorted(s.labels.items())} {s.value:g}" for metric in REGISTRY.collect()
                   if metric.name.startswith("s117_") for s in metric.samples
                   if s.name.endswith(("_total", "_count")) and "checkpoint" not in s.name)
    path.write_text("\n".join(lines) + "\n")


def dump_log(raw: Path, path: Path) -> None:
    """The log lines in order, ids (the client's too), times and durations masked."""
    text = _LOG_TIMES.sub(rb'"\1":"<masked>"', _REDACTED_UUID.sub(b"<uuid>", _UUID.sub(b"<uuid>", raw.read_bytes())))
    text = text.decode()
    path.write_text(_CLIENT.sub("<client>", text))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("people", nargs="?", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--calls", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--dump", type=Path)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args()
    # The log lines (JSON to stdout, as deployed) to /dev/null (with --dump, to a file masked
    # afterwards); the figures to the real stdout.
    sys.stdout.flush()
    real = os.dup(1)
    raw_log = Path(tempfile.mkdtemp()) / "log" if args.dump else None
    null = os.open(raw_log or os.devnull, os.O_WRONLY | os.O_CREAT, 0o600)
    os.dup2(null, 1)
    configure_logging(args.log_level)
    global OUT
    with open(real, "w", closefd=True) as OUT:
        asyncio.run(run(args.people, args.rounds, args.calls, args.top, args.dump))
    if raw_log is not None:
        sys.stdout.flush()
        dump_log(raw_log, args.dump.with_name(args.dump.name + ".log"))


if __name__ == "__main__":
    main()
