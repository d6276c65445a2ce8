"""Time the outbound FHIR message: dict build + orjson vs the R4B model path.

    .venv/bin/python bench/bench_fhir.py [N]

Both paths produce the JSON bytes of the same Bundle (the "entitlement
started, all field groups" golden case: 4 entries). The baseline is measured
in the same run:

* fast:     build_event_message(...) -> orjson.dumps
* baseline: build_event_message(...) -> Bundle.model_validate -> model_dump_json
  (and the two halves of the baseline separately)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import orjson
from fhir.resources.R4B.bundle import Bundle

from hub.fhir.examples import golden_cases
from hub.fhir.messages import build_event_message

KWARGS = golden_cases()["entitlement-started-all-groups"]


def fast() -> bytes:
    return orjson.dumps(build_event_message(**KWARGS))


def model_path() -> str:
    return Bundle.model_validate(build_event_message(**KWARGS)).model_dump_json(exclude_none=True)


BUILT = build_event_message(**KWARGS)
MODEL = Bundle.model_validate(BUILT)


def validate_only() -> object:
    return Bundle.model_validate(BUILT)


def dump_only() -> str:
    return MODEL.model_dump_json(exclude_none=True)


def build_only() -> object:
    return build_event_message(**KWARGS)


def time_per_call(fn: Callable[[], object], n: int, repeats: int = 5) -> float:
    """Best of ``repeats`` runs of ``n`` calls, in microseconds per call."""
    for _ in range(min(n, 200)):  # warm up
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    # Same message either way (R4B re-serialises; compare as data).
    assert orjson.loads(fast()) == orjson.loads(model_path())
    print(f"python {sys.version.split()[0]}, N={n} per run, best of 5; message {len(fast())} bytes")
    rows = [
        ("build_event_message", build_only),
        ("build + orjson.dumps                  (fast)", fast),
        ("R4B Bundle.model_validate (prebuilt dict)", validate_only),
        ("R4B model_dump_json (prebuilt model)", dump_only),
        ("build + model_validate + model_dump_json (baseline)", model_path),
    ]
    results = {}
    for label, fn in rows:
        us = time_per_call(fn, n)
        results[label] = us
        print(f"  {label:<55} {us:10.2f} us/msg")
    f = results["build + orjson.dumps                  (fast)"]
    b = results["build + model_validate + model_dump_json (baseline)"]
    print(f"ratio baseline / fast: {b / f:.1f}x  ({1e6 / f:,.0f} vs {1e6 / b:,.0f} msgs/s on one core)")


if __name__ == "__main__":
    main()
