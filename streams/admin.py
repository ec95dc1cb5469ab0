"""Topic administration: apply the catalogue idempotently, and describe topics with their offsets."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from streams.errors import ConfigError, PinstreamError
from streams.settings import Settings
from streams.topics import CATALOGUE, TopicSpec

ADMIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class TopicChange:
    topic: str
    action: str  # "created", "unchanged", "configs updated", "partitions increased", "refused"
    detail: str = ""


@dataclass(frozen=True)
class TopicInfo:
    topic: str
    partitions: int
    end_offsets: tuple[int, ...]
    cleanup_policy: str

    @property
    def total_records(self) -> int:
        return sum(self.end_offsets)


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka_common())


def _wait(futures: Mapping[Any, Future[Any]], what: str) -> None:
    for key, future in futures.items():
        try:
            future.result(timeout=ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            raise PinstreamError(f"{what} {key}: {exc.args[0]}") from exc


def apply_topics(settings: Settings, specs: Iterable[TopicSpec] = CATALOGUE) -> list[TopicChange]:
    """Create missing topics and bring configs and partition counts in line; a no-op when in sync.

    Partition counts only grow (shrinking would break key -> partition mapping): a spec asking
    for fewer partitions than a topic has is reported as "refused".
    """
    admin = admin_client(settings)
    specs = list(specs)
    try:
        metadata = admin.list_topics(timeout=ADMIN_TIMEOUT_S)
    except KafkaException as exc:
        raise PinstreamError(
            f"Kafka at {settings.bootstrap_servers} unreachable: {exc.args[0]}; "
            "start it with `pinstream stack up kafka`"
        ) from exc
    changes: list[TopicChange] = []
    to_create = [s for s in specs if settings.topic(s.name) not in metadata.topics]
    if to_create:
        new = [
            NewTopic(settings.topic(s.name), num_partitions=s.partitions, replication_factor=1,
                     config=s.config())
            for s in to_create
        ]
        _wait(admin.create_topics(new, operation_timeout=ADMIN_TIMEOUT_S), "create topic")
        _await_configs(admin, {settings.topic(s.name): s.config() for s in to_create})
        changes += [TopicChange(settings.topic(s.name), "created",
                                f"{s.partitions} partitions, {s.cleanup_policy}") for s in to_create]
    existing = [s for s in specs if s not in to_create]
    for spec in existing:
        changes.append(_sync_existing(admin, settings, spec, metadata.topics[settings.topic(spec.name)]))
    return changes


def _await_configs(admin: AdminClient, wanted: dict[str, dict[str, str]]) -> None:
    """Return once every broker-side config of the new topics is visible: the broker applies the
    controller's records asynchronously, and a client acting at once would see stale settings."""
    deadline = time.monotonic() + ADMIN_TIMEOUT_S
    pending = dict(wanted)
    while pending:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in pending]
        for resource, future in admin.describe_configs(resources).items():
            try:
                current = future.result(timeout=ADMIN_TIMEOUT_S)
            except KafkaException:
                continue  # not known to the broker yet
            if all(k in current and current[k].value == v for k, v in pending[resource.name].items()):
                pending.pop(resource.name)
        if pending and time.monotonic() > deadline:
            raise PinstreamError(f"topics created but not visible after {ADMIN_TIMEOUT_S:.0f}s: "
                                 f"{', '.join(sorted(pending))}")
        if pending:
            time.sleep(0.1)


def _sync_existing(admin: AdminClient, settings: Settings, spec: TopicSpec, meta: object) -> TopicChange:
    name = settings.topic(spec.name)
    details: list[str] = []
    have_partitions = len(meta.partitions)  # type: ignore[attr-defined]
    if have_partitions > spec.partitions:
        return TopicChange(name, "refused",
                           f"has {have_partitions} partitions, catalogue says {spec.partitions}; "
                           "partitions never shrink: recreate the topic to reduce them")
    if have_partitions < spec.partitions:
        _wait(admin.create_partitions([NewPartitions(name, spec.partitions)]), "grow partitions of")
        details.append(f"partitions {have_partitions} -> {spec.partitions}")
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    current = admin.describe_configs([resource])[resource].result(timeout=ADMIN_TIMEOUT_S)
    wanted = spec.config()
    drift = {k: v for k, v in wanted.items() if k not in current or current[k].value != v}
    if drift:
        resource = ConfigResource(
            ConfigResource.Type.TOPIC, name,
            incremental_configs=[ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                                 for k, v in drift.items()],
        )
        _wait(admin.incremental_alter_configs([resource]), "alter configs of")
        _await_configs(admin, {name: drift})
        details.append("configs " + ", ".join(f"{k}={v}" for k, v in sorted(drift.items())))
    if not details:
        return TopicChange(name, "unchanged")
    return TopicChange(name, "updated", "; ".join(details))


def describe_topics(settings: Settings, names: Iterable[str] | None = None) -> list[TopicInfo]:
    """Partition counts, end offsets and cleanup policy of the given (default: catalogue) topics."""
    admin = admin_client(settings)
    wanted = list(names) if names is not None else [settings.topic(s.name) for s in CATALOGUE]
    metadata = admin.list_topics(timeout=ADMIN_TIMEOUT_S)
    missing = [n for n in wanted if n not in metadata.topics]
    if missing:
        raise ConfigError(f"topics not found: {', '.join(missing)}; run `pinstream topics apply`")
    consumer = Consumer(settings.kafka_consumer("pinstream-describe", **{"enable.auto.commit": False}))
    try:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in wanted]
        configs = {r.name: f.result(timeout=ADMIN_TIMEOUT_S)
                   for r, f in admin.describe_configs(resources).items()}
        infos = []
        for name in wanted:
            parts = sorted(metadata.topics[name].partitions)
            ends = tuple(
                consumer.get_watermark_offsets(TopicPartition(name, p), timeout=ADMIN_TIMEOUT_S)[1]
                for p in parts
            )
            policy = configs[name]["cleanup.policy"].value if "cleanup.policy" in configs[name] else "?"
            infos.append(TopicInfo(name, len(parts), ends, policy))
        return infos
    finally:
        consumer.close()
