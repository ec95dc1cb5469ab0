"""Producer SDK for upstream producers: typed events in, acknowledged Avro records on Kafka out.

`EventProducer` publishes any contract event (idempotent, acks=all, compressed) and surfaces every
delivery report; `PinProducer` adds the product calls `create_pin` and `interact`, keyed per the
catalogue, with the per-user pin-creation rate limit. Nothing is encoded half-way: an event is
fully encoded (and validated by the encoder) before it is handed to librdkafka.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams import metrics
from streams.codec import AvroCodec
from streams.errors import DeliveryError, InputError, RateLimitedError
from streams.events import Event, InteractionAction, PinCreated, PinInteraction, new_event_id, utc_now
from streams.ratelimit import RateLimiter
from streams.registry import build_codec
from streams.settings import Settings
from streams.topics import PINS_CREATED, PINS_INTERACTIONS, TopicSpec

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
_QUEUE_FULL_WAIT_S = 30.0
_MAX_KEPT_FAILURES = 1_000
_POLL_EVERY = 256


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """The broker's answer for one record: where it landed, or why it did not."""

    topic: str
    key: bytes | None
    partition: int | None
    offset: int | None
    error: str | None
    retriable: bool
    latency_s: float
    context: object = None  # whatever the caller passed to send(), e.g. a line number

    @property
    def ok(self) -> bool:
        return self.error is None


DeliveryCallback = Callable[[DeliveryReport], None]


