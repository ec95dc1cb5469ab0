"""`pinstream bench roundtrip`: produce + consume through the local broker, our SDK against a bare
confluent-kafka loop moving the same encoded bytes (the ceiling), repetitions interleaved."""

from __future__ import annotations

import io
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from fastavro import schemaless_reader

from streams.bench.report import Series, machine_info, ratio
from streams.codec import AvroCodec
from streams.consumer import EventConsumer
from streams.contracts import contracts
from streams.errors import PinstreamError
from streams.events import InteractionAction, PinInteraction
from streams.producer import EventProducer, PinProducer
from streams.ratelimit import RateLimiter
from streams.settings import Settings
from streams.topics import PINS_INTERACTIONS

BARE = "bare confluent-kafka (bytes)"
BARE_DECODED = "bare confluent-kafka + raw fastavro decode"
OURS_RAW = "SDK: send_raw + EventConsumer (typed)"
OURS_FULL = "SDK: PinProducer.interact + EventConsumer (typed)"
PATHS = (BARE, BARE_DECODED, OURS_RAW, OURS_FULL)
GOAL_RATIO = 0.8
PARTITIONS = 6
_CONSUME_DEADLINE_S = 120.0


@dataclass
class RoundtripResult:
    events: int
    repeat: int
    produce: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PATHS})
    consume: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PATHS})

    def total(self, path: str) -> Series:
        rates = [self.events / (p + c) for p, c in zip(self.produce[path], self.consume[path], strict=True)]
        return Series(path, "events/s", tuple(rates))

    def phase(self, path: str, phase: str) -> Series:
        seconds = (self.produce if phase == "produce" else self.consume)[path]
        return Series(f"{path} {phase}", "events/s", tuple(self.events / s for s in seconds))

    def ratio(self, path: str, ceiling: str = BARE) -> float:
        return ratio(self.total(path), self.total(ceiling))

    def to_json(self, command: str) -> dict[str, Any]:
        return {
            "bench": "roundtrip", "command": command, "events": self.events, "repeat": self.repeat,
            "goal_ratio": GOAL_RATIO, "machine": machine_info(["confluent-kafka", "fastavro"]),
            "paths": {p: {"total": self.total(p).to_json(),
                          "produce": self.phase(p, "produce").to_json(),
                          "consume": self.phase(p, "consume").to_json(),
                          "ratio_vs_bare": self.ratio(p),
                          "ratio_vs_bare_decoded": self.ratio(p, BARE_DECODED)} for p in PATHS},
        }


def _workload(events: int, seed: int) -> list[PinInteraction]:
    rng = random.Random(seed)
    actions = [a for a in InteractionAction if a != InteractionAction.UNKNOWN]
    out = []
    for _ in range(events):
        action = rng.choice(actions)
        out.append(PinInteraction(
            event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            user_id=f"u{rng.randrange(5000):07d}", pin_id=f"p{rng.randrange(10**6):08d}",
            action=action, session_id=f"s{rng.randrange(10**6)}",
            board_id=f"b{rng.randrange(10**5)}" if action == InteractionAction.SAVE else None))
    return out


class _Topics:
    def __init__(self, settings: Settings) -> None:
        self.admin = AdminClient(settings.kafka_common())
        self.created: list[str] = []

    def new(self) -> tuple[str, str]:
        """A fresh interactions topic under a private prefix: (prefix, topic name)."""
        prefix = f"bench{uuid.uuid4().hex[:10]}."
        name = f"{prefix}{PINS_INTERACTIONS.name}"
        for future in self.admin.create_topics([NewTopic(name, PARTITIONS, 1)]).values():
            future.result(timeout=30)
        self.created.append(name)
        return prefix, name

    def drop(self) -> None:
        if self.created:
            for future in self.admin.delete_topics(self.created, operation_timeout=30).values():
                future.result(timeout=30)


