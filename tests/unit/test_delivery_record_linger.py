"""A task whose batch emptied its queue records the outcomes, with its next
claim, in a ledger transaction that waits for company (`record_linger_seconds`):
the next wake-up's. At one client a burst of deliveries then costs one write
transaction, not two (bench/README.md, "Nineteenth session"). The deliveries
are still sent once each, in order; `delivered_at` is when the subscriber
took them, not when the outcome was recorded; a stop records at once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

from cryptography.fernet import Fernet
from sqlalchemy import select

from hub.crypto import DataProtector
from hub.delivery.ledger import ledger_for
from hub.delivery.queue import create_counter, delivery_row, insert_deliveries
from hub.delivery.webhook import EVENT_NUMBER_HEADER, WebhookDeliverer
from hub.store.db import close_inline, create_engine, create_schema, read_only, write_transaction
from hub.store.schema import deliveries, subscriptions


class _Client:
    """Answers every POST 204 at once, noting when."""

    def __init__(self) -> None:
        self.numbers: list[int] = []
        self.at: list[datetime] = []

    async def post(self, url: str, *, content: bytes, headers: dict[str, str]) -> SimpleNamespace:
        self.numbers.append(int(headers[EVENT_NUMBER_HEADER]))
        self.at.append(datetime.now(UTC))
        return SimpleNamespace(status_code=204)


async def _queue(engine, protector: DataProtector, sid: str, numbers: range) -> None:  # noqa: ANN001
    now = datetime.now(UTC)
    rows = [delivery_row(subscription_id=sid, event_id=str(uuid.uuid4()), message_id=str(uuid.uuid4()),
                         event_type="s117-entitlement-started", payload=protector.encrypt(b"{}"),
                         correlation_id="c", event_number=n, now=now) for n in numbers]
    async with write_transaction(engine) as conn:
        await insert_deliveries(conn, rows)


async def _until(predicate, seconds: float = 5.0) -> None:  # noqa: ANN001
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_a_burst_costs_one_transaction_its_outcomes_recorded_with_the_next_bursts_claim(tmp_path) -> None:  # noqa: ANN001
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    try:
        await create_schema(engine)
        protector = DataProtector(Fernet.generate_key())
        sid = str(uuid.uuid4())
        async with engine.begin() as conn:
            await conn.execute(subscriptions.insert().values(
                subscription_id=sid, org_code="E06000060", client_id="t", channel="webhook",
                url="http://127.0.0.1:9/hook", secret=protector.encrypt(b"s" * 32), active=True,
                created_at=datetime.now(UTC)))
            await create_counter(conn, sid)
        client = _Client()
        deliverer = WebhookDeliverer(engine, protector, client, timeout_seconds=2.0)
        deliverer.record_linger_seconds = 5.0  # longer than the test: only a wake-up or the stop ends it
        ledger = ledger_for(engine)
        stop = asyncio.Event()
        served = asyncio.create_task(deliverer.serve(5.0, stop))  # no timed poll within the test
        await asyncio.sleep(0.05)
        before = ledger.transactions
        await _queue(engine, protector, sid, range(1, 4))
        deliverer.wake()
        await _until(lambda: len(client.numbers) == 3)
        await asyncio.sleep(0.2)
        assert ledger.transactions - before == 1  # the claim; the outcomes wait for company
        async with read_only(engine) as conn:
            statuses = list((await conn.execute(select(deliveries.c.status))).scalars())
        assert statuses == ["pending"] * 3  # taken, not yet recorded (sent again after a crash: at least once)

        await _queue(engine, protector, sid, range(4, 7))
        deliverer.wake()  # the lingering outcomes are recorded now, and their claim finds the new three
        await _until(lambda: len(client.numbers) == 6)
        await asyncio.sleep(0.2)
        assert ledger.transactions - before == 2
        stop.set()  # the last outcomes are recorded at once, not after the linger
        await asyncio.wait_for(served, 2.0)
        assert ledger.transactions - before == 3
        assert client.numbers == [1, 2, 3, 4, 5, 6]  # once each, in order
        async with read_only(engine) as conn:
            rows = (await conn.execute(select(deliveries.c.status, deliveries.c.delivered_at)
                                       .order_by(deliveries.c.delivery_seq))).all()
        assert [r.status for r in rows] == ["delivered"] * 6
        # When the subscriber took each batch, not when the outcome was recorded (a wake-up later).
        for r, sent in zip(rows, client.at, strict=True):
            taken = r.delivered_at if r.delivered_at.tzinfo else r.delivered_at.replace(tzinfo=UTC)
            assert abs((taken - sent).total_seconds()) < 0.15
    finally:
        close_inline(engine)
        await engine.dispose()
