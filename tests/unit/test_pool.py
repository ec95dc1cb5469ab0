"""The bounded connection pool: exhaustion, health checks, recycling, leak accounting, metrics."""

from __future__ import annotations

import gc
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from sinks.pool import ConnectionPool, Lease, PoolConfig
from streams.errors import ConfigError, SinkError
from streams.metrics import REGISTRY


class FakeConnection:
    """Stands in for a client connection: counts round trips, can be made to fail its check."""

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self.closed = False
        self.healthy = True
        self.checks = 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Factory:
    """create/close/check callables over FakeConnections, recording what happened."""

    def __init__(self) -> None:
        self.made: list[FakeConnection] = []
        self.fail_next_create: Exception | None = None

    def create(self) -> FakeConnection:
        if self.fail_next_create is not None:
            exc, self.fail_next_create = self.fail_next_create, None
            raise exc
        conn = FakeConnection(len(self.made))
        self.made.append(conn)
        return conn

    @staticmethod
    def close(conn: FakeConnection) -> None:
        conn.closed = True

    @staticmethod
    def check(conn: FakeConnection) -> bool:
        conn.checks += 1
        if not conn.healthy:
            raise ConnectionResetError("peer went away")
        return True


@pytest.fixture
def factory() -> Factory:
    return Factory()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_pool(factory: Factory, clock: FakeClock | None = None,
              **config: object) -> ConnectionPool[FakeConnection]:
    settings: dict[str, object] = {"name": f"test-{uuid.uuid4().hex[:8]}", "dependency": "fake",
                                   "max_size": 3, "acquire_timeout_s": 0.05}
    settings.update(config)
    return ConnectionPool(
        PoolConfig(**settings),  # type: ignore[arg-type]
        create=factory.create, close=factory.close, check=factory.check,
        clock=clock if clock is not None else time.monotonic,
    )


def sample(name: str, pool: ConnectionPool[FakeConnection], **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"pool": pool.config.name, **labels})


@pytest.fixture
def pool(factory: Factory, clock: FakeClock) -> Iterator[ConnectionPool[FakeConnection]]:
    with make_pool(factory, clock) as p:
        yield p


def test_a_returned_connection_is_reused_and_metrics_follow(
        pool: ConnectionPool[FakeConnection], factory: Factory) -> None:
    assert sample("pinstream_pool_max", pool) == 3
    with pool.connection() as first:
        assert sample("pinstream_pool_in_use", pool) == 1
        assert sample("pinstream_pool_idle", pool) == 0
    assert sample("pinstream_pool_in_use", pool) == 0
    assert sample("pinstream_pool_idle", pool) == 1
    with pool.connection() as second:
        assert second is first
    assert len(factory.made) == 1
    assert sample("pinstream_pool_acquire_seconds_count", pool) == 2


def test_exhaustion_is_a_sink_error_naming_the_pool_and_the_oldest_borrower(factory: Factory) -> None:
    pool = make_pool(factory, max_size=2, acquire_timeout_s=0.05)
    held = [pool.acquire(), pool.acquire()]
    started = time.monotonic()
    with pytest.raises(SinkError) as caught:
        pool.acquire()
    assert time.monotonic() - started < 1.0
    assert caught.value.dependency == "fake"
    assert caught.value.retry_after == pytest.approx(0.05)
    message = str(caught.value)
    assert "exhausted" in message and pool.config.name in message
    assert "test_exhaustion_is_a_sink_error" in message  # where the oldest borrow came from
    assert sample("pinstream_pool_exhausted_total", pool) == 1
    for lease in held:
        lease.release()
    pool.close()


def test_a_waiting_borrower_gets_the_connection_another_returns(factory: Factory) -> None:
    pool = make_pool(factory, max_size=1, acquire_timeout_s=5.0)
    lease = pool.acquire()
    got: list[FakeConnection] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire().conn))
    waiter.start()
    time.sleep(0.05)
    assert pool.stats().waiting == 1
    lease.release()
    waiter.join(timeout=5)
    assert got == [lease.conn]


def test_an_idle_connection_failing_its_health_check_is_replaced(
        pool: ConnectionPool[FakeConnection], factory: Factory, clock: FakeClock) -> None:
    with pool.connection() as conn:
        pass
    conn.healthy = False
    clock.advance(pool.config.check_idle_after_s)
    with pool.connection() as replacement:
        assert replacement is not conn
    assert conn.closed and conn.checks == 1
    assert sample("pinstream_pool_discarded_total", pool, reason="health") == 1
    assert pool.stats().in_use == 0 and pool.stats().idle == 1


def test_a_recently_used_connection_is_lent_without_a_round_trip(
        pool: ConnectionPool[FakeConnection], clock: FakeClock) -> None:
    with pool.connection() as conn:
        pass
    clock.advance(pool.config.check_idle_after_s / 10)
    with pool.connection() as again:
        assert again is conn
    assert conn.checks == 0


def test_connections_are_recycled_by_age(factory: Factory, clock: FakeClock) -> None:
    pool = make_pool(factory, clock, max_age_s=60.0, check_idle_after_s=1000.0)
    with pool.connection() as old:
        pass
    clock.advance(61)
    with pool.connection() as fresh:
        assert fresh is not old
        clock.advance(61)  # ages while lent: closed on return rather than pooled
    assert old.closed and fresh.closed
    assert pool.stats().idle == 0 and pool.stats().in_use == 0
    assert sample("pinstream_pool_discarded_total", pool, reason="age") == 2


