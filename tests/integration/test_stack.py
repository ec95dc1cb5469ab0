"""The local stack itself, against its real servers: idempotent up, status, single-service
restarts (what fault drills do) and a round trip through each protocol. Every test leaves the
stack as it found it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import happybase
import pytest
import redis as redis_client
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.errors import StackError
from streams.settings import Settings
from streams.stack import Action, ServiceState, down, status, up
from streams.stack import hbase as stack_hbase
from streams.stack import kafka as stack_kafka

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def settings(stack_settings: Settings) -> Settings:
    """The stack's settings with stack_dir anchored at the repository, whatever the cwd."""
    if stack_settings.stack_dir.is_absolute():
        return stack_settings
    return stack_settings.model_copy(update={"stack_dir": REPO_ROOT / stack_settings.stack_dir})


@pytest.fixture
def restore_stack(settings: Settings) -> Iterator[None]:
    """Bring back, after the test, every service that was healthy before it."""
    healthy = [row.name for row in status(settings=settings) if row.healthy]
    yield
    now_healthy = {row.name for row in status(healthy, settings=settings) if row.healthy}
    missing = [name for name in healthy if name not in now_healthy]
    if missing:
        up(missing, settings=settings)


def test_status_reports_every_service_healthy(settings: Settings) -> None:
    rows = status(settings=settings)

    assert [row.name for row in rows] == ["kafka", "redis", "hbase", "thrift"]
    for row in rows:
        assert row.healthy, f"{row.name}: {row.state} ({row.detail})"
        assert row.pid is not None
    assert "metadata ok" in rows[0].detail
    assert "PING ok" in rows[1].detail
    assert "thrift round trip ok" in rows[3].detail


def test_up_again_is_a_no_op_with_the_same_pids(settings: Settings) -> None:
    before = {row.name: row.pid for row in status(settings=settings)}

    changes = up(settings=settings)

    assert {change.action for change in changes} <= {Action.ALREADY_RUNNING, Action.REUSED}
    assert {change.name: change.status.pid for change in changes} == before


def test_cli_status_prints_the_table_and_exits_zero(settings: Settings) -> None:
    env = os.environ | {"PINSTREAM_STACK_DIR": str(settings.stack_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "stack", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("kafka", "redis", "hbase", "thrift"):
        assert name in result.stdout
    assert "stopped" not in result.stdout


@pytest.mark.usefixtures("restore_stack")
def test_thrift_alone_stops_and_starts_again(settings: Settings, hbase_address: tuple[str, int]) -> None:
    master_pid = status(["hbase"], settings=settings)[0].pid

    stopped = down(["thrift"], settings=settings)
    with pytest.raises(StackError):
        stack_hbase.probe_thrift(*hbase_address)
    started = up(["thrift"], settings=settings)

    assert [(c.name, c.action) for c in stopped] == [("thrift", Action.STOPPED)]
    assert [(c.name, c.action) for c in started] == [
        ("hbase", Action.ALREADY_RUNNING),
        ("thrift", Action.STARTED),
    ]
    assert started[0].status.pid == master_pid
    assert started[1].status.state is ServiceState.RUNNING
    _hbase_round_trip(*hbase_address)


@pytest.mark.usefixtures("restore_stack")
def test_redis_alone_stops_and_starts_again(settings: Settings, redis_url: str) -> None:
    if status(["redis"], settings=settings)[0].state is ServiceState.EXTERNAL:
        pytest.fail("redis on 6379 was not started by the stack; stop it to test restarts")

    down(["redis"], settings=settings)
    with pytest.raises(redis_client.ConnectionError):
        redis_client.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
    started = up(["redis"], settings=settings)

    assert [(c.name, c.action) for c in started] == [("redis", Action.STARTED)]
    client = redis_client.Redis.from_url(redis_url)
    key = f"stack-test:{uuid.uuid4().hex}"
    client.set(key, b"value", ex=60)
    assert client.get(key) == b"value"
    client.delete(key)
    client.close()


def test_kafka_topic_round_trip(settings: Settings) -> None:
    topic = f"stack-test-{uuid.uuid4().hex[:12]}"
    admin = AdminClient(settings.kafka_common())
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    try:
        producer = Producer(settings.kafka_producer())
        producer.produce(topic, key=b"k", value=b"hello")
        assert producer.flush(30) == 0
        consumer = Consumer(settings.kafka_consumer(f"stack-test-{uuid.uuid4().hex[:8]}"))
        consumer.subscribe([topic])
        message = None
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                break
        consumer.close()
        assert message is not None and message.error() is None
        assert (message.key(), message.value()) == (b"k", b"hello")
    finally:
        admin.delete_topics([topic])[topic].result(30)


def test_kafka_sasl_listener_accepts_the_stack_user_only() -> None:
    sasl = {
        "bootstrap.servers": stack_kafka.SASL_BOOTSTRAP,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": stack_kafka.SASL_USERNAME,
    }

    assert "metadata ok" in stack_kafka.probe(sasl | {"sasl.password": stack_kafka.SASL_PASSWORD})
    with pytest.raises(StackError):
        stack_kafka.probe(sasl | {"sasl.password": "not-the-password"})


def test_hbase_round_trip(hbase_address: tuple[str, int]) -> None:
    _hbase_round_trip(*hbase_address)


def _hbase_round_trip(host: str, port: int) -> None:
    name = f"stack_test_{uuid.uuid4().hex[:8]}"
    connection = happybase.Connection(host, port, timeout=30_000)
    try:
        connection.create_table(name, {"cf": {}})
        table = connection.table(name)
        table.put(b"row-1", {b"cf:a": b"1"})
        assert table.row(b"row-1") == {b"cf:a": b"1"}
        assert name.encode() in connection.tables()
    finally:
        if name.encode() in connection.tables():
            connection.delete_table(name, disable=True)
        connection.close()
