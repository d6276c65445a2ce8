"""The reference-data re-tell (hub/refdata_retell.py) for a council succeeded by one the register of local
authorities lists without a GSS code yet (hazard H-03): on the vesting day the person moves to no council
and is told; the register later giving the successor its code moves them to it and tells it. Real SQLite,
the hub in-process, a clock the test sets."""

from __future__ import annotations

import csv
import hashlib
from datetime import date
from pathlib import Path

import orjson
from sqlalchemy import update

from hub.audit import record_operator_action
from hub.refdata.loader import ReferenceSources, load_reference_data
from hub.refdata_retell import ACTION, ACTOR, ReferenceDataRetell, dataset_parts
from hub.store.schema import register_status
from tests.unit.test_council_split_retell import _corrections, _gauge, _held
from tests.unit.test_council_split_retell import _put_on_register as put_on_register

DATA = Path(__file__).resolve().parents[2] / "hub" / "refdata" / "data"
BUCKS = "E06000060"
CHILTERN_VALE = ("CHV", "E06000099", "Chiltern Vale")  # fictional: no such council or code
AS_OF = date(2026, 11, 1)


def register(path: Path, vesting: str, gss: str) -> Path:
    """The shipped register with Buckinghamshire Council replaced on `vesting` by Chiltern Vale, with GSS code
    `gss` (empty: listed before ONS gave it one)."""
    with (DATA / "mysociety_uk_local_authorities_current.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    at = {name: i for i, name in enumerate(rows[0])}
    bucks = next(r for r in rows[1:] if r[at["gss-code"]] == BUCKS)
    new = list(bucks)
    code, _, name = CHILTERN_VALE
    new[at["local-authority-code"]], new[at["gss-code"]], new[at["nice-name"]] = code, gss, name
    new[at["official-name"]], new[at["start-date"]], new[at["alt-names"]] = f"{name} Council", vesting, name
    new[at["former-gss-codes"]] = ""
    bucks[at["end-date"]], bucks[at["replaced-by"]], bucks[at["current-authority"]] = vesting, code, "False"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([*rows, new])
    return path


def _ref(path: Path):  # noqa: ANN202
    return load_reference_data(ReferenceSources(local_authorities_file=path, local_authorities_as_of=AS_OF))


async def test_on_the_vesting_day_the_person_moves_to_no_council_and_the_later_register_to_the_successor(
        app_hub, tmp_path: Path):
    await put_on_register(app_hub, "nogss")
    day = [date(2027, 3, 31)]
    ref = _ref(register(tmp_path / "without_gss.csv", "2027-04-01", ""))
    retell = ReferenceDataRetell(app_hub.hub.engine, ref, app_hub.hub.agreements, today=lambda: day[0])
    assert await retell.run_once() == 0 and await _held(app_hub) == BUCKS  # before the vesting day: Bucks
    assert retell.next_succession(day[0]) == date(2027, 4, 1)  # the workers wake that day
    day[0] = date(2027, 4, 1)
    assert await retell.run_once() == 1
    assert await _held(app_hub) is None  # never Buckinghamshire's code ("unknown council"), never a guess
    [told] = await _corrections(app_hub)
    text = orjson.dumps(told).decode()
    assert "council-successor-without-gss" in text and "Chiltern Vale (register code CHV, no GSS code yet)" in text
    assert await retell.run_once() == 0  # the same data, the same day: nobody again
    # The gauge says what Buckinghamshire's people await: the successor's GSS code (a newer register), not a
    # register change (the alert's runbook follows the label).
    assert _gauge(BUCKS, "the-successors-gss-code") == 1 and not _gauge(BUCKS, "the-successor-named")

    later = _ref(register(tmp_path / "with_gss.csv", "2027-04-01", CHILTERN_VALE[1]))
    retell = ReferenceDataRetell(app_hub.hub.engine, later, app_hub.hub.agreements, today=lambda: day[0])
    assert await retell.run_once() == 1
    assert await _held(app_hub) == CHILTERN_VALE[1]
    assert len(await _corrections(app_hub)) == 2
    assert _gauge(BUCKS, "the-successors-gss-code") == 0  # resolved: 0, so the alert resolves


async def test_the_first_start_of_this_version_tells_people_named_unknown_council_before_it(app_hub, tmp_path: Path):
    """A store whose last pass recorded the same data under the rules before this version (the abolished
    council's code kept as the council, "unknown council E06000060"): the start's pass tells the person,
    though no dataset changed."""
    await put_on_register(app_hub, "nogss")
    ref = _ref(register(tmp_path / "without_gss.csv", "2026-04-01", ""))
    today = date(2026, 12, 5)
    parts = dataset_parts(ref.datasets())
    before = hashlib.sha256(orjson.dumps({"datasets": parts, "successions_from": "2026-04-01",
                                          "rules": "council-split-undetermined"},
                                         option=orjson.OPT_SORT_KEYS)).hexdigest()
    async with app_hub.hub.engine.begin() as conn:  # as the version before left it
        await conn.execute(update(register_status).values(council_code=BUCKS))
        await record_operator_action(conn, ACTOR, ACTION, before[:100], {"fingerprint": before, "datasets": parts})
    retell = ReferenceDataRetell(app_hub.hub.engine, ref, app_hub.hub.agreements, today=lambda: today)
    assert await retell.run_once() == 1
    assert await _held(app_hub) is None
