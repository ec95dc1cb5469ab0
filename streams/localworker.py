"""A `pinstream worker` in a child process on a private namespace (topic prefix, HBase table
prefix, blob and index folders, web port), and a private Redis for it when it needs one: what
benchmarks and integration tests run against.
Entry-point support only: nothing in the pipeline imports it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import happybase
import httpx
from confluent_kafka.admin import AdminClient

from streams.admin import apply_topics
from streams.errors import PinstreamError, StackError
from streams.settings import Settings, load_settings
from streams.stack import redis as redis_stack
from streams.stack.tools import require_tool
from streams.topics import CATALOGUE

READY_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRedis:
    """A private redis-server on a free port (no persistence), which a test may stop and start
    again on the same port while the stack's Redis stays up."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = redis_stack.command(require_tool("redis-server"), str(self.dir), self.port)
        self.process = subprocess.Popen(argv, stdout=(self.dir / "redis.log").open("ab"),
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                redis_stack.probe(self.url)
                return
            except StackError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> LocalRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalWorker:
    """Start with `start()` (returns once /healthz says ready), `stop()`, `cleanup()` the namespace."""

    def __init__(self, workdir: Path, **overrides: Any) -> None:
        tag = uuid.uuid4().hex[:10]
        workdir.mkdir(parents=True, exist_ok=True)
        values: dict[str, str] = {
            "topic_prefix": f"t{tag}.", "blob_dir": str(workdir / "blobs"),
            "index_dir": str(workdir / "index"), "hbase_table_prefix": f"t{tag}",
            "web_port": str(free_port()), "metrics_port": "0",
        } | {k: str(v) for k, v in overrides.items()}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PINSTREAM_")}
        self.env |= {f"PINSTREAM_{k.upper()}": v for k, v in values.items()}
        self.settings: Settings = load_settings(None, **values)
        self.log = workdir / "worker.log"
        self.process: subprocess.Popen[bytes] | None = None
        apply_topics(self.settings)

    @property
    def url(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    def start(self) -> None:
        self.wait_ready(self.spawn())

    def spawn(self) -> subprocess.Popen[bytes]:
        """Launch the worker process (appending to its log) without waiting for it."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "info"], env=self.env,
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        return self.process

    def wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        """Return once /healthz answers 200; raise if `process` exits or is not ready in time."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise PinstreamError(f"worker exited with {process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise PinstreamError(f"worker not ready after {READY_TIMEOUT_S:.0f}s:\n{self.log_tail()}")

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/healthz", timeout=5).json())

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM (in-flight batches finish, the index snapshot is saved), then SIGKILL at 60 s."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def cleanup(self) -> None:
        """Delete the namespace's topics and HBase tables."""
        admin = AdminClient(self.settings.kafka_common())
        for future in admin.delete_topics([self.settings.topic(s.name) for s in CATALOGUE]).values():
            future.result(timeout=30)
        connection = happybase.Connection(self.settings.hbase_host, self.settings.hbase_port,
                                          table_prefix=self.settings.hbase_table_prefix)
        try:
            for table in connection.tables():  # listed without the prefix
                connection.delete_table(table.decode(), disable=True)
        finally:
            connection.close()

    def __enter__(self) -> LocalWorker:
        try:
            self.start()
        except BaseException:
            # A worker that never got ready must not outlive the failure (it would keep its CPU,
            # its consumer groups and its live patch process).
            self.stop()
            self.cleanup()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        self.cleanup()
