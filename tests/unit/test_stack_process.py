"""Process handling of the local stack, with harmless local processes instead of servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.stack import process
from streams.stack.model import Launch
from streams.stack.tools import require_tool


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_pid_file_round_trip(tmp_path: Path) -> None:
    pid_file = tmp_path / "svc" / "svc.pid"

    assert process.read_pid(pid_file) is None
    process.write_pid(pid_file, 4242)
    assert process.read_pid(pid_file) == 4242
    process.remove_pid(pid_file)
    assert not pid_file.exists()


def test_garbage_in_pid_file_reads_as_none(tmp_path: Path) -> None:
    pid_file = tmp_path / "x.pid"
    pid_file.write_text("not a pid\n")

    assert process.read_pid(pid_file) is None


def test_port_owner_names_the_listening_process(listening_port: int) -> None:
    owner = process.port_owner(listening_port)

    assert owner is not None
    assert owner.pid == os.getpid()
    assert f"pid {os.getpid()}" in owner.describe()
    assert process.port_open(listening_port)


def test_free_port_has_no_owner() -> None:
    port = _free_port()

    assert process.port_owner(port) is None
    assert not process.port_open(port)


def test_spawn_writes_pid_and_log_and_terminate_stops_it(tmp_path: Path) -> None:
    pid_file, log_file = tmp_path / "svc.pid", tmp_path / "logs" / "svc.log"
    launch = Launch(
        argv=(sys.executable, "-c", "import time; print('hello from child', flush=True); time.sleep(60)"),
        cwd=tmp_path,
    )

    pid = process.spawn(launch, log_file, pid_file)
    try:
        assert process.read_pid(pid_file) == pid
        assert process.owned_pid(pid_file, "hello from child") == pid
        assert process.owned_pid(pid_file, "some other server") is None
        deadline = time.monotonic() + 10
        while "hello from child\n" not in log_file.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.log_tail(log_file).endswith("hello from child")
    finally:
        assert process.terminate(pid, timeout=10) is True
    assert not process.is_alive(pid)


def test_terminate_escalates_to_sigkill(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ar' + 'med', flush=True); time.sleep(60)"
    )
    log_file = tmp_path / "stubborn.log"
    pid = process.spawn(Launch((sys.executable, "-c", code), tmp_path), log_file, tmp_path / "s.pid")
    deadline = time.monotonic() + 10
    # The start marker repeats the command line: wait for the printed word, not the source.
    while "armed\n" not in log_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)

    assert process.terminate(pid, timeout=0.5) is False
    assert not process.is_alive(pid)


def test_log_tail_starts_at_the_last_start_marker(tmp_path: Path) -> None:
    log_file = tmp_path / "svc.log"
    old_run = "\n".join(f"old {i}" for i in range(100))
    new_run = "\n".join(f"new {i}" for i in range(60))
    log_file.write_text(f"{process.START_MARKER} one\n{old_run}\n{process.START_MARKER} two\n{new_run}\n")

    tail = process.log_tail(log_file, lines=40).splitlines()

    assert len(tail) == 40
    assert tail[-1] == "new 59"
    assert all(line.startswith("new") for line in tail)
    assert process.log_tail(log_file, lines=100).splitlines()[0].startswith(process.START_MARKER)
    assert process.log_tail(tmp_path / "missing.log") == ""


def test_missing_tool_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streams.stack.tools.shutil.which", lambda name: None)

    with pytest.raises(ConfigError, match="apt-get install -y openjdk-17-jre-headless"):
        require_tool("java")
    with pytest.raises(ConfigError, match="apt-get install -y redis-server"):
        require_tool("redis-server")


def test_short_command_shows_a_jvm_by_its_main_class() -> None:
    argv = [
        "/usr/bin/java",
        "-Xmx512m",
        "-XX:+UseG1GC",
        "-cp",
        "/lib/*",
        "kafka.Kafka",
        "/x/server.properties",
    ]

    assert process.short_command(argv) == "java kafka.Kafka /x/server.properties"
    assert process.short_command(["java", "-Xmx1g", "-jar", "app.jar", "run"]) == "java -jar app.jar run"
    assert process.short_command(["redis-server", "127.0.0.1:6379"]) == "redis-server 127.0.0.1:6379"


def test_process_age_counts_from_the_process_start() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(1.2)
        age = process.process_age_s(child.pid)
        own = process.process_age_s(os.getpid())
        assert age is not None and own is not None
        assert 1.0 <= age < 10.0 and own > age
    finally:
        child.kill()
        child.wait()
    assert process.process_age_s(child.pid) is None  # gone


def test_process_cpu_counts_every_threads_work_and_nothing_of_a_sleeper() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        busy_until = time.process_time() + 0.3
        while time.process_time() < busy_until:
            pass
        own = process.process_cpu_s(os.getpid())
        idle = process.process_cpu_s(child.pid)
        assert own is not None and own >= 0.3
        assert idle is not None and idle < 0.3  # an interpreter's start-up, then sleep
    finally:
        child.kill()
        child.wait()
    assert process.process_cpu_s(child.pid) is None  # gone
