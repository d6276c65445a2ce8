"""Production mode (PostgreSQL + Kafka) when its servers fail, with a real hub process over real HTTP
and MLLP. The module starts a PostgreSQL server and a Kafka broker of its own (tests/servers/), so it
can stop and start them without disturbing the session's.

- PostgreSQL stopped while changes are posted, then started again: every write meanwhile is answered at
  once with a `503` problem `store-unavailable` with `Retry-After` (MLLP: `AE` naming it), never a bare
  `500`, never a hang, never a dropped connection; the hub recovers by itself, and every accepted change
  reaches the council once, in order per person.
- The Kafka broker stopped and started again: ingest goes on (the relay is behind the store), the relay
  catches up once the broker is back, nothing lost.
- PostgreSQL hung (SIGSTOP: connections open, nothing answers): each write 503 within the store's
  bounded waits, MLLP AE; PostgreSQL taking no more connections (53300): 503 naming it.
- The hub started while Kafka is down: it starts and takes changes; the relay and consumers start once
  the broker answers."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import SECRET, make_clients, subscribe_webhook
from tests.e2e.test_mllp import Engine, fixture, msa
from tests.servers import unavailable
from tests.servers.kafka import BrokerUnavailable, KafkaBroker, fetch_jars
from tests.servers.postgres import PostgresServer, ServerUnavailable, create_database, drop_database, ensure_binaries
from tests.support import HubProcess, Receiver, detention, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def _own(make: Callable[[], Any], what: str, refused: type[Exception]) -> Iterator[Any]:
    """A server of this module's own, started (the test fails under CI, else skips, naming why it could
    not be), stopped after: the module's tests may stop and start it."""
    try:
        server = make()
        server.start()
    except (refused, OSError, subprocess.SubprocessError) as exc:
        unavailable(what, str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server this module may stop and start."""
    yield from _own(lambda: PostgresServer(ensure_binaries()), "PostgreSQL test server", ServerUnavailable)


@pytest.fixture(scope="module")
def own_kafka() -> Iterator[KafkaBroker]:
    """A Kafka broker this module may stop and start."""
    yield from _own(lambda: KafkaBroker(fetch_jars()), "Kafka test broker", BrokerUnavailable)


@pytest.fixture
async def database(own_postgres: PostgresServer) -> AsyncIterator[str]:
    admin = own_postgres.url().render_as_string(hide_password=False)
    url = await create_database(admin)
    try:
        yield url
    finally:
        if own_postgres._proc is None or own_postgres._proc.poll() is not None:
            own_postgres.resume()
        await asyncio.shield(drop_database(admin, url))


def nhs_numbers(count: int, block: int) -> list[str]:
    """`count` valid NHS numbers of the 999 test range, distinct for each `block`."""
    found = []
    for i in range(block * 10_000, (block + 1) * 10_000):
        body = f"999{i:06d}"
        check = 11 - sum(int(d) * (10 - k) for k, d in enumerate(body)) % 11
        if check == 11:
            check = 0
        if check != 10:
            found.append(f"{body}{check}")
            if len(found) == count:
                return found
    raise AssertionError("not enough numbers")


@dataclass
class Answers:
    """What a client saw, request by request."""

    accepted: dict[str, list[str]] = field(default_factory=dict)  # person -> change ids, in order
    events: list[dict] = field(default_factory=list)
    refused: list[tuple[int, str, str | None, float]] = field(default_factory=list)  # status, type, Retry-After, s
    failures: list[str] = field(default_factory=list)  # transport errors, bare 500s
    slowest: float = 0.0


async def post_until_accepted(http: httpx.AsyncClient, key: str, nhs: str, run: str, answers: Answers,
                              stop_by: float) -> None:
    """One person's changes in order, each sent again (after a short pause) until it is accepted."""
    for change in detention(nhs, run):
        while True:
            assert time.monotonic() < stop_by, f"not accepted in time: {answers.refused[-3:]}"
            started = time.monotonic()
            try:
                r = await http.post("/v1/register-changes", headers={"X-API-Key": key}, json=change)
            except httpx.TransportError as exc:
                answers.failures.append(f"{type(exc).__name__} after {time.monotonic() - started:.1f}s")
                await asyncio.sleep(0.3)
                continue
            took = time.monotonic() - started
            answers.slowest = max(answers.slowest, took)
            if r.status_code == 202:
                answers.accepted.setdefault(nhs, []).append(r.json()["change_id"])
                answers.events.extend(r.json()["events"])
                break
            if r.status_code == 503:
                answers.refused.append((r.status_code, r.json().get("type", ""), r.headers.get("retry-after"), took))
            else:
                answers.failures.append(f"{r.status_code} {r.text[:200]}")
                assert r.status_code >= 500, r.text
            await asyncio.sleep(0.3)


def entitlements(events: list[dict]) -> set[str]:
    return {e["event_id"] for e in events if e["event_type"] == "s117-entitlement-started"}


async def delivered_to_council(http: httpx.AsyncClient, key: str, sub: str, receiver: Receiver, hub: HubProcess,
                               events: list[dict], timeout: float = 60) -> list[dict]:
    """The council's delivery log once it holds every entitlement among `events` (each person's last
    change's) and every message queued for the council has arrived."""
    deadline = time.monotonic() + timeout
    while True:
        log = (await http.get(f"/v1/subscriptions/{sub}/deliveries?limit=1000",
                              headers={"X-API-Key": key})).json()["items"]
        if entitlements(events) <= {d["event_id"] for d in log} and all(d["status"] == "delivered" for d in log) \
                and set(receiver.event_ids()) >= {d["event_id"] for d in log}:
            return log
        assert time.monotonic() < deadline, (f"delivered {sum(d['status'] == 'delivered' for d in log)} of "
                                             f"{len(log)}; hub log tail: {hub.logs()[-1500:]}")
        await asyncio.sleep(0.3)


def check_arrivals(receiver: Receiver, log: list[dict], accepted_events: list[dict]) -> int:
    """Every message the log holds arrived; a message sent twice was the same message (delivery is
    at least once, README "What a receiver must do"); each person's arrived in the order the hub
    numbered them. Returns how many arrived twice."""
    numbers = {d["event_id"]: d["event_number"] for d in log}
    first: dict[str, bytes] = {}
    for r in receiver.received:
        assert r.signature_ok
        assert first.setdefault(r.headers["s117-event-id"], r.body) == r.body, "sent again, but changed"
    assert set(first) == set(numbers), "every message queued for the council arrived, and no other"
    assert entitlements(accepted_events) <= set(first)
    person_of = {}
    for event_id, body in first.items():
        bundle = orjson.loads(body)
        patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        person_of[event_id] = patient["identifier"][0]["value"]
    for person in set(person_of.values()):
        seq = [numbers[e] for e in first if person_of[e] == person]
        assert seq == sorted(seq), "one person's messages arrive in order"
    return len(receiver.received) - len(first)


async def test_postgres_stopped_and_started_again_under_load(own_postgres, own_kafka, database, tmp_path,
                                                             sharing_file):
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    mllp_port = free_port()
    hub = HubProcess(tmp_path, sharing_path=sharing_file, db_url=database, own_group=True,
                     bus_url=f"kafka://{own_kafka.bootstrap}", S117_KAFKA_PARTITIONS="3",
                     S117_MLLP_PORT=str(mllp_port))
    keys = await make_clients(hub.db_url)
    await hub.start(timeout=60)
    nhs, run = nhs_numbers(120, 71), uuid.uuid4().hex[:6]
    answers = Answers()
    acks: list[list[str]] = []
    ready: list[tuple[int, dict]] = []
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            sub = await subscribe_webhook(http, keys, receiver)
            for i in range(3):
                await post_until_accepted(http, keys["trust"], nhs[i], f"{run}-{i}", answers, time.monotonic() + 10)

            stop_by = time.monotonic() + 90

            async def trust_client(first: int) -> None:  # a trust's sender: each change until it is accepted
                async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as own:
                    for i in range(first, 60, 4):
                        await post_until_accepted(own, keys["trust"], nhs[i], f"{run}-{i}", answers, stop_by)
                        await asyncio.sleep(0.2)

            async def engine() -> None:  # an interface engine: one connection, each A01 until AA
                async with Engine(mllp_port) as e:
                    for i in range(100, 115):
                        while True:
                            acks.append(msa(await e.send(fixture("ADT_A01_s3_detained.hl7", nhs[i], f"{run}-M{i}"))))
                            if acks[-1][1] == "AA":
                                break
                            await asyncio.sleep(0.3)
                        await asyncio.sleep(0.5)

            load = [asyncio.create_task(trust_client(3 + k)) for k in range(4)] + [asyncio.create_task(engine())]
            await asyncio.sleep(1.5)
            own_postgres.halt()  # a fast shutdown: every session ended, new connections refused
            down_at = time.monotonic()
            # A key not yet seen by the hub (not cached) is looked up in the store: named too.
            r = await http.get("/v1/subscriptions", headers={"X-API-Key": keys["QU9"]})
            assert r.status_code == 503 and r.json()["type"].endswith("/store-unavailable"), r.text
            while time.monotonic() - down_at < 12:
                r = await http.get("/health/ready", timeout=10)
                ready.append((r.status_code, r.json()["checks"]))
                await asyncio.sleep(1)
            refused_while_down = len(answers.refused)
            own_postgres.resume()
            up_at = time.monotonic()
            await asyncio.gather(*load)
            recovered_in = time.monotonic() - up_at

            # During the outage: each write refused at once, named, with Retry-After; nothing else.
            assert answers.failures == [], answers.failures[:5]
            assert refused_while_down >= 10, "the outage was met"
            for status, kind, retry_after, took in answers.refused:
                assert (status, kind.rsplit("/", 1)[-1], retry_after) == (503, "store-unavailable", "30")
                assert took < 5
            failed_acks = [a for a in acks if a[1] != "AA"]
            assert failed_acks and all(a[1] == "AE" and "cannot be reached" in a[3] for a in failed_acks), failed_acks
            assert all(status == 503 and checks["store"] != "ok" for status, checks in ready[1:]), ready
            assert (await http.get("/health/ready")).status_code == 200

            # After: everything accepted, before and after, reaches the council, in order per person.
            assert sum(len(v) for v in answers.accepted.values()) == 2 * 60
            log = await delivered_to_council(http, keys["E06000060"], sub, receiver, hub, answers.events)
            assert len(log) >= 60 + 15  # and the A01s
            twice = check_arrivals(receiver, log, answers.events)
            for n in (nhs[0], nhs[59], nhs[114]):
                r = await http.post("/v1/persons/lookup", headers={"X-API-Key": keys["trust"]}, json={"nhs_number": n})
                assert r.status_code == 200, r.text
    finally:
        hub.stop()
        await receiver.stop()
    print(f"\npostgres down {up_at - down_at:.1f}s: {refused_while_down} REST writes refused (503), "
          f"{len(failed_acks)} AE; recovered {recovered_in:.1f}s after; {len(log)} messages delivered, {twice} twice")


def gauge(text: str, name: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, f"{name} not on /metrics"
    return values[0]


async def test_kafka_broker_stopped_and_started_again(own_postgres, own_kafka, database, tmp_path, sharing_file):
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing_file, db_url=database, own_group=True,
                     bus_url=f"kafka://{own_kafka.bootstrap}", S117_KAFKA_PARTITIONS="3")
    keys = await make_clients(hub.db_url)
    await hub.start(timeout=60)
    nhs, run = nhs_numbers(50, 72), uuid.uuid4().hex[:6]
    answers = Answers()
    ready: list[tuple[int, dict]] = []
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            sub = await subscribe_webhook(http, keys, receiver)
            for i in range(3):
                await post_until_accepted(http, keys["trust"], nhs[i], f"{run}-{i}", answers, time.monotonic() + 10)
            await receiver.wait_for(lambda: len(receiver.received) >= 3)
            before = len(answers.events)

            own_kafka.stop_process()  # a controlled shutdown, its log kept
            down_at = time.monotonic()
            # Ingest does not wait for Kafka: every change is accepted at once (the relay is behind the store).
            for i in range(3, 40):
                await post_until_accepted(http, keys["trust"], nhs[i], f"{run}-{i}", answers, down_at + 30)
                if i % 6 == 0:
                    r = await http.get("/health/ready", timeout=10)
                    ready.append((r.status_code, r.json()["checks"]))
                await asyncio.sleep(0.2)
            assert answers.refused == [] and answers.failures == [] and answers.slowest < 2
            assert all(status == 200 for status, _ in ready), ready  # the store and every worker alive
            waiting = len(answers.events) - before
            await asyncio.sleep(max(0.0, 20 - (time.monotonic() - down_at)))
            # What waits is on /metrics: the outbox's backlog, and how long its oldest has waited.
            seen = (await http.get("/metrics")).text
            pending, oldest = (gauge(seen, "s117_relay_pending_messages"),
                               gauge(seen, "s117_relay_oldest_pending_seconds"))
            assert 0 < pending <= waiting and 8 <= oldest <= time.monotonic() - down_at + 1, (pending, oldest, waiting)

            own_kafka.resume()
            up_at = time.monotonic()
            for i in range(40, 50):
                await post_until_accepted(http, keys["trust"], nhs[i], f"{run}-{i}", answers, up_at + 30)
            log = await delivered_to_council(http, keys["E06000060"], sub, receiver, hub, answers.events, timeout=90)
            caught_up = time.monotonic() - up_at
            twice = check_arrivals(receiver, log, answers.events)
            deadline = time.monotonic() + 15
            while gauge((await http.get("/metrics")).text, "s117_relay_pending_messages") != 0:
                assert time.monotonic() < deadline, "the backlog gauge back at 0 once relayed"
                await asyncio.sleep(0.5)
    finally:
        hub.stop()
        await receiver.stop()
    print(f"\nkafka down {up_at - down_at:.1f}s: {waiting} events accepted meanwhile, backlog gauge {pending:.0f} "
          f"(oldest {oldest:.0f}s); caught up {caught_up:.1f}s after; {len(log)} delivered, {twice} twice")


async def test_the_hub_started_before_postgresql_waits_for_it(own_postgres, database, tmp_path, sharing_file):
    """PostgreSQL not up yet when `s117hub serve` starts (the host booting, a restart): the hub waits
    for it, a log line a try, and is ready once it is up, rather than exiting with a traceback."""
    hub = HubProcess(tmp_path, sharing_path=sharing_file, db_url=database, own_group=True)
    await make_clients(hub.db_url)
    own_postgres.halt()
    try:
        starting = asyncio.create_task(hub.start(timeout=60))
        await asyncio.sleep(5)
        assert not starting.done(), starting  # neither ready nor exited
        own_postgres.resume()
        await starting
        logs = hub.logs()
        assert '"event":"store not reachable at start; waiting"' in logs and '"exc_type":"StoreUnreachable"' in logs
        assert "Traceback" not in logs
    finally:
        hub.stop()


async def test_a_hung_postgresql_is_answered_503_in_seconds_and_the_hub_recovers(own_postgres, database, tmp_path,
                                                                                 sharing_file):
    """PostgreSQL that keeps its connections open but answers nothing (SIGSTOP on the server and its
    backends: a hung host, a network partition). Before, a write waited on the driver (a connect
    timeout of 60 s, statements none) to the 120 s answer limit; now each wait is bounded
    (S117_STORE_*_TIMEOUT_SECONDS, short here to keep the test short), every write is answered 503
    naming the store, MLLP AE, and the hub goes on by itself once the server does."""
    mllp_port = free_port()
    limit = 3.0
    hub = HubProcess(tmp_path, sharing_path=sharing_file, db_url=database, own_group=True,
                     S117_MLLP_PORT=str(mllp_port), S117_STORE_STATEMENT_TIMEOUT_SECONDS=str(limit),
                     S117_STORE_CONNECT_TIMEOUT_SECONDS=str(limit), S117_STORE_POOL_TIMEOUT_SECONDS=str(limit))
    keys = await make_clients(hub.db_url)
    await hub.start(timeout=60)
    nhs, run = nhs_numbers(40, 73), uuid.uuid4().hex[:6]
    answers = Answers()
    paused = False
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=20) as http:
            for i in range(2):
                await post_until_accepted(http, keys["trust"], nhs[i], f"{run}-{i}", answers, time.monotonic() + 10)
            own_postgres.pause()
            paused, paused_at = True, time.monotonic()
            stop_by = paused_at + 60

            async def trust_client(first: int) -> None:
                async with httpx.AsyncClient(base_url=hub.base_url, timeout=20) as own:
                    for i in range(first, 30, 4):
                        await post_until_accepted(own, keys["trust"], nhs[i], f"{run}-{i}", answers, stop_by)

            load = [asyncio.create_task(trust_client(2 + k)) for k in range(4)]
            async with Engine(mllp_port) as e:
                started = time.monotonic()
                ack = msa(await e.send(fixture("ADT_A01_s3_detained.hl7", nhs[35], f"{run}-M")))
                ack_took = time.monotonic() - started
            started = time.monotonic()
            ready = await http.get("/health/ready", timeout=20)
            ready_took = time.monotonic() - started
            await asyncio.sleep(max(0.0, 20 - (time.monotonic() - paused_at)))
            refused_while_paused = len(answers.refused)
            own_postgres.unpause()
            paused, up_at = False, time.monotonic()
            await asyncio.gather(*load)
            recovered_in = time.monotonic() - up_at
            assert answers.failures == [], answers.failures[:5]
            assert refused_while_paused >= 4, f"the outage was met: {(ack, ack_took, ready_took)}, {hub.logs()[-3000:]}"
            # The pool, a stale connection's ping, dropping it (2 s), a new connection, and room for a busy
            # 2-core machine running the whole suite (12 s was seen alone); before: the 120 s answer limit.
            bound = 6 * limit + 4
            for status, kind, retry_after, took in answers.refused:
                assert (status, kind.rsplit("/", 1)[-1], retry_after) == (503, "store-unavailable", "30")
                assert took < bound, answers.refused
            assert ack[1] == "AE" and ack_took < bound, (ack, ack_took)
            assert "did not answer" in ack[3] or "cannot be reached" in ack[3], ack
            assert ready.status_code == 503 and ready_took < bound, (ready.text, ready_took)
            assert sum(len(v) for v in answers.accepted.values()) == 2 * 30
            assert (await http.get("/health/ready")).status_code == 200
            logs = hub.logs()
            assert "Traceback" not in logs
    finally:
        if paused:
            own_postgres.unpause()
        hub.stop()
    took = sorted(t for *_, t in answers.refused)
    print(f"\npostgres hung {up_at - paused_at:.1f}s: {refused_while_paused} REST writes refused (503, "
          f"{took[0]:.1f}-{took[-1]:.1f}s each), MLLP {ack[1]} in {ack_took:.1f}s, ready 503 in {ready_took:.1f}s; "
          f"every change accepted {recovered_in:.1f}s after it answered again")


