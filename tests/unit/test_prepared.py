"""hub.store.db.Prepared: a statement run on the SQLite driver gives what
SQLAlchemy gives for it (values, types, row access, row counts), on the
inline writer and on snapshots; elsewhere it is SQLAlchemy's own execution."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, func, select

from hub.store.db import (
    Prepared,
    close_inline,
    create_engine,
    create_schema,
    execute_prepared,
    insert_or_merge,
    snapshot,
    write_transaction,
)
from hub.store.schema import bus_messages, consumer_offsets

FETCH = Prepared(select(bus_messages)
                 .where(bus_messages.c.topic == bindparam("topic"), bus_messages.c.offset >= bindparam("start"))
                 .order_by(bus_messages.c.offset).limit(bindparam("limit")))
COUNT = Prepared(select(func.count()).select_from(bus_messages).where(bus_messages.c.topic == bindparam("topic")))
MOVE = Prepared(consumer_offsets.update().where(consumer_offsets.c.group_id == bindparam("g"))
                .values(next_offset=bindparam("n"), updated_at=bindparam("at")))


async def _engine(tmp_path: Path):  # noqa: ANN202
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await create_schema(engine)
    return engine


async def _publish(engine, n: int, first: int = 0) -> None:  # noqa: ANN001
    at = datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC)
    async with write_transaction(engine) as conn:
        await conn.execute(bus_messages.insert(), [
            {"topic": "t" if i % 3 else "u", "key": f"k{i}", "event_id": f"e{i}",
             "payload": {"n": i, "nested": {"a": [1, "x"]}, "text": "é"}, "headers": {"h": str(i)},
             "created_at": at, "relayed_at": None} for i in range(first, first + n)])


async def test_select_gives_what_sqlalchemy_gives(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    try:
        await _publish(engine, 30)
        params = {"topic": "t", "start": 4, "limit": 7}
        async with snapshot(engine) as conn:
            assert hasattr(conn, "run_prepared")  # the driver path is the one under test
            fast = (await execute_prepared(conn, FETCH, params)).all()
            slow = (await conn.execute(FETCH.statement, params)).all()
        assert len(fast) == 7
        assert [tuple(r) for r in fast] == [tuple(r) for r in slow]
        first = fast[0]
        # Attribute, index and mapping access; JSON decoded, datetimes parsed, NULL kept.
        assert first.payload == {"n": 4, "nested": {"a": [1, "x"]}, "text": "é"}
        assert first[0] == first.offset and first._mapping["event_id"] == "e4"
        assert isinstance(first.created_at, datetime) and first.created_at.microsecond == 123456
        assert first.relayed_at is None
        # The statement's built-in values (OFFSET 0) are taken when not given.
        assert "OFFSET" in FETCH.plan(conn.dialect).sql
    finally:
        close_inline(engine)
        await engine.dispose()


async def test_result_methods_and_missing_parameter(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    try:
        await _publish(engine, 9)
        async with snapshot(engine) as conn:
            assert (await execute_prepared(conn, COUNT, {"topic": "t"})).scalar_one() == 6
            assert (await execute_prepared(conn, COUNT, {"topic": "t"})).scalar() == 6
            none = await execute_prepared(conn, FETCH, {"topic": "zz", "start": 0, "limit": 5})
            assert none.first() is None and none.all() == [] and none.scalar() is None
            got = await execute_prepared(conn, FETCH, {"topic": "u", "start": 0, "limit": 5})
            assert [m["key"] for m in got.mappings().all()] == ["k0", "k3", "k6"]
            assert got.scalars().all() == [r.offset for r in got.all()]
            with pytest.raises(KeyError, match="limit"):
                await execute_prepared(conn, FETCH, {"topic": "u", "start": 0})
    finally:
        close_inline(engine)
        await engine.dispose()


async def test_writes_executemany_rowcount_and_stored_bytes(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    at = datetime(2026, 12, 1, 10, 0, 0, 5, tzinfo=UTC)
    try:
        upsert = Prepared(insert_or_merge(engine.dialect, consumer_offsets)
                          .values(group_id=bindparam("g"), topic=bindparam("t"), next_offset=bindparam("n"),
                                  updated_at=bindparam("at"))
                          .on_conflict_do_nothing(index_elements=[consumer_offsets.c.group_id,
                                                                  consumer_offsets.c.topic]))
        async with write_transaction(engine) as conn:
            await execute_prepared(conn, upsert, [{"g": "a", "t": "x", "n": 1, "at": at},
                                                  {"g": "b", "t": "x", "n": 2, "at": at}])
            await execute_prepared(conn, upsert, {"g": "a", "t": "x", "n": 99, "at": at})  # conflict: kept
            moved = await execute_prepared(conn, MOVE, [{"g": "a", "n": 5, "at": at}, {"g": "zz", "n": 5, "at": at}])
            assert moved.rowcount == 1
        # The same column text SQLAlchemy would have written (its bind processors ran).
        async with engine.begin() as conn:
            await conn.execute(consumer_offsets.insert().values(group_id="c", topic="x", next_offset=3, updated_at=at))
        async with engine.connect() as conn:
            from sqlalchemy import text
            raw = dict((await conn.execute(text("SELECT group_id, updated_at FROM consumer_offsets"))).all())
            rows = {r.group_id: r.next_offset for r in (await conn.execute(select(consumer_offsets))).all()}
        assert raw["a"] == raw["c"] == raw["b"]
        assert rows == {"a": 5, "b": 2, "c": 3}
    finally:
        close_inline(engine)
        await engine.dispose()


async def test_without_the_driver_path_sqlalchemy_runs_it(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    try:
        await _publish(engine, 6)
        async with engine.connect() as conn:  # an AsyncConnection: no run_prepared
            rows = (await execute_prepared(conn, FETCH, {"topic": "t", "start": 0, "limit": 10})).all()
        assert [r.key for r in rows] == ["k1", "k2", "k4", "k5"]
    finally:
        close_inline(engine)
        await engine.dispose()


def test_an_expanding_in_list_is_refused() -> None:
    from sqlalchemy.dialects import sqlite

    bad = Prepared(select(bus_messages).where(bus_messages.c.event_id.in_(bindparam("ids", expanding=True))))
    with pytest.raises(ValueError, match="expanding"):
        bad.plan(sqlite.dialect())


async def test_an_in_list_gives_the_same_rows_either_way(tmp_path: Path) -> None:
    from hub.store.db import InList

    engine = await _engine(tmp_path)
    keys = InList("keys", lambda keys: select(bus_messages.c.key, bus_messages.c.payload)
                  .where(bus_messages.c.key.in_(keys), bus_messages.c.topic == bindparam("topic"))
                  .order_by(bus_messages.c.offset))
    try:
        await _publish(engine, 12)
        wanted = ["k1", "k2", "k7", "missing", "k2"]
        async with snapshot(engine) as conn:
            inline = (await keys.execute(conn, wanted, {"topic": "t"})).all()
            assert "json_each" in keys._json.plan(conn.dialect).sql  # the driver path ran
            assert (await keys.execute(conn, [], {"topic": "t"})).all() == []
        async with engine.connect() as conn:  # no inline connection: SQLAlchemy's expanding IN
            expanding = (await keys.execute(conn, wanted, {"topic": "t"})).all()
        assert [tuple(r) for r in inline] == [tuple(r) for r in expanding]
        assert [r.key for r in inline] == ["k1", "k2", "k7"] and inline[0].payload["n"] == 1
    finally:
        close_inline(engine)
        await engine.dispose()


def test_the_fast_datetime_binding_stores_what_sqlalchemy_stores() -> None:
    """The plans' own SQLite DATETIME processor gives SQLAlchemy's string
    for every kind of value (aware, naive, whole seconds, early years, a
    date, None, a datetime subclass), and only replaces the default format."""
    from datetime import date, timedelta, timezone

    from sqlalchemy import DateTime
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from hub.store.db import _fast_bind

    dialect = sqlite_dialect.dialect()
    ours_type = DateTime(timezone=True)
    theirs = ours_type.dialect_impl(dialect).bind_processor(dialect)
    ours = _fast_bind(dialect, ours_type, theirs)
    assert ours is not theirs

    class Later(datetime):
        pass

    values = [datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC), datetime(2026, 12, 1, 9, 30, 15),
              datetime(2026, 3, 29, 1, 0, 0, 0, tzinfo=timezone(timedelta(hours=1))),
              datetime(5, 1, 2, 3, 4, 5, 6), date(2026, 12, 1), None, Later(2026, 1, 1, 0, 0, 0, 7)]
    for v in values:
        assert ours(v) == theirs(v), v
    from sqlalchemy import Date

    day_theirs = Date().dialect_impl(dialect).bind_processor(dialect)
    day_ours = _fast_bind(dialect, Date(), day_theirs)
    assert day_ours is not day_theirs
    for v in [date(2026, 12, 1), date(7, 1, 2), datetime(2026, 12, 1, 23, 59, 59, 999999, tzinfo=UTC), None]:
        assert day_ours(v) == day_theirs(v), v
    custom = sqlite_dialect.DATETIME(storage_format="%(year)04d%(month)02d%(day)02d")
    proc = custom.bind_processor(dialect)
    assert _fast_bind(dialect, custom, proc) is proc


async def test_plans_take_parameters_in_order_with_defaults_and_processors(tmp_path: Path) -> None:
    """A plan's rows are bound in the statement's order whichever order the
    dicts give them in; a set leaning on a default takes the slow path."""
    engine = await _engine(tmp_path)
    at = datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC)
    seed = Prepared(consumer_offsets.insert().values(group_id=bindparam("g"), topic=bindparam("t"),
                                                      next_offset=bindparam("n", 7), updated_at=bindparam("at")))
    try:
        async with write_transaction(engine) as conn:
            await execute_prepared(conn, seed, [{"at": at, "t": "a", "g": "g1", "n": 1},
                                                {"g": "g2", "t": "a", "at": at}])
            await conn.execute(consumer_offsets.insert(), [{"updated_at": at, "topic": "b", "group_id": "g3",
                                                           "next_offset": 3}])
        async with snapshot(engine) as conn:
            rows = (await conn.execute(select(consumer_offsets).order_by(consumer_offsets.c.group_id))).all()
        assert [(r.group_id, r.topic, r.next_offset) for r in rows] == [("g1", "a", 1), ("g2", "a", 7), ("g3", "b", 3)]
        assert {r.updated_at.replace(tzinfo=UTC) for r in rows} == {at}
    finally:
        close_inline(engine)
        await engine.dispose()


async def test_a_snapshots_prepared_reads_see_one_moment(tmp_path: Path) -> None:
    """A consistent snapshot (the dispatcher's) is begun when taken, so its
    prepared statements, run on the driver, read one moment: what is
    committed between two of its reads is not seen."""
    engine = await _engine(tmp_path)
    try:
        await _publish(engine, 3)
        async with snapshot(engine, consistent=True) as conn:
            first = (await execute_prepared(conn, COUNT, {"topic": "t"})).scalar()
            await _publish(engine, 3, first=3)  # committed meanwhile, by the writer
            again = (await execute_prepared(conn, COUNT, {"topic": "t"})).scalar()
            assert again == first
        async with snapshot(engine) as conn:
            assert (await execute_prepared(conn, COUNT, {"topic": "t"})).scalar() == 2 * first
    finally:
        close_inline(engine)
        await engine.dispose()


def test_rows_bound_a_column_at_a_time_are_the_values_through_each_processor() -> None:
    """hub/store/db.py `_bind_rows`: a column of plain dates or datetimes is
    formatted in C, a mixed one value by value; either way each value is what
    its processor (and SQLAlchemy's own) gives it, row by row, in order. A
    row bound alone (`_bind_one`: a transaction of one change) is the same."""
    from datetime import date, timedelta, timezone
    from operator import itemgetter

    from sqlalchemy import Date, DateTime, JSON
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    import orjson

    from hub.store.db import _bind_one, _bind_rows, _fast_bind, _json_dumps

    dialect = sqlite_dialect.dialect(json_serializer=_json_dumps)  # as the hub's engines have it
    when = DateTime(timezone=True)
    when_theirs = when.dialect_impl(dialect).bind_processor(dialect)
    day_theirs = Date().dialect_impl(dialect).bind_processor(dialect)
    doc_theirs = JSON().dialect_impl(dialect).bind_processor(dialect)
    doc = _fast_bind(dialect, JSON(), doc_theirs)
    procs = (_fast_bind(dialect, when, when_theirs), _fast_bind(dialect, Date(), day_theirs))
    assert all(hasattr(p, "column") for p in (*procs, doc))

    class Later(datetime):
        pass

    plus_one = timezone(timedelta(hours=1))
    aware = [datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=UTC), datetime(2026, 3, 29, 1, 0, tzinfo=plus_one),
             datetime(5, 1, 2, 3, 4, 5, 6, tzinfo=UTC), datetime(2026, 12, 1, 9, 30, 15)]
    days = [date(2026, 12, 1), date(7, 1, 2), date(2024, 2, 29), date(1999, 12, 31)]
    columns_of_when = [aware, [*aware[:3], None], [aware[0], Later(2026, 1, 1, 0, 0, 0, 7), aware[1], aware[2]],
                       [aware[0]] * 4]
    columns_of_days = [days, [None, *days[1:]], [days[0], datetime(2026, 12, 1, 23, 59, tzinfo=UTC), *days[2:]],
                       [days[2]] * 4]
    for whens in columns_of_when:
        for ds in columns_of_days:
            rows = [{"w": w, "d": d, "j": {"n": n}, "t": f"x{n}"} for n, (w, d) in enumerate(zip(whens, ds))]
            got = _bind_rows(itemgetter("t", "w", "d", "j"), ((1, procs[0]), (2, procs[1]), (3, doc)), rows)
            want = [(r["t"], when_theirs(r["w"]), day_theirs(r["d"]), doc_theirs(r["j"])) for r in rows]
            assert [tuple(g) for g in got] == want
            get = itemgetter("t", "w", "d", "j")
            assert [_bind_one(get, ((1, procs[0]), (2, procs[1]), (3, doc)), r) for r in rows] == want
    # JSON documents of every kind a column takes, and the values SQLAlchemy itself treats apart (None, NULL)
    documents = [{"a": [1, 2.5, None, True], 3: "k"}, [1, "x"], orjson.Fragment(b'{"f":1}'), "text", 7, 1.5, False]
    from enum import StrEnum

    class Key(StrEnum):
        K = "k"

    # string keys only (written without OPT_NON_STR_KEYS), and a key orjson takes only with it (a str subclass)
    only_str_keys = [{"a": [1, {"b": None}]}, {"c": orjson.Fragment(b"[1]")}, [{"d": 2}]]
    for column in (documents, [*documents, None], [*documents, JSON.NULL], [documents[0]] * 3, only_str_keys,
                   [*only_str_keys, {Key.K: 1}], [{1: 2}, {"a": 1}]):
        got = _bind_rows(lambda r: (r["j"],), ((0, doc),), [{"j": v} for v in column])
        assert [g[0] for g in got] == [doc_theirs(v) for v in column]
        assert [doc(v) for v in column] == [doc_theirs(v) for v in column]
        assert [_bind_one(lambda r: (r["j"],), ((0, doc),), {"j": v}) for v in column] == \
            [(doc_theirs(v),) for v in column]
    assert _bind_rows(itemgetter("t", "w"), ((1, procs[0]),), []) == []
    assert _bind_one(itemgetter("t", "w"), (), {"t": "x", "w": None}) == ("x", None)


def test_a_column_of_datetimes_binds_as_sqlalchemy_binds_each() -> None:
    """SQLite's DATETIME as SQLAlchemy writes it, for any datetime (any offset,
    naive, any year), one at a time and a column at once (`_bind_rows`)."""
    from datetime import timedelta, timezone

    from hypothesis import given, settings, strategies as st
    from sqlalchemy import DateTime
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from hub.store.db import _fast_bind

    dialect = sqlite_dialect.dialect()
    theirs = DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    ours = _fast_bind(dialect, DateTime(timezone=True), theirs)
    offsets = st.one_of(st.none(), st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))))

    @settings(max_examples=500)
    @given(st.lists(st.datetimes(timezones=offsets), min_size=1, max_size=6))
    def check(values: list[datetime]) -> None:
        assert [ours(v) for v in values] == [theirs(v) for v in values]
        assert ours.column(tuple(values)) == [theirs(v) for v in values]

    check()


async def test_a_consistent_snapshot_is_begun_on_the_driver_and_its_sqlalchemy_reads_share_its_moment(
        tmp_path: Path) -> None:
    """The consistent snapshot's BEGIN is issued on the driver (as the inline
    writer's BEGIN IMMEDIATE), not through SQLAlchemy's `exec_driver_sql` from
    the begin event: a statement through SQLAlchemy inside it begins nothing
    again and reads the same moment as the driver's; the connection, put
    back, gives the next snapshot a new moment."""
    from sqlalchemy import event, func

    from hub.store.db import _SNAPSHOTS

    engine = await _engine(tmp_path)
    try:
        await _publish(engine, 3)
        async with snapshot(engine) as conn:  # the engine's inline readers made
            pass
        through_sqlalchemy: list[str] = []
        event.listen(_SNAPSHOTS[engine]._engine, "before_cursor_execute",
                     lambda *a: through_sqlalchemy.append(a[2]))
        count = select(func.count()).select_from(bus_messages).where(bus_messages.c.topic == "t")
        async with snapshot(engine, consistent=True) as conn:
            first = (await execute_prepared(conn, COUNT, {"topic": "t"})).scalar()
            await _publish(engine, 3, first=3)  # committed meanwhile, by the writer
            assert (await conn.execute(count)).scalar() == first
            assert (await execute_prepared(conn, COUNT, {"topic": "t"})).scalar() == first
        assert not any(s.strip().upper().startswith("BEGIN") for s in through_sqlalchemy)
        async with snapshot(engine, consistent=True) as conn:
            assert (await conn.execute(count)).scalar() == 2 * first
    finally:
        close_inline(engine)
        await engine.dispose()
