"""The bulk path's per-row preparation (`IngestService._bulk_prepare`) with
the chunk's NHS numbers checked and indexed once (`_number`) and the change
type looked up in a dict gives exactly what the code before gave (kept below
as `reference_prepare`): the same precheck inputs, the same validation
problems, the same keys and indexes, over random rows (good, bad, odd types,
one person's number sent with and without spaces), with and without the
chunk's memo, in any order."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from hypothesis import example, given, settings, strategies as st
from pydantic import ValidationError

from hub.agreements_loader import load_agreements
from hub.crypto import DataProtector
from hub.domain.model import ChangeType
from hub.ingest.contract import RegisterChangeIn, change_digest
from hub.ingest.nhs_number import nhs_number_problem, normalise
from hub.ingest.service import BulkRow, Digest, IngestService, _Prepared, bulk_person_key, payload_sha256
from hub.ingest.validation import UNCHECKED, problems_from_pydantic, semantic_problems
from hub.refdata.loader import load_reference_data
from hub.settings import REPO_ROOT
from hub.store.db import create_engine

_REF = load_reference_data()
TODAY = date(2026, 12, 2)


def reference_prepare(self: IngestService, row: BulkRow, today: date) -> _Prepared:
    """`IngestService._bulk_prepare` as it was before the chunk's memo (c7955bc)."""
    data = row.data
    if data is None:
        return _Prepared(row)
    p = _Prepared(row, smid=data.get("source_message_id") if isinstance(data.get("source_message_id"), str)
                  else None, digest=payload_sha256(data), key=bulk_person_key(data))
    try:
        p.change_type = ChangeType(data.get("change_type"))
    except ValueError:
        p.change_type = None
    precheck_nhs = None
    nhs, nhs_problem = None, None
    if p.change_type is not None:
        person = data.get("person")
        nhs = person.get("nhs_number") if isinstance(person, dict) else None
        hospital = data.get("hospital_ods")
        if isinstance(nhs, str):
            nhs_problem = nhs_number_problem(nhs)
        if isinstance(nhs, str) and not nhs_problem and (
                hospital is None or (isinstance(hospital, str) and self._ref.hospital(hospital) is not None)):
            precheck_nhs = normalise(nhs)
            p.precheck_index = self._protector.index(precheck_nhs)
            p.hospital = hospital
    try:
        change_in = RegisterChangeIn.model_validate(data)
        known = nhs_problem if isinstance(nhs, str) and change_in.person.nhs_number == nhs else UNCHECKED
        problems = semantic_problems(change_in, self._ref, today, nhs_problem=known)
    except ValidationError as exc:
        change_in, problems = None, problems_from_pydantic(exc)
    if problems:
        p.problems = problems
    else:
        p.change_in = change_in
        nhs_in = normalise(change_in.person.nhs_number)
        p.index = p.precheck_index if p.precheck_index is not None and nhs_in == precheck_nhs \
            else self._protector.index(nhs_in)
    return p


NUMBERS = ["9991100016", "999 110 0016", "9991100024", "9991100017", "123", "", "0000000000", "٣٣٣٣٣٣٣٣٣٣",
           "99911000161", 9991100016, None, ["9991100016"]]
CHANGE_TYPES = ["gp-changed", " gp-changed", "review-completed", "moved", "detained", "bogus", "", None, 3, ["gp-changed"],
                ChangeType.GP_CHANGED]


@st.composite
def rows(draw: st.DrawFn) -> BulkRow:
    if draw(st.integers(0, 20)) == 0:
        return BulkRow(None, b"raw", (), "SW-9")
    person: Any = {"nhs_number": draw(st.sampled_from(NUMBERS))}
    if draw(st.booleans()):
        person["family_name"] = draw(st.sampled_from(["Testpatient", "", None]))
    if draw(st.integers(0, 10)) == 0:
        person = draw(st.sampled_from([None, "9991100016", []]))
    data: dict[str, Any] = {"schema_version": "1", "source_system": "swift",
                            "change_type": draw(st.sampled_from(CHANGE_TYPES)),
                            "source_message_id": draw(st.sampled_from(["SW-1", "SW-2", None, 7])),
                            "effective_date": draw(st.sampled_from(["2025-01-02", "2027-01-01", "bad"])),
                            "person": person}
    for name, values in (("gp_practice_ods", ["K82001", "ZZZ", None]), ("hospital_ods", [None, "RNU01", "ZZZ99", 4]),
                         ("notified_on", ["2025-01-03", "2024-12-31"]), ("review_reason", ["annual"])):
        if draw(st.booleans()):
            data[name] = draw(st.sampled_from(values))
    if draw(st.integers(0, 15)) == 0:
        del data["change_type"]
    return BulkRow(data, b"raw")