async def test_the_hub_started_while_kafka_is_down_takes_changes_and_relays_them_once_it_is_up(
        own_postgres, own_kafka, database, tmp_path, sharing_file):
    """The broker down when `s117hub serve` starts (before: exit 3 at once, a traceback: the topic is
    made at start). Ingest does not need Kafka (the relay is behind the outbox): the hub starts, ready,
    `/health/ready` saying what waits; changes are accepted into the outbox; once the broker answers
    the topic is made, the relay and the consumers start, and every change reaches the council."""
    receiver = Receiver(secret=SECRET)
    await receiver.start()
    hub = HubProcess(tmp_path, sharing_path=sharing_file, db_url=database, own_group=True,
                     bus_url=f"kafka://{own_kafka.bootstrap}", S117_KAFKA_PARTITIONS="3")
    keys = await make_clients(hub.db_url)
    nhs, run = nhs_numbers(12, 74), uuid.uuid4().hex[:6]
    answers = Answers()
    own_kafka.stop_process()
    down = True
    try:
        started = time.monotonic()
        await hub.start(timeout=40)
        ready_in = time.monotonic() - started
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            r = await http.get("/health/ready")
            assert r.status_code == 200 and "kafka" in r.json().get("waiting", {}).get("bus", ""), r.text
            sub = await subscribe_webhook(http, keys, receiver)
            for i in range(10):
                await post_until_accepted(http, keys["trust"], nhs[i], f"{run}-{i}", answers, time.monotonic() + 10)
            assert answers.refused == [] and answers.failures == []
            own_kafka.resume()
            down, up_at = False, time.monotonic()
            log = await delivered_to_council(http, keys["E06000060"], sub, receiver, hub, answers.events, timeout=60)
            caught_up = time.monotonic() - up_at
            assert check_arrivals(receiver, log, answers.events) == 0
            while "waiting" in (r := await http.get("/health/ready")).json():  # each process's own try, every 5 s at most
                assert time.monotonic() < up_at + 30, r.text
                await asyncio.sleep(0.5)
            assert r.status_code == 200, r.text
        logs = hub.logs()
        assert '"event":"kafka not reachable; the topic and the relay wait"' in logs, logs[-2000:]
        assert "Traceback" not in logs
    finally:
        if down:
            own_kafka.resume()
        hub.stop()
        await receiver.stop()
    print(f"\nkafka down at start: hub ready in {ready_in:.1f}s, {len(answers.events)} events accepted meanwhile; "
          f"delivered {caught_up:.1f}s after the broker was back")


