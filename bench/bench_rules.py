"""The rules engine alone, in-process: CPU per change of `evaluate` (a whole
history at once; and each prefix, from scratch, as the front and the
dispatcher evaluate a person's history for each change), of `Evaluation.extended` (a history folded change by
change, as the council files' bulk path does) and of `derive_events`, over
seeded random histories of 1-25 changes a person (detentions, section
changes, discharges, CTOs, moves, GP changes, placements, reviews,
re-detentions, disputes, discharge decisions), with the shipped reference
data and agreements. CPU (`time.process_time`) is printed per round with the
min and median; `--calls` prints Python calls per change (cProfile), a figure
the host's speed does not move; `--dump FILE` writes every status and event
(every prefix of every history) as text, to diff two checkouts.

    .venv/bin/python bench/bench_rules.py                 # 2,000 people, 5 rounds
    .venv/bin/python bench/bench_rules.py --people 500 --rounds 3
    .venv/bin/python bench/bench_rules.py --calls [--top 25]
    .venv/bin/python bench/bench_rules.py --dump /tmp/rules.txt --people 3000 [--seed 7] [--as-of 2021-06-01]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import random
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.domain.agreements import AgreementBook  # noqa: E402
from hub.domain.model import (  # noqa: E402
    ChangeType as T, DischargeDecision, DischargeReason, Dispute, DisputeKind, RegisterChange,
)
from hub.domain.rules import derive_events, evaluate, evaluation  # noqa: E402
from hub.refdata.loader import load_reference_data  # noqa: E402

AS_OF = date(2026, 12, 2)
COUNCILS = ["E06000060", "E10000034", "E09000015", "E10000025", "E08000025", "E10000002", "E10000006",
            "E06000019"]
PRACTICES = ["K82001", "M81001", "K84001", "E84001", "M85001", "Z99999"]
HOSPITALS = ["RNU", "R1A", "RV3", "RWK"]
SECTIONS = ["02", "03", "03", "03", "37", "16", "10", "31", "04", "20"]
LAWFUL = DischargeDecision(True, True, (DischargeReason.NO_LONGER_NEEDS_SERVICES,), ("RC", "AMHP"), True)
# What follows a change, weighted to the shapes the benches post (GP changes
# and reviews the commonest, as in a council's file).
LATER = ([T.GP_CHANGED] * 6 + [T.REVIEW_COMPLETED] * 5 + [T.MOVED] * 3 + [T.LEFT_HOSPITAL] * 3
         + [T.DETAINED] * 2 + [T.SECTION_CHANGED] * 2 + [T.CTO_STARTED, T.CTO_RECALLED, T.CTO_ENDED,
                                                         T.PLACEMENT_STARTED, T.PLACEMENT_STARTED,
                                                         T.REVIEW_REQUESTED, T.DISCHARGE_CONSIDERED,
                                                         T.S17_LEAVE_STARTED, T.S17_LEAVE_ENDED,
                                                         T.SECTION_ENDED_STAYED_INFORMALLY, T.CTO_REVOKED,
                                                         T.S117_DISCHARGE_DECIDED, T.DISPUTE_RAISED,
                                                         T.DISPUTE_RESOLVED])


def history(rng: random.Random, person_id: str) -> list[RegisterChange]:
    """A person's changes in arrival order: a detention and discharge, then
    anything; every tenth history has one change arriving late."""
    count = rng.randint(1, 25)
    day = date(2012, 1, 1) + timedelta(days=rng.randint(0, 4500))
    out = []
    for index in range(count):
        kind = T.DETAINED if index == 0 else (T.LEFT_HOSPITAL if index == 1 else rng.choice(LATER))
        fields: dict = {}
        if kind in (T.DETAINED, T.SECTION_CHANGED):
            fields["legal_status_code"] = rng.choice(SECTIONS)
            fields["order_type"] = rng.choice([None, None, "hospital-order"])
        if kind is T.DETAINED:
            fields["hospital_ods"] = rng.choice(HOSPITALS)
            fields["from_prison"] = fields["legal_status_code"] == "16" and rng.random() < 0.5
            if index == 0 or rng.random() < 0.5:
                if rng.random() < 0.15:
                    fields["no_fixed_abode"] = True
                else:
                    fields["residence_la_gss"] = rng.choice(COUNCILS)
                fields["gp_practice_ods"] = rng.choice(PRACTICES + [None])
        if kind is T.MOVED:
            fields["residence_la_gss"] = rng.choice(COUNCILS)
        if kind is T.GP_CHANGED:
            fields["gp_practice_ods"] = rng.choice(PRACTICES)
        if kind is T.LEFT_HOSPITAL:
            fields["discharge_destination_la_gss"] = rng.choice(COUNCILS + [None])
        if kind is T.REVIEW_REQUESTED and rng.random() < 0.5:
            fields["review_reason"] = "carer asked"
        if kind is T.S117_DISCHARGE_DECIDED:
            fields["discharge"] = LAWFUL if rng.random() < 0.5 else DischargeDecision(
                rng.random() < 0.5, True, (DischargeReason.TIME_PASSED,), (), rng.random() < 0.5)
        if kind in (T.DISPUTE_RAISED, T.DISPUTE_RESOLVED):
            council = rng.random() < 0.5
            parties = ("E06000060", "E09000015") if council else ("14Y", "W2U3Z")
            fields["dispute"] = Dispute("D1", DisputeKind.COUNCIL if council else DisputeKind.COMMISSIONER, parties,
                                        rng.choice(parties) if kind is T.DISPUTE_RESOLVED else None)
        # Notice and recording near the day the hub runs, as in the live flow and a council's file
        # (a history back-loaded, its effective dates years old, is recorded now).
        notified = AS_OF - timedelta(days=rng.choice([0, 0, 0, 1, 3, 9]))
        out.append(RegisterChange(
            change_id=f"{person_id}-C{index:02d}", person_id=person_id, change_type=kind, effective_date=day,
            notified_on=notified, recorded_on=max(notified, AS_OF - timedelta(days=rng.choice([0, 0, 1]))),
            source="bench", source_message_id=f"{person_id}-{index:02d}", **fields,
        ))
        day += timedelta(days=rng.choice([0, 0, 1, 7, 30, 90, 200, 365]))
    if len(out) > 2 and rng.random() < 0.1:
        out.append(out.pop(rng.randint(1, len(out) - 2)))
    return out


def build(people: int, seed: int) -> list[tuple[str, list[RegisterChange]]]:
    rng = random.Random(seed)
    return [(f"P{n:05d}", history(rng, f"P{n:05d}")) for n in range(people)]


def run_evaluate(histories, ref, book) -> None:
    for person_id, changes in histories:
        evaluate(person_id, changes, ref, book, AS_OF)


def run_prefixes(histories, ref, book) -> None:
    """As the HTTP/MLLP front and the dispatcher do: each change evaluates the
    person's history up to and including it, from scratch."""
    for person_id, changes in histories:
        for k in range(1, len(changes) + 1):
            evaluate(person_id, changes[:k], ref, book, AS_OF)


