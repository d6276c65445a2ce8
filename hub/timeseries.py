"""The hub's own small time series for the console's charts: every minute
(`S117_SAMPLE_SECONDS`) a sampler counts what happened since the last sample
straight from the store (ingest per channel, quarantined, deliveries per
channel, dead letters), the delivery latency p50/p99 of what was delivered,
and the dispatcher's consumer lag; `series` buckets them for the last hour,
day or week. Kept 8 days. Prometheus scrapes /metrics for anything longer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub import periodic
from hub.bus.port import EVENTS_TOPIC, Subscriber
from hub.observability import metrics
from hub.observability.logging import get_logger
from hub.store.schema import dead_letters, deliveries, metric_samples, quarantine, register_changes, subscriptions

log = get_logger("hub.timeseries")
KEEP = timedelta(days=8)
WINDOWS = {"hour": (timedelta(hours=1), timedelta(minutes=1)), "day": (timedelta(days=1), timedelta(minutes=15)),
           "week": (timedelta(days=7), timedelta(hours=1))}
SUMMED = {"ingest", "quarantined", "delivered", "dead_letters"}


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


class Sampler:
    def __init__(self, engine: AsyncEngine, bus: Subscriber, dispatcher_group: str = "dispatcher") -> None:
        self._engine = engine
        self._bus = bus
        self._group = dispatcher_group
        self._last: datetime | None = None
        self._failing_labels: set[tuple[str, str]] = set()

    async def sample(self, now: datetime | None = None) -> list[dict[str, Any]]:
        now = now or datetime.now(UTC)
        minute = now.replace(second=0, microsecond=0)  # counts since the last sample go in this minute's row
        since = self._last or minute - timedelta(minutes=1)
        rows: list[dict[str, Any]] = []

        def add(name: str, label: str, value: float) -> None:
            rows.append({"at": minute, "name": name, "label": label or "-", "value": float(value)})

        try:  # read before the write transaction: the SQL log reads on its own connection
            add("lag", "", await self._bus.lag(self._group, EVENTS_TOPIC))
        except Exception as exc:  # noqa: BLE001 - a lag we cannot read is a gap in the chart, not a failure
            log.warning("lag sample failed", exc_type=type(exc).__name__)
        async with self._engine.begin() as conn:
            for channel, n in (await conn.execute(
                    select(register_changes.c.channel, func.count()).where(
                        register_changes.c.received_at > since, register_changes.c.received_at <= now)
                    .group_by(register_changes.c.channel))).all():
                add("ingest", channel or "rest", n)
            add("quarantined", "", (await conn.execute(select(func.count()).select_from(quarantine).where(
                quarantine.c.received_at > since, quarantine.c.received_at <= now))).scalar_one())
            latencies: list[float] = []
            per_channel: dict[str, int] = {}
            for channel, created, delivered in (await conn.execute(
                    select(subscriptions.c.channel, deliveries.c.created_at, deliveries.c.delivered_at)
                    .join(subscriptions, subscriptions.c.subscription_id == deliveries.c.subscription_id)
                    .where(deliveries.c.delivered_at > since, deliveries.c.delivered_at <= now))).all():
                per_channel[channel] = per_channel.get(channel, 0) + 1
                latencies.append((delivered - created).total_seconds() * 1000)
            for channel, n in per_channel.items():
                add("delivered", channel, n)
            if latencies:
                add("latency_p50_ms", "", _pct(latencies, 50))
                add("latency_p99_ms", "", _pct(latencies, 99))
            add("dead_letters", "", (await conn.execute(select(func.count()).select_from(dead_letters).where(
                dead_letters.c.at > since, dead_letters.c.at <= now))).scalar_one())
            failing: dict[tuple[str, str], float] = {}
            for org, channel, oldest in (await conn.execute(
                    select(subscriptions.c.org_code, subscriptions.c.channel, func.min(deliveries.c.created_at))
                    .join(deliveries, deliveries.c.subscription_id == subscriptions.c.subscription_id)
                    # A suspended subscription (410 Gone) is not retried: its own gauge and alert say so.
                    .where(deliveries.c.status == "pending", deliveries.c.attempts > 0,
                           subscriptions.c.active.is_(True), subscriptions.c.suspended_at.is_(None))
                    .group_by(subscriptions.c.org_code, subscriptions.c.channel))).all():
                oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
                failing[(org, channel)] = max(0.0, (now - oldest).total_seconds())
            for key in self._failing_labels - failing.keys():
                metrics.SUBSCRIPTION_FAILING.labels(org_code=key[0], channel=key[1]).set(0)
            for (org, channel), secs in failing.items():
                metrics.SUBSCRIPTION_FAILING.labels(org_code=org, channel=channel).set(secs)
            self._failing_labels = set(failing)
            held = {(r.name, r.label): r.value for r in (await conn.execute(
                select(metric_samples.c.name, metric_samples.c.label, metric_samples.c.value)
                .where(metric_samples.c.at == minute))).all()}
            for r in rows:  # several samples in one minute: counts add up, gauges keep the worst
                old = held.get((r["name"], r["label"]))
                if old is not None:
                    r["value"] = r["value"] + old if r["name"] in SUMMED else max(r["value"], old)
            merged = {(r["name"], r["label"]) for r in rows}
            rows += [{"at": minute, "name": n, "label": lb, "value": v} for (n, lb), v in held.items()
                     if (n, lb) not in merged]
            await conn.execute(delete(metric_samples).where(metric_samples.c.at == minute))
            await conn.execute(metric_samples.insert(), rows)
            await conn.execute(delete(metric_samples).where(metric_samples.c.at < minute - KEEP))
        self._last = now
        return rows


async def series(engine: AsyncEngine, window: str, now: datetime | None = None) -> dict[str, Any]:
    span, step = WINDOWS[window]
    now = now or datetime.now(UTC)
    start = now - span
    async with engine.connect() as conn:
        rows = (await conn.execute(select(metric_samples).where(metric_samples.c.at > start)
                                   .order_by(metric_samples.c.at))).all()
        await conn.rollback()
    n = int(span / step)
    buckets = [start + step * (i + 1) for i in range(n)]
    out: dict[str, dict[str, list[float | None]]] = {}
    for r in rows:
        at = r.at if r.at.tzinfo else r.at.replace(tzinfo=UTC)
        i = min(n - 1, int((at - start) / step))
        s = out.setdefault(r.name, {}).setdefault(r.label, [None] * n)
        if r.name in SUMMED:
            s[i] = (s[i] or 0) + r.value
        else:  # lag and latency: the worst in the bucket
            s[i] = r.value if s[i] is None else max(s[i], r.value)
    return {"window": window, "step_seconds": int(step.total_seconds()),
            "buckets": [b.isoformat() for b in buckets], "series": out}


async def run_sampler(sampler: Sampler, every: float, stop: asyncio.Event) -> None:
    await periodic.every(every, stop, sampler.sample, log=log, failed="sample failed", level="warning")