async def test_postgresql_taking_no_more_connections_is_named(own_postgres, database, tmp_path, sharing_file):
    """Every connection the server allows taken by others (max_connections reached, SQLSTATE 53300)
    and the hub's own sessions ended: a write that needs a new connection is answered 503
    `store-unavailable` naming it ("takes no more connections"), MLLP AE the same; once connections
    are free again the hub takes changes, no restart."""
    import asyncpg

    mllp_port = free_port()
    hub = HubProcess(tmp_path, sharing_path=sharing_file, db_url=database, own_group=True,
                     S117_MLLP_PORT=str(mllp_port))
    keys = await make_clients(hub.db_url)
    await hub.start(timeout=60)
    nhs, run = nhs_numbers(6, 75), uuid.uuid4().hex[:6]
    admin = own_postgres.url()
    args = {"user": admin.username, "password": admin.password, "host": admin.host, "port": admin.port,
            "database": admin.database}
    held: list = []

    async def take_every_connection() -> None:
        while True:
            try:
                held.append(await asyncpg.connect(**args))
            except asyncpg.TooManyConnectionsError:
                return

    answers = Answers()
    seen: list[tuple[int, str]] = []
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=30) as http:
            await post_until_accepted(http, keys["trust"], nhs[0], f"{run}-0", answers, time.monotonic() + 10)
            await take_every_connection()
            ended = await held[0].fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
                make_url_database(database))
            await take_every_connection()  # the slots the hub's sessions left too
            full_at = time.monotonic()
            await asyncio.sleep(2.5)  # past the pool's ping of a connection idle 2 s
            for i in range(4):
                change = next(iter(detention(nhs[1 + i], f"{run}-{1 + i}")))
                r = await http.post("/v1/register-changes", headers={"X-API-Key": keys["trust"]}, json=change)
                seen.append((r.status_code, r.text))
            async with Engine(mllp_port) as e:
                ack = msa(await e.send(fixture("ADT_A01_s3_detained.hl7", nhs[5], f"{run}-M")))
            assert all(status == 503 and "/store-unavailable" in text for status, text in seen), seen
            assert any("takes no more connections" in text for _, text in seen), seen
            assert ack[1] == "AE" and ("takes no more connections" in ack[3] or "cannot be reached" in ack[3]), ack
            for conn in held[: len(held) // 2]:
                await conn.close()
            del held[: len(held) // 2]
            freed_at = time.monotonic()
            await post_until_accepted(http, keys["trust"], nhs[1], f"{run}-1", answers, freed_at + 30)
            recovered_in = time.monotonic() - freed_at
    finally:
        for conn in held:
            await conn.close()
        hub.stop()
    named = sum("takes no more connections" in text for _, text in seen)
    print(f"\nmax_connections reached ({len(held) * 2} held, {ended} hub sessions ended): {len(seen)} writes 503, "
          f"{named} naming it; MLLP {ack[1]}; accepted {recovered_in:.1f}s after connections were freed "
          f"({freed_at - full_at:.1f}s full)")


def make_url_database(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).database