def run_extended(histories, ref, book, holidays) -> None:
    for person_id, changes in histories:
        ev = evaluation(person_id, (), ref, book, AS_OF)
        for change in changes:
            before = ev.status
            ev = ev.extended(change)
            derive_events(before, ev.status, change, holidays=holidays)


def dump(histories, ref, book, holidays, path: str) -> None:
    with open(path, "w") as out:
        for person_id, changes in histories:
            ev = evaluation(person_id, (), ref, book, AS_OF)
            for k, change in enumerate(changes, 1):
                before = ev.status
                ev = ev.extended(change)
                fresh = evaluate(person_id, changes[:k], ref, book, AS_OF)
                assert fresh == ev.status, (person_id, k)
                out.write(f"{person_id} {k} {ev.status!r}\n")
                for e in derive_events(before, ev.status, change, holidays=holidays):
                    out.write(f"  {e!r}\n")


def main() -> None:
    global AS_OF
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=117)
    parser.add_argument("--calls", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--dump")
    parser.add_argument("--as-of", type=date.fromisoformat, default=date(2026, 12, 2),
                        help="the day evaluated (earlier: later changes in the future, the CCG era)")
    args = parser.parse_args()
    AS_OF = args.as_of
    ref, book = load_reference_data(), AgreementBook.default()
    holidays = ref.bank_holidays()
    histories = build(args.people, args.seed)
    n = sum(len(c) for _, c in histories)
    if args.dump:
        dump(histories, ref, book, holidays, args.dump)
        print(f"{len(histories)} people, {n} changes: every prefix's status and events written to {args.dump}")
        return
    run_evaluate(histories, ref, book)
    run_extended(histories, ref, book, holidays)  # warm the caches
    if args.calls:
        for name, fn in (("evaluate", lambda: run_evaluate(histories, ref, book)),
                         ("extended+derive_events", lambda: run_extended(histories, ref, book, holidays))):
            profile = cProfile.Profile(time.process_time)
            profile.runcall(fn)
            stats = pstats.Stats(profile)
            print(f"{name}: {stats.total_calls / n:.1f} Python calls a change ({n} changes)")
            stats.sort_stats(args.sort).print_stats(args.top)
        return
    print(f"{len(histories)} people, {n} changes ({n / len(histories):.1f} a person)")
    results: dict[str, list[float]] = {"evaluate": [], "evaluate each prefix": [], "extended+derive_events": []}
    gc.disable()
    for _ in range(args.rounds):
        for name, fn in (("evaluate", lambda: run_evaluate(histories, ref, book)),
                         ("evaluate each prefix", lambda: run_prefixes(histories, ref, book)),
                         ("extended+derive_events", lambda: run_extended(histories, ref, book, holidays))):
            start = time.process_time()
            fn()
            results[name].append((time.process_time() - start) / n * 1e6)
            gc.collect()
    for name, per in results.items():
        print(f"{name:24s} us a change: {' '.join(f'{v:.2f}' for v in per)}  min {min(per):.2f}  "
              f"median {statistics.median(per):.2f}")


if __name__ == "__main__":
    main()
