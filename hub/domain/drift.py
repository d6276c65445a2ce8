"""Drift alerts: a body whose own s117 list has drifted from the hub's
register past the threshold its data-sharing agreement sets is sent one
`s117-reconciliation-drift` event for that crossing.

Standard library only.

The threshold (an agreement's `recipients[].reconciliation`, read by
hub/sharing.py):

- `drift_alert_open_items: N`: reached when the body's open differences
  (items open or explained, hub/domain/reconciliation.py LIVE) number N or more;
- `drift_alert_percent: P`: reached when they are P% or more of the people on
  the body's list (the rows accepted from its last snapshot); an empty list
  reaches it with any open difference.

Either reached is the threshold reached; neither set means no alerts.

A crossing is alerted once: after an alert the body is "above" until its
open differences fall back below the threshold (a later snapshot, items fixed
by register changes, items accepted); only then can the next crossing alert
again. Alerts are decided when a snapshot's comparison completes; falling
below is noticed then and whenever items close.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum

OPEN_ITEMS = "drift_alert_open_items"
PERCENT = "drift_alert_percent"
KEYS = frozenset({OPEN_ITEMS, PERCENT})


@dataclass(frozen=True, slots=True)
class DriftThreshold:
    open_items: int | None = None
    percent_of_list: Decimal | None = None

    def __post_init__(self) -> None:
        n = self.open_items
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"{OPEN_ITEMS}: must be a whole number of open differences, at least 1")
        p = self.percent_of_list
        if p is not None and (not isinstance(p, Decimal) or not p.is_finite() or not Decimal(0) < p <= 100):
            raise ValueError(f"{PERCENT}: must be a percentage above 0 and at most 100")
        if n is None and p is None:
            raise ValueError(f"{OPEN_ITEMS}: is required when {PERCENT} is not set")

    @classmethod
    def from_mapping(cls, raw: object) -> DriftThreshold:
        """From an agreement's `reconciliation` mapping; ValueError names the
        field within it ("drift_alert_percent: ...")."""
        if not isinstance(raw, dict):
            raise ValueError(f"{OPEN_ITEMS}: the reconciliation setting must be a mapping of {sorted(KEYS)}")
        unknown = sorted(map(str, set(raw) - KEYS))
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown setting (known: {sorted(KEYS)})")
        percent = raw.get(PERCENT)
        if percent is not None:
            if isinstance(percent, bool) or not isinstance(percent, (int, float, str)):
                raise ValueError(f"{PERCENT}: must be a percentage above 0 and at most 100")
            try:
                percent = Decimal(str(percent))
            except InvalidOperation as exc:
                raise ValueError(f"{PERCENT}: must be a percentage above 0 and at most 100") from exc
        return cls(open_items=raw.get(OPEN_ITEMS), percent_of_list=percent)

    def reached(self, open_total: int, listed: int) -> bool:
        if self.open_items is not None and open_total >= self.open_items:
            return True
        if self.percent_of_list is not None and open_total > 0:
            return open_total * 100 >= self.percent_of_list * max(listed, 0)
        return False

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.open_items is not None:
            out[OPEN_ITEMS] = self.open_items
        if self.percent_of_list is not None:
            out[PERCENT] = float(self.percent_of_list)
        return out


def strictest(thresholds: Iterable[DriftThreshold | None]) -> DriftThreshold | None:
    """Several agreements in force for one body may each set a threshold: the
    lowest of each measure applies (the body hears as soon as any asks it to)."""
    found = [t for t in thresholds if t is not None]
    if not found:
        return None
    items = [t.open_items for t in found if t.open_items is not None]
    percents = [t.percent_of_list for t in found if t.percent_of_list is not None]
    return DriftThreshold(open_items=min(items) if items else None,
                          percent_of_list=min(percents) if percents else None)


class Step(StrEnum):
    ALERT = "alert"  # crossed now: send one event, the body is above from here
    HOLD = "hold"  # still above after the alert already sent for this crossing
    REARM = "rearm"  # fell back below: the next crossing alerts again
    NONE = "none"  # below, and was below


def step(threshold: DriftThreshold | None, open_total: int, listed: int, above: bool,
         snapshot_completed: bool) -> Step:
    """What to do for one body now. `above`: an alert was sent for the
    crossing in force. Only a completed snapshot comparison may alert; items
    closing (`snapshot_completed=False`) can only re-arm."""
    reached = threshold is not None and threshold.reached(open_total, listed)
    if reached:
        if above:
            return Step.HOLD
        return Step.ALERT if snapshot_completed else Step.NONE
    return Step.REARM if above else Step.NONE
