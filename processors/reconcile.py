"""The reconciler: consumes ops.reconciliation.v1 and re-drives each failed side effect through its
stage's own code, with backoff, a circuit breaker per dependency, per-entity order, and a dead
letter with the full history after `max_attempts`.

Waiting retries are held in memory, not re-published. A record stays at the head of its
partition until its side effect is done or the record is handed on (dead-lettered, acknowledged
by Kafka); only then does the partition's committed offset pass it. So "offsets are committed only
after the side effect is done or handed on" holds with no second copy of the record in flight.
Re-publishing `next_attempt(...)` with a not-before time was the alternative; it was not chosen
because the retry would land behind later records of the same entity (reordering them), each
retry during an outage would add a record to the topic (a retry storm moved onto Kafka), and the
re-read record would still have to wait in memory until its not-before time. The price of
holding in memory: a crash forgets the attempts made since the last commit, so a record may get
up to `max_attempts` more re-drives after a restart (never fewer, never lost). A partition whose
head waits is paused once `max_buffered` records are held, so memory stays bounded; other
partitions go on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from prometheus_client import Counter, Gauge

from processors.backoff import Backoff
from processors.breaker import Breakers
from processors.reconcile_events import next_attempt, redact
from streams.codec import AvroCodec
from streams.deadletter import RawRecord
from streams.errors import ContractError, PinstreamError, ProcessingError, RedriveRefused, SinkError
from streams.events import Reconciliation, Stage, utc_now
from streams.metrics import REGISTRY
from streams.topics import (
    HEADER_RECONCILE_DEPENDENCY,
    HEADER_RECONCILE_HISTORY,
    HEADER_RECONCILE_STAGE,
)

log = logging.getLogger(__name__)

REDRIVES = Counter(
    "pinstream_reconciler_redrives_total",
    "Re-drives of failed side effects, by stage and outcome (done, already_applied, retry, "
    "dead_lettered).", ["stage", "outcome"], registry=REGISTRY,
)
PENDING = Gauge(
    "pinstream_reconciler_pending",
    "Reconciliation records read and not yet done or dead-lettered, by stage.", ["stage"],
    registry=REGISTRY,
)

REASON_EXHAUSTED = "reconciliation_exhausted"  # max_attempts re-drives failed
REASON_REFUSED = "reconciliation_refused"  # no retry can help (RedriveRefused)
REASON_UNDECODABLE = "reconciliation_undecodable"  # not a Reconciliation record
RECONCILER_REASONS = frozenset({REASON_EXHAUSTED, REASON_REFUSED, REASON_UNDECODABLE})

Partition = tuple[str, int]


class Outcome(StrEnum):
    DONE = "done"  # the side effect was applied now
    ALREADY_APPLIED = "already_applied"  # the store already held it: nothing written
    DEAD_LETTERED = "dead_lettered"  # handed to ops.deadletter.v1 (by the reconciler or the stage)
    RETRY = "retry"  # failed; waits for its next attempt


class Redriver(Protocol):
    """Re-applies one stage's failed side effect. Returns what it did; raises SinkError or
    ProcessingError to be retried, RedriveRefused when no retry can help.

    A re-drive may also offer `redrive_batch(records) -> list[Outcome | PinstreamError]`: one
    result per record (an error for a record that failed alone), raising when all failed; the
    reconciler then hands it runs of records of distinct entities.
    """

    async def redrive(self, record: Reconciliation) -> Outcome: ...


class DeadLetterSink(Protocol):
    """Where exhausted and refused records go (streams.deadletter.DeadLetterWriter fits)."""

    def send(self, record: RawRecord, reason: str, error: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    at: datetime
    dependency: str
    error: str

    def as_json(self) -> dict[str, object]:
        return {"attempt": self.number, "at": self.at.isoformat(), "dependency": self.dependency,
                "error": self.error}


@dataclass(frozen=True, slots=True)
class ReconcilerConfig:
    max_attempts: int = 8
    max_buffered: int = 1000  # per partition, then the partition is paused
    max_batch: int = 256  # records of one partition re-driven in one call, when the stage batches

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_buffered < 1 or self.max_batch < 1:
            raise ValueError("max_attempts, max_buffered and max_batch must be >= 1")


@dataclass(eq=False)
class Held:
    """One record held at (or queued behind) the head of its partition."""

    raw: RawRecord
    record: Reconciliation | None
    waiting_on: str  # the dependency whose breaker gates the next attempt
    not_before: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)
    last_error: SinkError | ProcessingError | None = None

    @property
    def stage(self) -> str:
        return str(self.record.stage) if self.record is not None else str(Stage.UNKNOWN)


class Reconciler:
    """Schedules re-drives: partitions in offset order, one head each; see the module docstring.

    Feed it records with `add`, call `drive_due()` repeatedly, and commit `committable()` once the
    dead letters and whatever the re-drives produced are acknowledged.
    """

    def __init__(self, redrivers: Mapping[Stage, Redriver], dead_letters: DeadLetterSink,
                 codec: AvroCodec, *, backoff: Backoff, breakers: Breakers,
                 config: ReconcilerConfig | None = None, clock: Callable[[], float] = time.monotonic,
                 secrets: Iterable[str] = ()) -> None:
        self.redrivers = dict(redrivers)
        self.dead_letters = dead_letters
        self.codec = codec
        self.backoff = backoff
        self.breakers = breakers
        self.config = config or ReconcilerConfig()
        self.clock = clock
        self._secrets = tuple(secrets)
        self._queues: dict[Partition, deque[Held]] = {}
        self._done: dict[Partition, int] = {}  # next offset to commit per partition
        self._high: dict[Partition, int] = {}  # highest offset finished per partition
        self._floor: dict[Partition, int] = {}  # committed (or first read) offset per partition
        self.outcomes: dict[Outcome, int] = dict.fromkeys(Outcome, 0)

    # --- intake -------------------------------------------------------------------------------

    def add(self, raw: RawRecord) -> None:
        """Queue a consumed record behind the others of its partition."""
        try:
            event = self.codec.decode_event(raw.value or b"")
            record = event if isinstance(event, Reconciliation) else None
            problem = None if record is not None else f"{event.schema_name} on the reconciliation topic"
        except ContractError as exc:
            record, problem = None, f"{exc.reason}: {exc}"
        held = Held(raw, record, record.dependency if record is not None else "kafka")
        if problem is not None:
            held.last_error = RedriveRefused(problem, stage=str(Stage.UNKNOWN), reason="undecodable")
        self._queues.setdefault((raw.topic, raw.partition), deque()).append(held)
        self._floor.setdefault((raw.topic, raw.partition), raw.offset)
        PENDING.labels(held.stage).inc()

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Drop what is held of revoked partitions: their next owner re-reads it uncommitted."""
        for partition in partitions:
            for held in self._queues.pop(partition, ()):
                PENDING.labels(held.stage).dec()
            self._done.pop(partition, None)
            self._high.pop(partition, None)
            self._floor.pop(partition, None)

    # --- state for the consumer loop ----------------------------------------------------------

    def held(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def full(self) -> set[Partition]:
        """Partitions to pause: they hold `max_buffered` records or more."""
        return {p for p, q in self._queues.items() if len(q) >= self.config.max_buffered}

    def committable(self) -> dict[Partition, int]:
        """Per partition, the offset to commit (everything before it is done or handed on); taken
        once returned, so each offset is handed out once."""
        done, self._done = self._done, {}
        return done

    def restore(self, offsets: Mapping[Partition, int]) -> None:
        """Give back offsets from `committable()` that could not be committed."""
        for partition, offset in offsets.items():
            self._done[partition] = max(offset, self._done.get(partition, 0))

    def next_due_in(self) -> float | None:
        """Seconds until the earliest waiting head may be attempted (None: nothing is held)."""
        now = self.clock()
        heads = [queue[0] for queue in self._queues.values() if queue]
        if not heads:
            return None
        return max(0.0, min(self._ready_at(head, now) - now for head in heads))

    # --- driving ------------------------------------------------------------------------------

    async def drive_due(self, budget: int = 1000) -> int:
        """Attempt every partition head that is due, and the records behind it while they succeed
        (at most about `budget` per partition, so that commits and polls are not starved).
        Returns how many records finished (done, already applied or dead-lettered)."""
        finished = 0
        for partition, queue in list(self._queues.items()):
            spent = 0
            while queue and spent < budget:
                batch = self._due_batch(queue)
                if not batch:
                    break
                outcomes = await self._attempt(batch)
                spent += len(batch)
                progressed = False
                for held, outcome in zip(batch, outcomes, strict=True):
                    if outcome is not Outcome.RETRY:
                        queue.remove(held)
                        PENDING.labels(held.stage).dec()
                        self.outcomes[outcome] += 1
                        finished += 1
                        progressed = True
                        self._high[partition] = max(held.raw.offset, self._high.get(partition, -1))
                # Everything before the (new) head is finished: commit up to it, if that moved.
                upto = queue[0].raw.offset if queue else self._high.get(partition, -2) + 1
                if progressed and upto > self._floor.get(partition, -1):
                    self._done[partition] = self._floor[partition] = upto
                if queue and queue[0] is batch[0]:
                    break  # the head failed: it waits, and so does its partition
            if not queue:
                del self._queues[partition]
        return finished

    def _due_batch(self, queue: deque[Held]) -> list[Held]:
        """The head if it may be attempted now, with the records behind it that can go in the same
        call (same re-drive, due, same dependency, distinct entities: one entity's records never
        share a call, so a failure cannot let its later record overtake it). Empty: wait."""
        head = queue[0]
        if head.record is None or isinstance(head.last_error, RedriveRefused):
            return [head]
        if self.clock() < head.not_before or not self.breakers[head.waiting_on].allow():
            return []  # waits without burning an attempt while its dependency is known down
        redriver = self.redrivers.get(head.record.stage)
        if getattr(redriver, "redrive_batch", None) is None:
            return [head]
        batch, entities, now = [head], {head.record.entity_id}, self.clock()
        for held in itertools.islice(queue, 1, self.config.max_batch):
            record = held.record
            if (record is None or isinstance(held.last_error, RedriveRefused)
                    or self.redrivers.get(record.stage) is not redriver or now < held.not_before
                    or held.waiting_on != head.waiting_on or record.entity_id in entities):
                break
            batch.append(held)
            entities.add(record.entity_id)
        return batch

    async def _attempt(self, batch: list[Held]) -> list[Outcome]:
        """One attempt at each record of a batch (from `_due_batch`)."""
        head = batch[0]
        if head.record is None or isinstance(head.last_error, RedriveRefused):
            return [self._dead_letter(head, REASON_UNDECODABLE if head.record is None else REASON_REFUSED)]
        gate = head.waiting_on
        stage = head.record.stage
        redriver = self.redrivers.get(stage)
        records = [held.record for held in batch if held.record is not None]
        results: list[Outcome | PinstreamError]
        try:
            if redriver is None:
                results = [RedriveRefused(f"no re-drive for stage {stage}", stage=str(stage),
                                          reason="no_redriver")]
            elif len(batch) > 1 or getattr(redriver, "redrive_batch", None) is not None:
                results = list(await redriver.redrive_batch(records))  # type: ignore[attr-defined]
            else:
                results = [await redriver.redrive(head.record)]
        except (SinkError, ProcessingError) as exc:
            results = [exc] * len(batch)
        except Exception as exc:  # a bug must not stop every other record: counted, then dead-lettered
            log.exception("re-drive of %s %s raised", stage, head.record.entity_id)
            failure = ProcessingError(f"{type(exc).__name__}: {exc}", stage=str(stage), reason="unexpected")
            return [self._failed(held, failure, "internal") for held in batch]
        if len(results) != len(batch):
            raise AssertionError(f"{stage} re-drive answered {len(results)} of {len(batch)} records")
        return [self._settle(held, result, gate) for held, result in zip(batch, results, strict=True)]

    def _settle(self, held: Held, result: Outcome | PinstreamError, gate: str) -> Outcome:
        assert held.record is not None
        if isinstance(result, RedriveRefused):
            self.breakers[gate].record_success()  # the dependency was not what failed
            held.last_error = result
            return self._dead_letter(held, REASON_REFUSED)
        if isinstance(result, SinkError | ProcessingError):
            return self._failed(held, result, gate)
        if isinstance(result, PinstreamError):
            failure = ProcessingError(str(result), stage=str(held.record.stage), reason="unexpected")
            return self._failed(held, failure, "internal")
        self.breakers[gate].record_success()
        REDRIVES.labels(str(held.record.stage), str(result)).inc()
        log.debug("re-drove %s %s %s: %s", held.record.stage, held.record.entity_type,
                  held.record.entity_id, result)
        return result

    def _failed(self, held: Held, error: SinkError | ProcessingError, gate: str) -> Outcome:
        assert held.record is not None
        dependency = error.dependency if isinstance(error, SinkError) else gate
        if dependency != gate:
            self.breakers[gate].record_success()  # got past the gate; another dependency failed
        self.breakers[dependency].record_failure()
        held.attempts.append(Attempt(len(held.attempts) + 1, utc_now(), dependency,
                                     redact(f"{type(error).__name__}: {error}", self._secrets)))
        held.last_error = error
        held.waiting_on = dependency
        stage = str(held.record.stage)
        if len(held.attempts) >= self.config.max_attempts:
            return self._dead_letter(held, REASON_EXHAUSTED)
        delay = self.backoff.delay(len(held.attempts))
        held.not_before = self.clock() + delay
        REDRIVES.labels(stage, str(Outcome.RETRY)).inc()
        log.warning("re-drive of %s %s failed (attempt %d/%d, %s), next in %.1fs: %s", stage,
                    held.record.entity_id, len(held.attempts), self.config.max_attempts, dependency,
                    delay, error)
        return Outcome.RETRY

    def _ready_at(self, held: Held, now: float) -> float:
        if held.record is None or isinstance(held.last_error, RedriveRefused):
            return now
        return max(held.not_before, now + self.breakers[held.waiting_on].retry_in())

    def _dead_letter(self, held: Held, reason: str) -> Outcome:
        """Hand the record on with its history: the value is the record as of its last attempt."""
        raw, record, error = held.raw, held.record, held.last_error
        value = raw.value
        headers = list(raw.headers)
        if record is not None:
            last = record
            if error is not None and held.attempts:
                last = dataclasses.replace(next_attempt(record, error, secrets=self._secrets),
                                           attempt=record.attempt + len(held.attempts))
            value = self.codec.encode_event(last)
            headers += [(HEADER_RECONCILE_STAGE, str(record.stage).encode()),
                        (HEADER_RECONCILE_DEPENDENCY, held.waiting_on.encode()),
                        (HEADER_RECONCILE_HISTORY,
                         json.dumps([a.as_json() for a in held.attempts]).encode())]
        text = redact(f"{type(error).__name__}: {error}", self._secrets) if error else reason
        self.dead_letters.send(dataclasses.replace(raw, value=value, headers=tuple(headers)), reason, text)
        REDRIVES.labels(held.stage, str(Outcome.DEAD_LETTERED)).inc()
        log.warning("dead-lettered reconciliation %s (%s) after %d attempts: %s", raw.source, reason,
                    len(held.attempts), text)
        return Outcome.DEAD_LETTERED


async def sleep_until_due(reconciler: Reconciler, longest: float) -> None:
    """Sleep until the next head is due, at most `longest` seconds."""
    due = reconciler.next_due_in()
    await asyncio.sleep(min(longest, due if due is not None else longest))
