"""The dispatcher with its messages rendered two ways, alternately in one process:
by `EventMessages` (hub/fhir/message_json.py: the parts a person's recipients
share serialised once) and by `build_event_message` + `add_task` +
`orjson.dumps` (the dicts, as before the eighteenth session). CPU per event of
a whole dispatch of a copy of a kept `bench_load --ingest-only --keep` level,
rounds alternating which goes first: the two differ only in the messages, so
this host's drift between processes weighs less than in two
`bench_dispatch.py` runs.

    .venv/bin/python bench/dispatch_messages_ab.py /tmp/kept/c32-b64 --rounds 8 --batch 16
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hub.delivery.dispatcher as dm  # noqa: E402
from hub.fhir.message_json import EventMessages  # noqa: E402
from hub.fhir.messages import build_event_message  # noqa: E402
from hub.workflows.fhir_task import add_task  # noqa: E402


class DictMessages(EventMessages):
    """The same bytes through the dicts: `build_event_message`, its Task, `orjson.dumps`."""

    def __init__(self, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        self.kwargs = kwargs

    def render(self, **kwargs) -> bytes:  # noqa: ANN003
        bundle = build_event_message(**self.kwargs, **kwargs)
        add_task(bundle, kwargs["event"].details, kwargs["include"], ns=self.kwargs["ns"])
        return orjson.dumps(bundle)


async def one(source: Path, batch: int, renderer: type) -> float:
    work = Path(tempfile.mkdtemp(prefix="s117-messages-ab-"))
    try:
        for name in ("hub.db", "data.key", "sharing.yaml"):
            shutil.copy(source / name, work / name)
        os.environ.update({
            "S117_DATABASE_URL": f"sqlite+aiosqlite:///{work / 'hub.db'}", "S117_DATA_KEY_FILE": str(work / "data.key"),
            "S117_SHARING_AGREEMENTS_PATH": str(work / "sharing.yaml"), "S117_BUS_URL": "sql",
            "S117_LOG_LEVEL": "WARNING", "S117_CANONICAL_BASE": "https://s117hub.example.org",
            "S117_REVIEW_SCAN_INTERVAL_SECONDS": "0"})
        from hub.bootstrap import build_hub  # noqa: PLC0415
        from hub.settings import Settings  # noqa: PLC0415

        dm.EventMessages = renderer
        hub = await build_hub(Settings())
        d = hub.dispatcher
        await d.run_once(1)
        gc.collect()
        n, c0 = 0, time.process_time()
        while k := await d.run_once(batch):
            n += k
        cpu = time.process_time() - c0
        await hub.close()
        return 1000 * cpu / max(n, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("level", type=Path, help="a kept bench_load level (hub.db, data.key, sharing.yaml)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    from hub.server import tune_gc  # noqa: PLC0415

    tune_gc()  # as the worker process
    kinds = {"dicts": DictMessages, "EventMessages": EventMessages}
    out: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        for name in (list(kinds) if r % 2 == 0 else list(reversed(kinds))):
            out[name].append(await one(args.level, args.batch, kinds[name]))
        print(f"round {r + 1}: dicts {out['dicts'][-1]:.3f}, EventMessages {out['EventMessages'][-1]:.3f} ms an event",
              flush=True)
    for name, v in out.items():
        print(f"{name}: mean {sum(v) / len(v):.3f} ms an event ({', '.join(f'{x:.3f}' for x in v)})")


if __name__ == "__main__":
    asyncio.run(main())
