"""The interaction stage's own consumer against the real Kafka: commits only after a batch is
done, takes a failed batch again, starts an upgrade where the worker group left off, and tells
the stage when partitions leave. The stage is a recording fake of our own interface."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from confluent_kafka import Consumer, TopicPartition

from processors.backoff import FixedBackoff
from streams.deadletter import RawRecord
from streams.errors import SinkError
from streams.groups import group_lag
from streams.interaction_consumer import InteractionConsumer
from streams.producer import PinProducer
from streams.settings import Settings
from streams.topics import PINS_CREATED, PINS_INTERACTIONS
from tests.integration.kafka_fixtures import kafka_settings

pytestmark = pytest.mark.integration
__all__ = ["kafka_settings"]


class RecordingStage:
    """Fails its first `failures` batches, holds every batch until `gate` is set, records the rest."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.failed: list[list[RawRecord]] = []
        self.done: list[RawRecord] = []
        self.forgotten: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.holding = asyncio.Event()

    async def process(self, records: Sequence[RawRecord]) -> None:
        if self.failures:
            self.failures -= 1
            self.failed.append(list(records))
            raise SinkError("store down (test)", dependency="hbase")
        if not self.gate.is_set():
            self.holding.set()
            await self.gate.wait()
        self.done.extend(records)

    def forget_partition(self, stream: str) -> None:
        self.forgotten.append(stream)

    def positions(self) -> set[tuple[str, int, int]]:
        return {(r.topic, r.partition, r.offset) for r in self.done}


def _interact(settings: Settings, count: int, tag: str) -> None:
    with PinProducer(settings) as producer:
        for i in range(count):
            producer.interact(user_id=f"{tag}-u{i % 7}", pin_id=f"{tag}-p{i}", action="click", session_id=tag)


def _lag(settings: Settings, group: str) -> int | None:
    rows = group_lag(settings, group)
    interactions = [r for r in rows if r.topic == settings.topic(PINS_INTERACTIONS.name)]
    return sum(r.lag for r in interactions) if interactions else None


