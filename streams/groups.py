"""Consumer groups for operators: lag per partition, and offset resets by time (dry run first)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from streams import metrics
from streams.errors import PinstreamError
from streams.offsets import Position, partitions_of, plain_consumer, resolve, watermarks
from streams.settings import Settings
from streams.topics import PINS_CREATED, PINS_INTERACTIONS

TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed here
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed if self.committed is not None else 0)


@dataclass(frozen=True)
class OffsetMove:
    topic: str
    partition: int
    current: int | None
    target: int


def worker_groups(settings: Settings) -> dict[str, list[str]]:
    """The worker's consumer groups, each with the topics it reads: the faust group (pin
    creations, for the embed stage) and the interaction stage's own (interactions, and pin
    creations for pin->board edges). A worker has caught up when both have."""
    created = settings.topic(PINS_CREATED.name)
    return {settings.worker_group_id: [created],
            settings.graph_group_id: [settings.topic(PINS_INTERACTIONS.name), created]}


def list_groups(settings: Settings) -> list[str]:
    admin = AdminClient(settings.kafka_common())
    result = admin.list_consumer_groups(request_timeout=TIMEOUT_S).result(timeout=TIMEOUT_S)
    return sorted(g.group_id for g in result.valid)


def committed_offsets(admin: AdminClient, group: str, *, timeout_s: float = TIMEOUT_S,
                      wait_s: float = TIMEOUT_S) -> dict[tuple[str, int], int]:
    """The offsets `group` has committed, by (topic, partition), read without joining it;
    `timeout_s` bounds the request, `wait_s` the wait for its answer."""
    request = [ConsumerGroupTopicPartitions(group)]
    try:
        future = admin.list_consumer_group_offsets(request, request_timeout=timeout_s)[group]
        answer = future.result(timeout=wait_s)
    except KafkaException as exc:
        raise PinstreamError(f"group {group}: {exc.args[0]}") from exc
    return {(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions or []
            if tp.offset >= 0}


def group_lag(settings: Settings, group: str) -> list[PartitionLag]:
    """Lag of `group` on every partition of every topic it has committed on; sets the metric."""
    admin = AdminClient(settings.kafka_common())
    committed = committed_offsets(admin, group)
    topics = sorted({t for t, _ in committed})
    consumer = plain_consumer(settings, "lag")
    rows: list[PartitionLag] = []
    try:
        for topic in topics:
            for p in partitions_of(consumer, topic):
                end = watermarks(consumer, topic, p).high
                row = PartitionLag(topic, p, committed.get((topic, p)), end)
                metrics.CONSUMER_LAG.labels(group, topic, str(p)).set(row.lag)
                rows.append(row)
    finally:
        consumer.close()
    return rows


def _group_is_empty(admin: AdminClient, group: str) -> tuple[bool, str]:
    future = admin.describe_consumer_groups([group], request_timeout=TIMEOUT_S)[group]
    description = future.result(timeout=TIMEOUT_S)
    state = str(getattr(description.state, "name", description.state))
    return (not description.members, state)


def plan_reset(settings: Settings, group: str, to: datetime,
               topics: list[str] | None = None) -> list[OffsetMove]:
    """Where each partition's committed offset would move to reach the first record at/after `to`."""
    admin = AdminClient(settings.kafka_common())
    committed = committed_offsets(admin, group)
    chosen = topics or sorted({t for t, _ in committed})
    if not chosen:
        raise PinstreamError(f"group {group} has no committed offsets; name topics with --topic")
    consumer = plain_consumer(settings, "reset-plan")
    moves = []
    try:
        for topic in chosen:
            for p in partitions_of(consumer, topic):
                target = resolve(consumer, topic, p, Position(time=to), watermarks(consumer, topic, p))
                moves.append(OffsetMove(topic, p, committed.get((topic, p)), target))
    finally:
        consumer.close()
    return moves


def execute_reset(settings: Settings, group: str, moves: list[OffsetMove]) -> None:
    """Commit the planned offsets for `group`; refused while the group has active members."""
    admin = AdminClient(settings.kafka_common())
    empty, state = _group_is_empty(admin, group)
    if not empty:
        raise PinstreamError(
            f"group {group} is {state} with active members: stop its workers first, then rerun "
            "the reset (offsets of a live group would be overwritten by its next commit)")
    request = [ConsumerGroupTopicPartitions(
        group, [TopicPartition(m.topic, m.partition, m.target) for m in moves])]
    try:
        admin.alter_consumer_group_offsets(request, request_timeout=TIMEOUT_S)[group].result(
            timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise PinstreamError(f"reset of group {group} failed: {exc.args[0]}") from exc