def _bare_produce(settings: Settings, topic: str, keyed: list[tuple[bytes, bytes]]) -> float:
    producer = Producer(settings.kafka_producer())
    started = time.perf_counter()
    for key, value in keyed:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60):
        raise PinstreamError("bare producer: records left unacknowledged")
    return time.perf_counter() - started


def _bare_consume(settings: Settings, topic: str, events: int, decode: Any = None) -> float:
    """Consume `events` records; `decode(value)` is applied to each when given."""
    # Subscribed with a fresh group, as the SDK consumer is: both pay the same group join.
    consumer = Consumer(settings.kafka_consumer(f"bench-{uuid.uuid4().hex[:8]}"))
    consumer.subscribe([topic])
    seen = 0
    started = time.perf_counter()
    while seen < events:
        for msg in consumer.consume(1000, 1.0):
            if msg.error() is None:
                if decode is not None:
                    decode(msg.value())
                seen += 1
        if time.perf_counter() - started > _CONSUME_DEADLINE_S:
            raise PinstreamError(f"bare consumer: {seen}/{events} after {_CONSUME_DEADLINE_S:.0f}s")
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def _ours_produce_raw(settings: Settings, topic: str, keyed: list[tuple[bytes, bytes]]) -> float:
    producer = EventProducer(settings)
    started = time.perf_counter()
    for key, value in keyed:
        producer.send_raw(topic, key, value)
    producer.close(60)
    return time.perf_counter() - started


def _ours_produce_full(settings: Settings, events: list[PinInteraction]) -> float:
    producer = PinProducer(settings, rate_limiter=RateLimiter(0))
    started = time.perf_counter()
    for e in events:
        producer.interact(user_id=e.user_id, pin_id=e.pin_id, action=e.action,
                          session_id=e.session_id, board_id=e.board_id, event_id=e.event_id,
                          event_time=e.event_time)
    producer.close(60)
    return time.perf_counter() - started


def _ours_consume(settings: Settings, topic: str, events: int) -> float:
    consumer = EventConsumer(settings, [topic], group_id=f"bench-{uuid.uuid4().hex[:8]}")
    seen = 0
    started = time.perf_counter()
    for _ in consumer.iter(max_records=events, idle_timeout=_CONSUME_DEADLINE_S):
        seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    if seen < events:
        raise PinstreamError(f"SDK consumer: {seen}/{events}")
    return elapsed


def run_roundtrip_bench(settings: Settings, events: int, repeat: int, seed: int,
                        progress: Callable[[int], None] | None = None) -> RoundtripResult:
    workload = _workload(events, seed)
    codec = AvroCodec()
    keyed = [(e.user_id.encode(), codec.encode_event(e)) for e in workload]
    result = RoundtripResult(events, repeat)
    parsed = contracts().latest("PinInteraction").parsed

    def raw_decoder(value: bytes) -> object:
        # The same body fastavro reads for us, past the 10-byte single-object header.
        return schemaless_reader(io.BytesIO(value[10:]), parsed, None)

    topics = _Topics(settings)
    try:
        for rep in range(repeat + 1):  # repetition 0 warms up the broker and the clients
            order = list(PATHS)
            random.Random(seed + rep).shuffle(order)  # no path always runs on a warmer broker
            for path in order:
                prefix, topic = topics.new()
                scoped = settings.model_copy(update={"topic_prefix": prefix})
                if path in (BARE, BARE_DECODED):
                    produced = _bare_produce(settings, topic, keyed)
                    consumed = _bare_consume(settings, topic, events,
                                             raw_decoder if path == BARE_DECODED else None)
                elif path == OURS_RAW:
                    produced = _ours_produce_raw(settings, topic, keyed)
                    consumed = _ours_consume(settings, topic, events)
                else:
                    produced = _ours_produce_full(scoped, workload)
                    consumed = _ours_consume(settings, topic, events)
                if rep:
                    result.produce[path].append(produced)
                    result.consume[path].append(consumed)
            if progress is not None:
                progress(rep)
    finally:
        topics.drop()
    return result
