"""Transfer cases an earlier version stored without their hand-over's date,
on SQLite and PostgreSQL (tests/unit/test_transfer_undated.py): dated on first
use from the event that opened it (the log's, else derived again from the
history as it stood when its change was recorded; found by the case's own id
when the case names no change), under the case's lock; late history that moves
the hand-over supersedes it (one open case, both bodies told once), late
history that keeps it leaves it open."""

from __future__ import annotations

import pytest

from tests.unit.test_transfer_undated import (
    AGES,
    check_dated_where_the_hand_over_happens,
    check_undated_case_superseded,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("age", AGES)
async def test_an_undated_case_late_history_moves_is_dated_and_superseded(store_hub, age):  # noqa: ANN001
    await check_undated_case_superseded(store_hub, age)


@pytest.mark.parametrize("age", ["log", "oldest"])
async def test_an_undated_case_is_dated_where_its_hand_over_happens(store_hub, age):  # noqa: ANN001
    await check_dated_where_the_hand_over_happens(store_hub, age)