async def _until(check: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_a_batch_is_committed_once_done_and_a_failed_batch_is_taken_again(kafka_settings: Settings) -> None:
    _interact(kafka_settings, 60, "commit")
    group = kafka_settings.graph_group_id

    async def scenario() -> RecordingStage:
        stage = RecordingStage(failures=1)
        stage.gate.clear()
        consumer = InteractionConsumer(kafka_settings, stage, backoff=FixedBackoff(0.05))
        task = asyncio.create_task(consumer.run())
        await asyncio.wait_for(stage.holding.wait(), 30)
        # The first batch failed, the second attempt is held in the stage: nothing committed.
        assert len(stage.failed) == 1 and consumer.retries == 1
        await asyncio.sleep(1.0)
        assert await asyncio.to_thread(_lag, kafka_settings, group) is None
        stage.gate.set()
        await _until(lambda: len(stage.positions()) == 60)
        await _until(lambda: _lag(kafka_settings, group) == 0)
        health = consumer.health()
        assert health["records"] == 60 and health["retries"] == 1 and health["group"] == group
        assert health["partitions"] > 0  # what /healthz shows of the stage
        consumer.stop()
        await asyncio.wait_for(task, 30)
        return stage

    stage = asyncio.run(scenario())
    again = {(r.topic, r.partition, r.offset) for r in stage.failed[0]}
    assert again and again <= stage.positions()  # the failed batch's records, processed after all
    assert len(stage.done) == len(stage.positions())  # and each record done once


def test_an_upgrade_starts_interactions_where_the_worker_group_committed(kafka_settings: Settings) -> None:
    _interact(kafka_settings, 40, "upgrade")
    topic = kafka_settings.topic(PINS_INTERACTIONS.name)
    legacy = Consumer(kafka_settings.kafka_consumer(kafka_settings.worker_group_id))
    partitions = sorted(legacy.list_topics(topic, timeout=30).topics[topic].partitions)
    ends = {p: legacy.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in partitions}
    # The worker's faust group had read half of each partition before the upgrade.
    seeds = {p: end // 2 for p, end in ends.items()}
    legacy.commit(offsets=[TopicPartition(topic, p, seed) for p, seed in seeds.items()], asynchronous=False)
    legacy.close()
    expected = {(topic, p, o) for p, end in ends.items() for o in range(seeds[p], end)}

    async def scenario() -> tuple[RecordingStage, InteractionConsumer]:
        stage = RecordingStage()
        consumer = InteractionConsumer(kafka_settings, stage)
        task = asyncio.create_task(consumer.run())
        await _until(lambda: {pos for pos in stage.positions() if pos[0] == topic} >= expected)
        await asyncio.sleep(1.0)  # and nothing before the seeds comes after
        consumer.stop()
        await asyncio.wait_for(task, 30)
        return stage, consumer

    stage, consumer = asyncio.run(scenario())
    assert {pos for pos in stage.positions() if pos[0] == topic} == expected
    assert consumer.seeded == {(topic, p): seed for p, seed in seeds.items()}
    # Pin creations are not seeded (the worker group still reads them for the embed stage).
    assert all(key[0] != kafka_settings.topic(PINS_CREATED.name) for key in consumer.seeded)


def test_partitions_that_go_to_another_consumer_are_forgotten_by_the_stage(kafka_settings: Settings) -> None:
    _interact(kafka_settings, 20, "rebalance")

    async def scenario() -> tuple[RecordingStage, RecordingStage]:
        first, second = RecordingStage(), RecordingStage()
        one = InteractionConsumer(kafka_settings, first)
        task_one = asyncio.create_task(one.run())
        await _until(lambda: len(first.done) == 20)
        two = InteractionConsumer(kafka_settings, second)
        task_two = asyncio.create_task(two.run())
        await _until(lambda: bool(first.forgotten), timeout_s=60)
        one.stop()
        two.stop()
        await asyncio.wait_for(asyncio.gather(task_one, task_two), 60)
        return first, second

    first, second = asyncio.run(scenario())
    interactions = kafka_settings.topic(PINS_INTERACTIONS.name)
    assert any(stream.startswith(f"{interactions}/") for stream in first.forgotten)
    assert not second.done  # everything was committed by the first before the second joined


def test_a_batch_held_past_the_poll_interval_is_processed_and_the_consumer_rejoins(
        kafka_settings: Settings) -> None:
    # A batch held longer than max.poll.interval.ms (a store down for minutes, say) makes
    # librdkafka leave the group. The loop must finish the batch, rejoin on its next fetch and go
    # on; whatever the commit of the held batch did, every record ends up processed and the
    # group's lag reaches 0 (a batch taken again is harmless: the stage is idempotent).
    _interact(kafka_settings, 30, "held")
    group = kafka_settings.graph_group_id

    async def scenario() -> tuple[RecordingStage, bool]:
        stage = RecordingStage()
        stage.gate.clear()
        consumer = InteractionConsumer(
            kafka_settings, stage, backoff=FixedBackoff(0.05),
            consumer_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                             "max.poll.interval.ms": 7000})
        task = asyncio.create_task(consumer.run())
        await asyncio.wait_for(stage.holding.wait(), 30)
        await asyncio.sleep(10)  # past max.poll.interval.ms: the consumer has left its group
        stage.gate.set()
        await asyncio.to_thread(_interact, kafka_settings, 10, "after")  # taken in after rejoining
        await _until(lambda: len(stage.positions()) == 40, 60)
        await _until(lambda: _lag(kafka_settings, group) == 0, 60)
        alive = not task.done()
        consumer.stop()
        await asyncio.wait_for(task, 30)
        return stage, alive

    stage, alive = asyncio.run(scenario())
    assert alive  # the loop went on after the group let it go
    assert len(stage.positions()) == 40 and len(stage.done) >= 40


def test_a_commit_interval_holds_commits_back_while_busy_and_commits_them_when_idle(
        kafka_settings: Settings) -> None:
    _interact(kafka_settings, 100, "interval")
    group = kafka_settings.graph_group_id
    every_batch = f"{group}-every-batch"

    async def run(consumer: InteractionConsumer, stage: RecordingStage, group_id: str) -> None:
        task = asyncio.create_task(consumer.run())
        await _until(lambda: len(stage.positions()) == 100)
        await _until(lambda: _lag(kafka_settings, group_id) == 0)  # committed once it went idle
        consumer.stop()
        await asyncio.wait_for(task, 30)

    held, each = RecordingStage(), RecordingStage()
    spaced = InteractionConsumer(kafka_settings, held, max_batch=10, commit_interval_s=600)
    asyncio.run(run(spaced, held, group))
    plain = InteractionConsumer(kafka_settings, each, max_batch=10, group_id=every_batch)
    asyncio.run(run(plain, each, every_batch))
    assert spaced.batches >= 10 and plain.batches >= 10
    # the first batch's, the one when idle, and two at the end (closing, and the partitions'
    # revocation): not one per batch
    assert spaced.commits <= 4 < spaced.batches
    assert plain.commits >= plain.batches  # one per batch, and the one at the end
