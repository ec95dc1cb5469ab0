"""A bounded, measured connection pool for the store sinks: health-checked borrows, recycling by
age and after errors, and accounting that reports leaked connections with their borrower's stack."""

from __future__ import annotations

import contextlib
import linecache
import logging
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from types import FrameType, TracebackType
from typing import Generic, TypeVar

from sinks.pool_metrics import (
    POOL_ACQUIRE_SECONDS,
    POOL_DISCARDED,
    POOL_EXHAUSTED,
    POOL_IDLE,
    POOL_IN_USE,
    POOL_LEAKS,
    POOL_MAX,
)
from streams.errors import ConfigError, SinkError

log = logging.getLogger(__name__)

C = TypeVar("C")

# Stack frames kept per borrow: enough to name the code path, cheap enough for every borrow.
_CALL_SITE_FRAMES = 12
_SKIPPED_FILES = frozenset({__file__})

Frame = tuple[str, int, str]  # file, line, function


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Bounds and timings of one pool; `dependency` is what its errors name (e.g. "hbase")."""

    name: str
    dependency: str
    max_size: int = 8
    acquire_timeout_s: float = 5.0
    max_age_s: float = 600.0
    check_idle_after_s: float = 1.0
    leak_threshold_s: float = 60.0
    capture_call_sites: bool = True

    def __post_init__(self) -> None:
        if not self.name or not self.dependency:
            raise ConfigError("a pool needs a name and a dependency")
        if self.max_size < 1:
            raise ConfigError(f"pool {self.name}: max_size must be >= 1, not {self.max_size}")
        positive = {"acquire_timeout_s": self.acquire_timeout_s, "max_age_s": self.max_age_s,
                    "leak_threshold_s": self.leak_threshold_s}
        for field_name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"pool {self.name}: {field_name} must be > 0, not {value}")
        if self.check_idle_after_s < 0:
            raise ConfigError(f"pool {self.name}: check_idle_after_s must be >= 0")


@dataclass(frozen=True, slots=True)
class LeakReport:
    """A borrowed connection suspected leaked: who took it, where, and for how long."""

    pool: str
    lease_id: int
    held_s: float
    thread: str
    call_site: tuple[Frame, ...]
    dropped: bool  # the lease was garbage-collected without being returned

    def format(self) -> str:
        how = "dropped without release" if self.dropped else f"held for {self.held_s:.1f}s"
        lines = [f"pool {self.pool}: connection #{self.lease_id} {how}, borrowed by thread "
                 f"{self.thread} at (most recent call first):"]
        for filename, lineno, function in self.call_site:
            source = linecache.getline(filename, lineno).strip()
            lines.append(f'  File "{filename}", line {lineno}, in {function}' +
                         (f"\n    {source}" if source else ""))
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class PoolStats:
    name: str
    max_size: int
    in_use: int
    idle: int
    waiting: int


@dataclass(slots=True)
class _Pooled(Generic[C]):
    conn: C
    created_at: float
    returned_at: float


@dataclass(slots=True)
class _Loan(Generic[C]):
    pooled: _Pooled[C]
    lease_id: int
    borrowed_at: float
    thread: str
    call_site: tuple[Frame, ...]
    reported: bool = False


class Lease(Generic[C]):
    """One borrowed connection: `with pool.connection() as conn:` or `lease.release()`."""

    __slots__ = ("__weakref__", "_finalizer", "_loan", "_pool", "conn")

    def __init__(self, pool: ConnectionPool[C], loan: _Loan[C]) -> None:
        self._pool = pool
        self._loan: _Loan[C] | None = loan
        self.conn = loan.pooled.conn
        # A lease garbage-collected unreturned is a leak: report it and free its slot.
        self._finalizer = weakref.finalize(self, pool._orphans.append, loan.lease_id)

    def release(self, *, broken: bool = False) -> None:
        """Give the connection back; `broken=True` closes it instead (it failed mid-use)."""
        loan, self._loan = self._loan, None
        if loan is None:
            return
        self._finalizer.detach()
        self._pool._give_back(loan, broken=broken)

    def __enter__(self) -> C:
        return self.conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release(broken=exc is not None and self._pool.is_broken(exc))


def _capture_call_site() -> tuple[Frame, ...]:
    frames: list[Frame] = []
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and len(frames) < _CALL_SITE_FRAMES:
        code = frame.f_code
        if code.co_filename not in _SKIPPED_FILES:
            frames.append((code.co_filename, frame.f_lineno, code.co_name))
        frame = frame.f_back
    return tuple(frames)


class ConnectionPool(Generic[C]):
    """At most `max_size` connections made by `create`; each borrow is accounted until returned.

    `check(conn)` is a cheap round trip run on a connection idle for `check_idle_after_s` or more
    (raise or return False when unhealthy); `close(conn)` must not raise for a dead connection.
    `is_broken(exc)` says whether an error raised while a connection was in use spoils it.
    """

    def __init__(self, config: PoolConfig, *, create: Callable[[], C], close: Callable[[C], None],
                 check: Callable[[C], object] | None = None,
                 is_broken: Callable[[BaseException], bool] = lambda exc: True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.is_broken = is_broken
        self._create = create
        self._close = close
        self._check = check
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._idle: list[_Pooled[C]] = []  # LIFO: hot connections stay hot, cold ones age out
        self._loans: dict[int, _Loan[C]] = {}  # insertion order = borrow order, oldest first
        self._slots = 0  # idle + lent + being opened or checked; never above max_size
        self._waiting = 0
        self._closed = False
        self._ids = count(1)
        # Appended to by lease finalizers, which may run inside GC while our lock is held.
        self._orphans: deque[int] = deque()
        name = config.name
        self._acquire_hist = POOL_ACQUIRE_SECONDS.labels(name)
        # Counters start at 0 when the pool does, so that alerting on increase() sees the first one.
        self._leaks = POOL_LEAKS.labels(name)
        self._exhausted = POOL_EXHAUSTED.labels(name)
        POOL_MAX.labels(name).set(config.max_size)
        # Read when scraped rather than set on every borrow: the borrow path stays cheap. The
        # ints are read without the lock; a scrape sees a value that was true a moment ago.
        POOL_IN_USE.labels(name).set_function(lambda: self._slots - len(self._idle))
        POOL_IDLE.labels(name).set_function(lambda: len(self._idle))

    # --- borrowing ----------------------------------------------------------------------------

    def connection(self) -> Lease[C]:
        """Borrow a connection for a `with` block; an error inside the block discards it."""
        return self.acquire()

    def acquire(self) -> Lease[C]:
        """Borrow a connection; raises SinkError when none comes free within the acquire timeout.

        Errors of `create` (the dependency is down) propagate unchanged for the caller to translate.
        """
        started = self._clock()
        call_site = _capture_call_site() if self.config.capture_call_sites else ()
        pooled = self._reserve(started)
        try:
            pooled = self._ready(pooled)
        except BaseException:
            with self._cond:
                self._slots -= 1
                self._cond.notify()
            raise
        now = self._clock()
        loan = _Loan(pooled, next(self._ids), now, threading.current_thread().name, call_site)
        with self._cond:
            self._loans[loan.lease_id] = loan
        self._acquire_hist.observe(now - started)
        return Lease(self, loan)

    def _reserve(self, started: float) -> _Pooled[C] | None:
        """Take an idle connection or a free slot (None: open a new one), waiting up to the timeout."""
        # Real time, whatever clock ages are measured with: Condition.wait sleeps in real time.
        deadline = time.monotonic() + self.config.acquire_timeout_s
        with self._cond:
            self._reap_orphans_locked()
            self._scan_for_leaks_locked(started)
            while True:
                if self._closed:
                    raise SinkError(f"pool {self.config.name} is closed",
                                    dependency=self.config.dependency)
                if self._idle:
                    return self._idle.pop()
                if self._slots < self.config.max_size:
                    self._slots += 1
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._exhausted_locked()
                self._waiting += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._waiting -= 1
                self._reap_orphans_locked()

    def _ready(self, pooled: _Pooled[C] | None) -> _Pooled[C]:
        """A usable connection for a reserved slot: recycle if too old, check if idle, else open."""
        if pooled is not None:
            now = self._clock()
            if now - pooled.created_at >= self.config.max_age_s:
                self._discard(pooled.conn, "age")
            elif now - pooled.returned_at >= self.config.check_idle_after_s and not self._healthy(pooled):
                self._discard(pooled.conn, "health")
            else:
                return pooled
        conn = self._create()
        now = self._clock()
        return _Pooled(conn, now, now)

    def _healthy(self, pooled: _Pooled[C]) -> bool:
        if self._check is None:
            return True
        try:
            return self._check(pooled.conn) is not False
        except Exception as exc:
            log.info("pool %s: health check failed, replacing the connection: %r",
                     self.config.name, exc)
            return False

    def _exhausted_locked(self) -> SinkError:
        self._exhausted.inc()
        oldest = next(iter(self._loans.values()), None)
        where = ""
        if oldest is not None and oldest.call_site:
            filename, lineno, function = oldest.call_site[0]
            where = (f"; the oldest borrow ({self._clock() - oldest.borrowed_at:.1f}s ago) "
                     f"came from {function} at {filename}:{lineno}")
        return SinkError(
            f"pool {self.config.name} exhausted: all {self.config.max_size} connections in use "
            f"for {self.config.acquire_timeout_s:g}s{where}",
            dependency=self.config.dependency, retry_after=self.config.acquire_timeout_s,
        )

    # --- returning ----------------------------------------------------------------------------

    def _give_back(self, loan: _Loan[C], *, broken: bool) -> None:
        now = self._clock()
        pooled = loan.pooled
        reason = "error" if broken else "age" if now - pooled.created_at >= self.config.max_age_s else None
        with self._cond:
            self._loans.pop(loan.lease_id, None)
            if reason is None and self._closed:
                reason = "closed"
            if reason is None:
                pooled.returned_at = now
                self._idle.append(pooled)
            else:
                self._slots -= 1
            self._cond.notify()
        if reason is not None:
            self._discard(pooled.conn, reason)

    def _discard(self, conn: C, reason: str) -> None:
        POOL_DISCARDED.labels(self.config.name, reason).inc()
        try:
            self._close(conn)
        except Exception as exc:  # a dead connection may fail to close; it is gone either way
            log.debug("pool %s: closing a %s connection failed: %r", self.config.name, reason, exc)

    # --- leak accounting ----------------------------------------------------------------------

    def check_leaks(self) -> list[LeakReport]:
        """Report (once each) borrows held past the threshold; every borrow runs this too."""
        with self._cond:
            self._reap_orphans_locked()
            return self._scan_for_leaks_locked(self._clock())

    def suspected_leaks(self) -> list[LeakReport]:
        """Every borrow currently held past the leak threshold, reported before or not."""
        now = self._clock()
        with self._cond:
            return [self._report(loan, now, dropped=False) for loan in self._loans.values()
                    if now - loan.borrowed_at >= self.config.leak_threshold_s]

    def _scan_for_leaks_locked(self, now: float) -> list[LeakReport]:
        reports = []
        for loan in self._loans.values():
            if now - loan.borrowed_at < self.config.leak_threshold_s:
                break  # borrow order: every later loan is younger
            if not loan.reported:
                loan.reported = True
                reports.append(self._leaked(loan, now, dropped=False))
        return reports

    def _reap_orphans_locked(self) -> None:
        while self._orphans:
            loan = self._loans.pop(self._orphans.popleft(), None)
            if loan is None:
                continue
            # Whoever dropped the lease may still hold the bare connection: free the slot but
            # neither reuse nor close it.
            self._slots -= 1
            self._leaked(loan, self._clock(), dropped=True)
            self._cond.notify()

    def _leaked(self, loan: _Loan[C], now: float, *, dropped: bool) -> LeakReport:
        report = self._report(loan, now, dropped=dropped)
        self._leaks.inc()
        log.warning("connection leak: %s", report.format())
        return report

    def _report(self, loan: _Loan[C], now: float, *, dropped: bool) -> LeakReport:
        return LeakReport(self.config.name, loan.lease_id, now - loan.borrowed_at, loan.thread,
                          loan.call_site, dropped)

    # --- state --------------------------------------------------------------------------------

    def stats(self) -> PoolStats:
        with self._cond:
            self._reap_orphans_locked()
            return PoolStats(self.config.name, self.config.max_size, self._slots - len(self._idle),
                             len(self._idle), self._waiting)

    def close(self) -> None:
        """Close idle connections now and lent ones when returned; later borrows raise SinkError."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = self._idle, []
            self._slots -= len(idle)
            self._cond.notify_all()
        for pooled in idle:
            self._discard(pooled.conn, "closed")
        # A closed pool must not keep exporting (and alerting on) its last values.
        for gauge in (POOL_IN_USE, POOL_IDLE, POOL_MAX):
            with contextlib.suppress(KeyError):
                gauge.remove(self.config.name)

    def __enter__(self) -> ConnectionPool[C]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