class EventProducer:
    """Publishes contract events and raw records; counts and reports every delivery.

    With `failures_only`, librdkafka reports only the records it could not deliver
    (`delivery.report.only.error`): the records acknowledged are counted per topic when a flush
    leaves nothing pending, and no per-record delivery latency is observed. For producers that send
    thousands of records per batch and only need to know that all of them landed (the worker's
    graph deltas): a report per record was a Python call, a counter and a histogram each.
    """

    def __init__(self, settings: Settings, *, codec: AvroCodec | None = None,
                 on_delivery: DeliveryCallback | None = None, linger_ms: int | None = None,
                 failures_only: bool = False, **kafka_overrides: object) -> None:
        """`linger_ms`: this producer's own linger.ms instead of `settings.producer_linger_ms`."""
        if failures_only and on_delivery is not None:
            raise ValueError("on_delivery needs a report per record: not with failures_only")
        self.settings = settings
        self.codec = codec or build_codec(settings)
        self._on_delivery = on_delivery
        if linger_ms is not None:
            kafka_overrides["linger.ms"] = linger_ms
        self.failures_only = failures_only
        if failures_only:
            kafka_overrides["delivery.report.only.error"] = True
        # Reports without a context come to one bound method, set once for the producer: nothing
        # per record (graph deltas are sent by the thousand per batch).
        kafka_overrides["on_delivery"] = self._report
        self._producer = Producer(settings.kafka_producer(**kafka_overrides))
        self.delivered = 0  # failures_only: as of the last flush that left nothing pending
        self.failed = 0
        # failures_only: per topic, records sent, failed and counted as acknowledged, all since
        # the start (sends and flushes may come from different threads: hence the lock).
        self._counts_lock = threading.Lock()
        self._sent: dict[str, int] = {}
        self._failed_by_topic: dict[str, int] = {}
        self._acknowledged: dict[str, int] = {}
        self.recent_failures: deque[DeliveryReport] = deque(maxlen=_MAX_KEPT_FAILURES)
        self._closed = False
        self._unpolled = 0  # sends since delivery reports were last served
        # Labelled metric children per topic: labels() is a locked dict lookup, too slow per record.
        self._topic_metrics: dict[str, tuple[Any, Any]] = {}

    # --- sending --------------------------------------------------------------------------

    def send_event(self, spec: TopicSpec, key: str, event: Event, *,
                   headers: Headers = (), context: object = None) -> None:
        """Encode `event` (raises ContractError if it breaks the contract) and queue it."""
        if spec.schema is not None and spec.schema != event.schema_name:
            raise InputError(f"{spec.name} carries {spec.schema}, not {event.schema_name}")
        value = self.codec.encode_event(event)
        self.send_raw(self.settings.topic(spec.name), key.encode(), value,
                      headers=headers, context=context)

    def send_raw(self, topic: str, key: bytes | None, value: bytes | None, *,
                 headers: Headers = (), partition: int | None = None,
                 timestamp_ms: int | None = None, context: object = None) -> None:
        """Queue already-encoded bytes (replay, dead letters). Blocks while the queue is full.
        Delivery reports are served by every few hundredth send, `poll`, `flush` and `close`."""
        # librdkafka times each record itself; a report without a context goes to the producer's
        # own callback (set in its configuration).
        options: dict[str, Any] = {}
        if context is not None:
            options["on_delivery"] = partial(self._report, context=context)
        if self.failures_only:
            with self._counts_lock:
                self._sent[topic] = self._sent.get(topic, 0) + 1
        if headers:
            options["headers"] = list(headers)
        if partition is not None:
            options["partition"] = partition
        if timestamp_ms:
            options["timestamp"] = timestamp_ms
        deadline: float | None = None
        while True:
            try:
                self._producer.produce(topic, value, key, **options)
                break
            except BufferError:
                # Bounded local queue is full: serve delivery reports until there is room.
                if deadline is None:
                    deadline = time.monotonic() + _QUEUE_FULL_WAIT_S
                elif time.monotonic() > deadline:
                    raise DeliveryError(
                        f"producer queue full for {_QUEUE_FULL_WAIT_S:.0f}s: is Kafka at "
                        f"{self.settings.bootstrap_servers} reachable?",
                        topic=topic, key=key, retriable=True,
                    ) from None
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise DeliveryError(f"produce to {topic} refused: {exc.args[0]}", topic=topic,
                                    key=key, retriable=False) from exc
        # Reports are served every _POLL_EVERY sends (and by poll, flush, close): each poll hands
        # the interpreter to any other runnable thread, and a loop of thousands of sends (a batch's
        # deltas) then waited behind the HBase write and the re-ranks at every record.
        self._unpolled += 1
        if self._unpolled >= _POLL_EVERY:
            self._unpolled = 0
            self._producer.poll(0)

    def _report(self, err: KafkaError | None, msg: Message, context: object = None) -> None:
        topic = msg.topic() or ""
        latency_s = msg.latency() or 0.0
        if err is None:
            self.delivered += 1
            children = self._topic_metrics.get(topic)
            if children is None:
                children = (metrics.PRODUCED.labels(topic), metrics.DELIVERY_LATENCY.labels(topic))
                self._topic_metrics[topic] = children
            children[0].inc()
            children[1].observe(latency_s)
            if self._on_delivery is None:
                return  # nobody listens: no report to build
            report = DeliveryReport(topic, msg.key(), msg.partition(), msg.offset(), None, False,
                                    latency_s, context)
        else:
            self.failed += 1
            if self.failures_only:
                with self._counts_lock:
                    self._failed_by_topic[topic] = self._failed_by_topic.get(topic, 0) + 1
            metrics.PRODUCE_FAILED.labels(topic, err.name()).inc()
            report = DeliveryReport(topic, msg.key(), None, None, f"{err.name()}: {err.str()}",
                                    err.retriable(), latency_s, context)
            self.recent_failures.append(report)
            log.warning("delivery to %s failed: %s", topic, report.error)
        if self._on_delivery is not None:
            self._on_delivery(report)

    # --- lifecycle ------------------------------------------------------------------------

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports; returns how many were served."""
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding records; returns how many are still not acknowledged."""
        if not self.failures_only:
            return int(self._producer.flush(timeout))
        with self._counts_lock:
            sent = dict(self._sent)  # what was sent before the flush began
        remaining = int(self._producer.flush(timeout))
        if not remaining:
            self._settle(sent)
        return remaining

    def _settle(self, sent: dict[str, int]) -> None:
        """failures_only, after a flush that left nothing pending: every record in `sent` that did
        not fail was acknowledged. (A failure of a record sent during the flush is subtracted here
        already; the count catches up at the next flush.)"""
        with self._counts_lock:
            for topic, count in sent.items():
                acknowledged = count - self._failed_by_topic.get(topic, 0)
                newly = acknowledged - self._acknowledged.get(topic, 0)
                if newly > 0:
                    self._acknowledged[topic] = acknowledged
                    self.delivered += newly
                    metrics.PRODUCED.labels(topic).inc(newly)

    def purge(self) -> None:
        """Drop every queued record; each is reported as failed (never silently dropped).
        For giving up on an unreachable or refusing cluster."""
        self._producer.purge()
        self._producer.flush(0)

    def pending(self) -> int:
        return len(self._producer)

    def close(self, timeout: float = 30.0) -> None:
        """Flush; records still unacknowledged after `timeout` raise DeliveryError (never silent)."""
        if self._closed:
            return
        self._closed = True
        remaining = self.flush(timeout)
        if remaining:
            raise DeliveryError(
                f"{remaining} records still unacknowledged after {timeout:.0f}s; Kafka at "
                f"{self.settings.bootstrap_servers} may be down",
                topic="*", key=None, retriable=True,
            )

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class PinProducer:
    """The upstream producers' SDK: `create_pin` and `interact`, validated, rate-limited, keyed."""

    def __init__(self, settings: Settings, *, producer: EventProducer | None = None,
                 rate_limiter: RateLimiter | None = None,
                 on_delivery: DeliveryCallback | None = None) -> None:
        self.settings = settings
        self.events = producer if producer is not None else EventProducer(settings, on_delivery=on_delivery)
        self.rate_limiter = (rate_limiter if rate_limiter is not None
                             else RateLimiter(settings.pin_rate_limit_per_minute))

    def create_pin(self, *, pin_id: str, user_id: str, board_id: str, title: str,
                   description: str = "", link: str | None = None,
                   image_bytes: bytes | None = None, image_ref: str | None = None,
                   image_url: str | None = None, tags: Sequence[str] = (),
                   event_id: uuid.UUID | None = None, event_time: datetime | None = None,
                   context: object = None) -> PinCreated:
        """Publish a PinCreated keyed by pin_id. Raises InputError for an invalid pin and
        RateLimitedError (with retry_after) when the user exceeded the pin-creation limit."""
        sources = [s for s in (image_bytes, image_ref, image_url) if s is not None]
        if len(sources) != 1:
            raise InputError("exactly one of image_bytes, image_ref, image_url must be given",
                             field="image")
        if image_bytes is not None and not image_bytes:
            raise InputError("image_bytes is empty", field="image_bytes")
        if image_bytes is not None and len(image_bytes) > self.settings.max_inline_image_bytes:
            raise InputError(
                f"inline image of {len(image_bytes)} bytes exceeds max_inline_image_bytes="
                f"{self.settings.max_inline_image_bytes}; upload it to the blob store and send "
                "image_ref instead", field="image_bytes")
        for name, value in (("pin_id", pin_id), ("user_id", user_id), ("board_id", board_id)):
            if not value:
                raise InputError(f"{name} must not be empty", field=name)
        event = PinCreated(
            event_id=event_id or new_event_id(), event_time=event_time or utc_now(),
            pin_id=pin_id, user_id=user_id, board_id=board_id, title=title,
            description=description, link=link, image_bytes=image_bytes, image_ref=image_ref,
            image_url=image_url, tags=tuple(tags),
        )
        # Encode before taking a rate-limit token, so an invalid pin does not cost one.
        encoded = self.events.codec.encode_event(event)
        retry_after = self.rate_limiter.try_acquire(user_id)
        if retry_after > 0:
            metrics.REFUSED.labels(PINS_CREATED.name, "rate_limited").inc()
            raise RateLimitedError(
                f"user {user_id} exceeded {self.rate_limiter.per_minute} pin creations per "
                f"minute; retry in {retry_after:.1f}s", user_id=user_id, retry_after=retry_after)
        self.events.send_raw(self.settings.topic(PINS_CREATED.name), pin_id.encode(), encoded,
                             context=context)
        return event

    def interact(self, *, user_id: str, pin_id: str, action: InteractionAction | str,
                 session_id: str, board_id: str | None = None,
                 event_id: uuid.UUID | None = None, event_time: datetime | None = None,
                 context: object = None) -> PinInteraction:
        """Publish a PinInteraction keyed by user_id. Raises InputError for an invalid one."""
        try:
            action = InteractionAction(str(action).upper())
        except ValueError as exc:
            valid = ", ".join(a.value.lower() for a in InteractionAction if a.value != "UNKNOWN")
            raise InputError(f"unknown action {action!r}; one of {valid}", field="action") from exc
        if action == InteractionAction.SAVE and not board_id:
            raise InputError("a save needs board_id", field="board_id")
        for name, value in (("user_id", user_id), ("pin_id", pin_id), ("session_id", session_id)):
            if not value:
                raise InputError(f"{name} must not be empty", field=name)
        event = PinInteraction(
            event_id=event_id or new_event_id(), event_time=event_time or utc_now(),
            user_id=user_id, pin_id=pin_id, action=action, session_id=session_id,
            board_id=board_id,
        )
        self.events.send_event(PINS_INTERACTIONS, user_id, event, context=context)
        return event

    def flush(self, timeout: float = 30.0) -> int:
        return self.events.flush(timeout)

    def close(self, timeout: float = 30.0) -> None:
        self.events.close(timeout)

    def __enter__(self) -> PinProducer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
