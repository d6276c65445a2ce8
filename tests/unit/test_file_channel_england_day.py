"""The file channel's day files go by England's day (hub/delivery/file_export.py): a council collecting
"yesterday's file" at 00:30 finds every line of that day in it, in summer as in winter; retention
purges a day file only once every line in it is older than the cut-off."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from hub.delivery.file_export import export_path
from hub.retention import Purger, RetentionPolicy


def test_a_line_written_after_midnight_in_summer_goes_into_that_days_file(tmp_path: Path) -> None:
    # 23:30 UTC on 1 July is 00:30 BST on 2 July: a council's 00:30 job has already taken 1 July's file.
    assert export_path(tmp_path, "E06000060", datetime(2026, 7, 1, 23, 30, tzinfo=UTC)).name == "2026-07-02.ndjson"
    assert export_path(tmp_path, "E06000060", datetime(2026, 7, 1, 22, 59, tzinfo=UTC)).name == "2026-07-01.ndjson"
    # In winter England's day is UTC's.
    assert export_path(tmp_path, "E06000060", datetime(2026, 12, 1, 23, 30, tzinfo=UTC)).name == "2026-12-01.ndjson"
    # The evening before the clocks go back (25 October 2026, 01:00 UTC): 23:30 UTC on 24 October is 00:30 BST.
    assert export_path(tmp_path, "E06000060", datetime(2026, 10, 24, 23, 30, tzinfo=UTC)).name == "2026-10-25.ndjson"


async def test_retention_purges_a_day_file_by_englands_day(app_hub, tmp_path: Path) -> None:  # noqa: ANN001
    org = tmp_path / "E06000060"
    org.mkdir(mode=0o700)
    for day in ("2026-06-30", "2026-07-01", "2026-07-02"):
        (org / f"{day}.ndjson").write_text("{}\n")
    purger = Purger(app_hub.hub.engine, app_hub.hub.audit, RetentionPolicy(30, 0, 0, 0), export_dir=tmp_path)
    # Thirty days before 23:30 UTC on 31 July is 23:30 UTC on 1 July, 00:30 BST on 2 July: every line of
    # 1 July's file was written by 23:00 UTC on 1 July, older than that; 2 July's lines need not be.
    done = await purger.run_once(now=datetime(2026, 7, 31, 23, 30, tzinfo=UTC))
    assert done["file_channel_files"] == 2
    assert sorted(p.name for p in org.iterdir()) == ["2026-07-02.ndjson"]