def test_an_error_inside_the_block_discards_the_connection(pool: ConnectionPool[FakeConnection]) -> None:
    with pytest.raises(TimeoutError), pool.connection() as conn:
        raise TimeoutError("read timed out")
    assert conn.closed
    assert pool.stats().in_use == 0 and pool.stats().idle == 0
    assert sample("pinstream_pool_discarded_total", pool, reason="error") == 1


def test_errors_the_caller_says_are_harmless_keep_the_connection(factory: Factory) -> None:
    pool = ConnectionPool(PoolConfig(f"t-{uuid.uuid4().hex[:8]}", "fake"), create=factory.create,
                          close=factory.close, is_broken=lambda exc: not isinstance(exc, KeyError))
    with pytest.raises(KeyError), pool.connection() as conn:
        raise KeyError("no such row")
    assert not conn.closed and pool.stats().idle == 1


def test_a_failed_connect_gives_its_slot_back(pool: ConnectionPool[FakeConnection], factory: Factory) -> None:
    factory.fail_next_create = ConnectionRefusedError("refused")
    with pytest.raises(ConnectionRefusedError):
        pool.acquire()
    assert pool.stats().in_use == 0
    held = [pool.acquire() for _ in range(pool.config.max_size)]  # every slot is still there
    for lease in held:
        lease.release()


def test_leaked_connection_is_reported_with_its_call_site_before_the_pool_runs_out(
        factory: Factory, clock: FakeClock) -> None:
    """The reference incident: one code path forgot to return its connection; under steady
    traffic the pool filled up within minutes, and an alert at 95% saw it too late."""
    pool = make_pool(factory, clock, max_size=10, leak_threshold_s=30.0, acquire_timeout_s=1.0)
    stuck: list[Lease[FakeConnection]] = []  # what the leaky path keeps referenced forever

    def healthy_handler() -> None:
        with pool.connection():
            pass

    def leaky_handler() -> None:
        lease = pool.acquire()
        stuck.append(lease)  # ...and the return was lost on an early-exit branch

    first_report_at_use: float | None = None
    for second in range(120):
        healthy_handler()
        if second % 15 == 0:
            leaky_handler()
        if first_report_at_use is None and sample("pinstream_pool_leaks_total", pool):
            first_report_at_use = pool.stats().in_use / pool.config.max_size
        clock.advance(1.0)

    assert first_report_at_use is not None and first_report_at_use < 0.8
    assert pool.stats().in_use < pool.config.max_size
    pool.check_leaks()  # what a periodic sweep does between borrows
    reports = pool.suspected_leaks()
    assert reports and all(r.held_s >= 30.0 for r in reports)
    assert reports[0].call_site[0][2] == "leaky_handler"
    assert "leaky_handler" in reports[0].format()
    assert sample("pinstream_pool_leaks_total", pool) == len(reports)  # each reported once
    for lease in stuck:
        lease.release()


def test_a_lease_dropped_without_release_is_reported_and_its_slot_freed(
        pool: ConnectionPool[FakeConnection], caplog: pytest.LogCaptureFixture) -> None:
    def forgetful() -> None:
        pool.acquire()  # the lease is dropped on the floor

    forgetful()
    gc.collect()
    assert pool.stats().in_use == 0
    assert sample("pinstream_pool_leaks_total", pool) == 1
    assert "dropped without release" in caplog.text and "forgetful" in caplog.text


def test_release_twice_is_harmless(pool: ConnectionPool[FakeConnection]) -> None:
    lease = pool.acquire()
    lease.release()
    lease.release()
    assert pool.stats().idle == 1 and pool.stats().in_use == 0


def test_close_closes_idle_now_and_lent_on_return(pool: ConnectionPool[FakeConnection]) -> None:
    lent = pool.acquire()
    with pool.connection() as idle:
        pass
    pool.close()
    assert idle.closed and not lent.conn.closed
    lent.release()
    assert lent.conn.closed
    with pytest.raises(SinkError, match="closed"):
        pool.acquire()
    assert sample("pinstream_pool_in_use", pool) is None  # no stale series left to alert on


def test_concurrent_borrowers_never_exceed_the_bound(factory: Factory) -> None:
    pool = make_pool(factory, max_size=3, acquire_timeout_s=5.0)
    peak = 0
    lock = threading.Lock()
    in_hand = 0

    def worker() -> None:
        nonlocal peak, in_hand
        for _ in range(200):
            with pool.connection():
                with lock:
                    in_hand += 1
                    peak = max(peak, in_hand)
                with lock:
                    in_hand -= 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak <= 3 and len(factory.made) <= 3
    assert pool.stats().in_use == 0


@pytest.mark.parametrize("bad", [{"max_size": 0}, {"acquire_timeout_s": 0}, {"leak_threshold_s": -1},
                                 {"check_idle_after_s": -1}, {"name": ""}])
def test_invalid_config_is_a_config_error(bad: dict[str, object]) -> None:
    settings: dict[str, object] = {"name": "p", "dependency": "fake", **bad}
    with pytest.raises(ConfigError):
        PoolConfig(**settings)  # type: ignore[arg-type]
