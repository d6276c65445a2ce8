"""Drift alert thresholds and crossings (hub/domain/drift.py), table-driven."""

from __future__ import annotations

from decimal import Decimal

import pytest

from hub.domain.drift import DriftThreshold, Step, step, strictest

ITEMS_10 = DriftThreshold(open_items=10)
PCT_5 = DriftThreshold(percent_of_list=Decimal("5"))
BOTH = DriftThreshold(open_items=10, percent_of_list=Decimal("5"))


@pytest.mark.parametrize(("threshold", "open_total", "listed", "reached"), [
    (ITEMS_10, 9, 1000, False),
    (ITEMS_10, 10, 1000, True),  # reaching the number is crossing it
    (ITEMS_10, 11, 0, True),
    (PCT_5, 4, 100, False),
    (PCT_5, 5, 100, True),  # 5% of 100
    (PCT_5, 5, 101, False),  # 4.95%
    (PCT_5, 1, 0, True),  # an empty list: any open difference
    (PCT_5, 0, 0, False),  # nothing open is never drift
    (DriftThreshold(percent_of_list=Decimal("12.5")), 1, 8, True),
    (DriftThreshold(percent_of_list=Decimal("12.5")), 1, 9, False),
    (BOTH, 6, 100, True),  # the percentage reached first
    (BOTH, 10, 1000, True),  # the number reached first
    (BOTH, 9, 1000, False),
])
def test_threshold_reached(threshold: DriftThreshold, open_total: int, listed: int, reached: bool) -> None:
    assert threshold.reached(open_total, listed) is reached


@pytest.mark.parametrize(("threshold", "open_total", "above", "completed", "expected"), [
    # a snapshot's comparison completes
    (ITEMS_10, 12, False, True, Step.ALERT),  # crossed: alert
    (ITEMS_10, 15, True, True, Step.HOLD),  # same crossing, more drift: no second alert
    (ITEMS_10, 10, True, True, Step.HOLD),
    (ITEMS_10, 9, True, True, Step.REARM),  # fell back below: the next crossing alerts again
    (ITEMS_10, 9, False, True, Step.NONE),
    (None, 500, False, True, Step.NONE),  # no threshold in the agreement: no alert
    (None, 500, True, True, Step.REARM),  # the threshold was taken out: re-armed, never alerted
    # items closing through the ItemWatcher (or accepted): never alerts, only re-arms
    (ITEMS_10, 12, False, False, Step.NONE),
    (ITEMS_10, 12, True, False, Step.HOLD),
    (ITEMS_10, 3, True, False, Step.REARM),
])
def test_step(threshold: DriftThreshold | None, open_total: int, above: bool, completed: bool,
              expected: Step) -> None:
    assert step(threshold, open_total, 1000, above, snapshot_completed=completed) is expected


def test_a_sequence_of_nights_alerts_once_per_crossing() -> None:
    above = False
    sent = []
    for night, open_total in enumerate([3, 11, 14, 12, 6, 2, 10, 30]):
        decided = step(ITEMS_10, open_total, 1000, above, snapshot_completed=True)
        if decided is Step.ALERT:
            sent.append(night)
        above = decided in (Step.ALERT, Step.HOLD)
    assert sent == [1, 6]


@pytest.mark.parametrize(("raw", "message"), [
    ({"drift_alert_open_items": 0}, "drift_alert_open_items: must be a whole number"),
    ({"drift_alert_open_items": -3}, "drift_alert_open_items: must be a whole number"),
    ({"drift_alert_open_items": 2.5}, "drift_alert_open_items: must be a whole number"),
    ({"drift_alert_open_items": True}, "drift_alert_open_items: must be a whole number"),
    ({"drift_alert_open_items": "ten"}, "drift_alert_open_items: must be a whole number"),
    ({"drift_alert_percent": 0}, "drift_alert_percent: must be a percentage"),
    ({"drift_alert_percent": 101}, "drift_alert_percent: must be a percentage"),
    ({"drift_alert_percent": "lots"}, "drift_alert_percent: must be a percentage"),
    ({"drift_alert_percent": "NaN"}, "drift_alert_percent: must be a percentage"),
    ({"drift_alert_percent": [5]}, "drift_alert_percent: must be a percentage"),
    ({}, "drift_alert_open_items: is required when drift_alert_percent is not set"),
    ({"drift_alert_items": 5}, "drift_alert_items: unknown setting"),
])
def test_a_bad_setting_names_the_field(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DriftThreshold.from_mapping(raw)


def test_good_settings_and_the_strictest_of_several() -> None:
    assert DriftThreshold.from_mapping({"drift_alert_open_items": 25}) == DriftThreshold(open_items=25)
    assert DriftThreshold.from_mapping({"drift_alert_percent": 2.5}).percent_of_list == Decimal("2.5")
    assert strictest([None, None]) is None
    assert strictest([ITEMS_10, DriftThreshold(open_items=4, percent_of_list=Decimal(8)), PCT_5, None]) == (
        DriftThreshold(open_items=4, percent_of_list=Decimal(5)))