def _same(a: _Prepared, b: _Prepared) -> None:
    """`a` (the bulk path now) against `b` (the reference, which kept the payload's own digest for
    every row): a row that validated now carries the digest of what it means (`Digest`, bd51805),
    whose `raw` is the reference's; any other row the payload's own, as before."""
    digest = a.digest
    if isinstance(digest, Digest):
        assert a.change_in is not None and digest == change_digest(a.change_in)
        digest = digest.raw
    assert (a.row, a.smid, digest, a.change_type, a.precheck_index, a.hospital, a.index, a.key) == \
           (b.row, b.smid, b.digest, b.change_type, b.precheck_index, b.hospital, b.index, b.key)
    assert type(a.change_type) is type(b.change_type)
    assert a.problems == b.problems
    assert (a.change_in is None) == (b.change_in is None)
    if a.change_in is not None:
        assert a.change_in == b.change_in


VALID = {"schema_version": "1", "source_system": "swift", "change_type": "review-completed",
         "source_message_id": "SW-1", "effective_date": "2025-01-02", "person": {"nhs_number": "9991100016"}}


def test_bulk_prepare_is_the_reference(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    agreements = load_agreements(REPO_ROOT / "contracts" / "area-agreements.yaml")
    service = IngestService(engine, _REF, agreements, DataProtector.from_settings(None, tmp_path / "key"))

    @settings(max_examples=600, deadline=None)
    @given(st.lists(rows(), min_size=1, max_size=12))
    @example([BulkRow(VALID, b"raw")])  # a row that validates every run (random ones rarely do)
    def check(chunk: list[BulkRow]) -> None:
        numbers: dict[str, Any] = {}  # one chunk's memo, shared by its rows as in accept_bulk
        for row in chunk:
            want = reference_prepare(service, row, TODAY)
            _same(service._bulk_prepare(row, TODAY, numbers), want)
            _same(service._bulk_prepare(row, TODAY), want)  # without a memo

    check()


def test_bulk_cache_keeps_decisions_for_one_caller_and_channel_and_its_people_only() -> None:
    """BulkCache.decisions: the write decisions a file's chunks share are for one caller and channel
    (another empties them) and only for the people the cache still holds (with their facts)."""
    from hub.domain.access import Caller
    from hub.ingest.service import BulkCache

    cache = BulkCache(max_weight=100)
    council, other = Caller("E06000060", "council"), Caller("E10000034", "council")
    decided = cache.decisions(council, "file")
    decided[("p1", ChangeType.GP_CHANGED, None, False)] = ("facts-1", "allowed")
    decided[("p2", ChangeType.GP_CHANGED, None, False)] = ("facts-2", "allowed")
    decided[(None, ChangeType.GP_CHANGED, None, False)] = (None, "refused")
    assert cache.decisions(council, "file") is decided and len(decided) == 3  # the same caller: kept
    cache.keep(TODAY, {"p1": []}, {})  # p1 held, p2 not: p2's decisions go (no person: kept)
    assert set(cache.decisions(council, "file")) == {("p1", ChangeType.GP_CHANGED, None, False),
                                                     (None, ChangeType.GP_CHANGED, None, False)}
    assert cache.decisions(other, "file") == {}  # another caller: emptied
    cache.decisions(other, "file")[("p1", ChangeType.GP_CHANGED, None, False)] = ("facts-1", "refused")
    assert cache.decisions(other, "rest") == {}  # another channel: emptied
