"""The MLLP front's own work a message, in-process: no sockets, no workers.

`MllpServer.handle` (mapping, the precheck, `accept_mapped`, the ACK's text)
with the group commit on a SQLite file (WAL, synchronous=FULL, the hub's
inline writer), `--connections` senders each waiting for its ACK before its
next message, as in `bench_mllp.py`. Figures a message: CPU
(`time.process_time`, every thread of this process), and with `--calls`
Python function calls (cProfile: a figure the host's speed does not move).

    .venv/bin/python bench/bench_mllp_inproc.py                   # 3 rounds of 2,000 A01
    .venv/bin/python bench/bench_mllp_inproc.py --calls           # call counts, top functions
    .venv/bin/python bench/bench_mllp_inproc.py --dump out.json   # ACKs and rows, ids and times masked
    .venv/bin/python bench/bench_mllp_inproc.py --mixed --dump out.json  # with refusals, errors, repeats

`--mixed`: every 5th message a discharge (A03) of someone not on the
register (refused before anything is kept: AA), every 7th an A01 with a
bad NHS number (AE, quarantined), every 11th a repeat of a message sent 40
earlier (the first answer again). `--dump` writes each message's ACK, every table's rows and the ingest counters (ids, times and
encrypted bytes masked, rows sorted) so that two checkouts can be diffed for
the same input.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select  # noqa: E402

from bench.bench_mllp import FIXTURE, a01, nhs_numbers  # noqa: E402
from hub.agreements_loader import load_agreements  # noqa: E402
from hub.clients import add_client  # noqa: E402
from hub.crypto import DataProtector  # noqa: E402
from hub.ingest.service import IngestService  # noqa: E402
from hub.mllp import MllpFramer, MllpServer  # noqa: E402
from hub.observability import metrics  # noqa: E402
from hub.observability.logging import configure_logging  # noqa: E402
from hub.refdata.loader import load_reference_data  # noqa: E402
from hub.register_counts import ensure_register_status  # noqa: E402
from hub.settings import REPO_ROOT  # noqa: E402
from hub.store.db import close_inline, create_engine, create_schema  # noqa: E402
from hub.store.schema import metadata  # noqa: E402

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CLIENT = re.compile(r"\brnu-[0-9a-f]{8}\b")  # add_client's id: the org code and random hex
# Numbered in commit order (which sender's message went first varies) or keyed by this run's key.
_RUN_SPECIFIC = frozenset({"decision_id", "offset", "nhs_number_index", "key_hash"})
_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?")


A03 = FIXTURE.parent / "ADT_A03_discharge.hl7"


def mixed(template: str, discharge: str, numbers: list[str], prefix: str) -> list[bytes]:
    """A01s with a discharge, a bad NHS number or a repeat in every few (see the module doc)."""
    out: list[bytes] = []
    for i, nhs in enumerate(numbers):
        if i % 11 == 10 and i >= 40:
            out.append(out[i - 40])
        elif i % 5 == 4:
            out.append(a01(discharge, nhs, f"{prefix}-{i}"))  # the A03 fixture has the same NHS number
        elif i % 7 == 6:
            out.append(a01(template, nhs[:-1] + str((int(nhs[-1]) + 1) % 10), f"{prefix}-{i}"))
        else:
            out.append(a01(template, nhs, f"{prefix}-{i}"))
    return out



async def setup(tmp: Path) -> tuple[MllpServer, IngestService, object]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp / 'hub.db'}")
    await create_schema(engine)
    await add_client(engine, "Oxford Health", "RNU", "trust", ["register:write"])
    ref = load_reference_data()
    agreements = load_agreements(REPO_ROOT / "contracts" / "area-agreements.yaml")
    await ensure_register_status(engine, ref, agreements)
    ingest = IngestService(engine, ref, agreements, DataProtector.from_settings(None, tmp / "key"))
    server = MllpServer(engine, ingest, "127.0.0.1", 0)
    server._sock.close()  # handle() only: no listener
    return server, ingest, engine


async def send(server: MllpServer, frames: list[bytes], connections: int, acks: list[str | None]) -> None:
    """`connections` senders, each one message at a time (its ACK before its next)."""
    payloads = [f.payload for b in frames for f in MllpFramer().feed(b)]

    async def sender(k: int) -> None:
        for i in range(k, len(payloads), connections):
            acks[i] = await server.handle(payloads[i])

    await asyncio.gather(*(sender(k) for k in range(connections)))


def mask(value: object) -> object:
    if isinstance(value, (bytes, memoryview)):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True, default=str)
    text = str(value)
    return _CLIENT.sub("<client>", _TIME.sub("<time>", _UUID.sub("<uuid>", text)))


async def dump(engine, acks: list[str | None], path: Path) -> None:
    tables = {}
    async with engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = (await conn.execute(select(table))).mappings().all()
            tables[table.name] = sorted(json.dumps({k: "<masked>" if k in _RUN_SPECIFIC else mask(v)
                                                    for k, v in r.items()}, sort_keys=True) for r in rows)
    masked_acks = [mask(re.sub(r"^(MSH(?:\|[^|\r]*){5}\|)[^|\r]*((?:\|[^|\r]*){2}\|)[^|\r]*", r"\1<ts>\2<id>",
                               a or "")) for a in acks]
    counted = {f"{x.name}{sorted(x.labels.items())}": x.value for m in (metrics.INGEST, metrics.SERVICE_LEVEL)
               for metric in m.collect() for x in metric.samples if x.name.endswith("_total")}
    path.write_text(json.dumps({"acks": masked_acks, "tables": tables, "metrics": counted}, indent=1,
                               sort_keys=True))


async def main(args: argparse.Namespace) -> None:
    configure_logging("WARNING")
    tmp = Path(tempfile.mkdtemp(prefix="s117-bench-mllp-inproc-"))
    server, ingest, engine = await setup(tmp)
    template = FIXTURE.read_bytes().decode()
    numbers = nhs_numbers(args.messages * (args.rounds + 1))
    warm = [a01(template, n, f"W-{i}") for i, n in enumerate(numbers[-50:])]
    await send(server, warm, args.connections, [None] * len(warm))
    per_message = []
    profile = cProfile.Profile(time.process_time) if args.calls else None  # CPU, not the fsyncs
    all_acks: list[str | None] = []
    for r in range(args.rounds):
        chunk = numbers[r * args.messages:(r + 1) * args.messages]
        batch = mixed(template, A03.read_bytes().decode(), chunk, f"R{r}") if args.mixed else \
            [a01(template, n, f"R{r}-{i}") for i, n in enumerate(chunk)]
        acks: list[str | None] = [None] * len(batch)
        if profile is not None:
            profile.enable()
        c0 = time.process_time()
        await send(server, batch, args.connections, acks)
        spent = time.process_time() - c0
        if profile is not None:
            profile.disable()
        assert all(a is not None and ("|AA|" in a or args.mixed) for a in acks), acks[:3]
        all_acks += acks
        per_message.append(spent / len(batch) * 1e6)
    print(f"{args.rounds} rounds of {args.messages} A01 over {args.connections} senders, in-process; "
          f"CPU us a message: {', '.join(f'{v:.0f}' for v in per_message)} (median "
          f"{statistics.median(per_message):.0f}); batches {ingest._commit.batches}, "
          f"units {ingest._commit.units}")
    if profile is not None:
        stats = pstats.Stats(profile)
        calls = sum(v[1] for v in stats.stats.values())  # type: ignore[attr-defined]
        print(f"Python calls a message: {calls / (args.rounds * args.messages):.1f}")
        if args.top:
            stats.sort_stats(args.sort).print_stats(args.top)
    if args.dump:
        await dump(engine, all_acks, Path(args.dump))
        print(f"dumped to {args.dump}")
    close_inline(engine)
    await engine.dispose()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--mixed", action="store_true", help="discharges refused, bad NHS numbers and repeats too")
    ap.add_argument("--calls", action="store_true", help="count Python calls (cProfile; slows the run)")
    ap.add_argument("--top", type=int, default=0, help="with --calls: print the N functions with most own time")
    ap.add_argument("--sort", default="tottime", help="with --top: pstats sort key (tottime, cumulative)")
    ap.add_argument("--dump", help="write the ACKs and every table's rows (masked) to this JSON file")
    asyncio.run(main(ap.parse_args()))
