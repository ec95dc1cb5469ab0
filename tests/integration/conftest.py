"""Integration tests run against the real local stack; this guard fails them, loudly and once,
when it is not up, instead of letting each test time out on a refused connection.

Fixtures: `stack_settings`, `local_stack` (autouse), `kafka_bootstrap`, `redis_url`,
`hbase_address`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from streams.dlq import DeadLetter, read_dead_letters
from streams.errors import StackError
from streams.settings import Settings, load_settings
from streams.stack import hbase, kafka, redis


@dataclass(frozen=True)
class StackEndpoints:
    """Where the integration tests find the servers (from the settings, so env overrides apply)."""

    kafka_bootstrap: str
    redis_url: str
    hbase_address: tuple[str, int]


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session", autouse=True)
def local_stack(stack_settings: Settings) -> StackEndpoints:
    """Every service answers a protocol round trip, or every integration test fails with how to fix it."""
    endpoints = StackEndpoints(
        kafka_bootstrap=stack_settings.bootstrap_servers,
        redis_url=stack_settings.redis_url,
        hbase_address=(stack_settings.hbase_host, stack_settings.hbase_port),
    )
    host, port = endpoints.hbase_address
    checks = {
        f"kafka at {endpoints.kafka_bootstrap}": lambda: kafka.probe(stack_settings.kafka_common()),
        f"redis at {endpoints.redis_url}": lambda: redis.probe(endpoints.redis_url),
        f"hbase thrift at {host}:{port}": lambda: hbase.probe_thrift(host, port),
    }
    problems = []
    for what, check in checks.items():
        try:
            check()
        except StackError as exc:
            problems.append(f"  - {what}: {exc}")
    if problems:
        pytest.fail(
            "the local stack is not up, integration tests need it:\n"
            + "\n".join(problems)
            + "\nstart it with `pinstream stack up` (see `pinstream stack status`), "
            "or run everything with ./scripts/test.sh",
            pytrace=False,
        )
    return endpoints


@pytest.fixture(scope="session")
def kafka_bootstrap(local_stack: StackEndpoints) -> str:
    return local_stack.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(local_stack: StackEndpoints) -> str:
    return local_stack.redis_url


@pytest.fixture(scope="session")
def hbase_address(local_stack: StackEndpoints) -> tuple[str, int]:
    return local_stack.hbase_address


DeadLetters = Callable[[Settings, int, float], dict[str, DeadLetter]]


@pytest.fixture
def dead_letters() -> DeadLetters:
    """Waits (up to `timeout_s`) until the namespace's dead-letter topic holds `expected` letters,
    read with the `pinstream dlq` reader; returns them by key (the last one of a key wins)."""

    def wait(settings: Settings, expected: int, timeout_s: float) -> dict[str, DeadLetter]:
        deadline = time.monotonic() + timeout_s
        while True:
            letters = {(letter.key or b"").decode(): letter for letter in read_dead_letters(settings)}
            if len(letters) >= expected or time.monotonic() > deadline:
                return letters
            time.sleep(0.5)

    return wait
