"""`up`, `down` and `status` driven against tiny local HTTP servers standing in for the real ones."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from streams.cli import cli
from streams.errors import ConfigError, StackError
from streams.settings import Settings, get_settings, load_settings
from streams.stack import Action, ServiceState, down, manager, status, up
from streams.stack.model import Launch, Layout, Progress, ServiceSpec


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _http_probe(port: int) -> str:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0)
    except httpx.HTTPError as exc:
        raise StackError(f"no answer on {port}: {exc}", service="web") from exc
    return f"HTTP {response.status_code}"


def _http_spec(
    name: str, port: int, *, reuse_external: bool = False, requires: tuple[str, ...] = ()
) -> ServiceSpec:
    def prepare(layout: Layout, progress: Progress) -> Launch:
        progress(f"{name}: preparing")
        argv = (sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1")
        layout.service_dir(name).mkdir(parents=True, exist_ok=True)
        return Launch(argv=argv, cwd=layout.service_dir(name))

    return ServiceSpec(
        name=name,
        title=f"test web server {name}",
        ports=(port,),
        marker="http.server",
        prepare=prepare,
        probe=lambda: _http_probe(port),
        ready_timeout=20.0,
        stop_timeout=5.0,
        requires=requires,
        reuse_external=reuse_external,
    )


def _crashing_spec(name: str, port: int) -> ServiceSpec:
    def prepare(layout: Layout, progress: Progress) -> Launch:
        code = "import sys; print('bad config: no such listener', flush=True); sys.exit(3)"
        layout.service_dir(name).mkdir(parents=True, exist_ok=True)
        return Launch(argv=(sys.executable, "-c", code), cwd=layout.service_dir(name))

    return ServiceSpec(
        name=name,
        title="crashes",
        ports=(port,),
        marker="bad config",
        prepare=prepare,
        probe=lambda: _http_probe(port),
        ready_timeout=20.0,
        stop_timeout=5.0,
    )


def _install(monkeypatch: pytest.MonkeyPatch, *specs: ServiceSpec) -> None:
    monkeypatch.setattr(manager, "SPECS", {spec.name: spec for spec in specs})
    monkeypatch.setattr(manager, "SERVICES", tuple(spec.name for spec in specs))


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    value = load_settings(stack_dir=tmp_path / "stack")
    yield value
    down(settings=value)


def test_up_starts_waits_and_is_idempotent(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    _install(monkeypatch, _http_spec("web", _free_port()), _http_spec("api", _free_port()))
    messages: list[str] = []

    first = up(settings=settings, progress=messages.append)
    second = up(["web"], settings=settings)

    assert [change.action for change in first] == [Action.STARTED, Action.STARTED]
    assert all(change.status.state is ServiceState.RUNNING for change in first)
    assert any(message.startswith("web: ready in") for message in messages)
    assert [change.action for change in second] == [Action.ALREADY_RUNNING]
    assert second[0].status.pid == first[0].status.pid


def test_down_one_service_then_up_restores_it(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    _install(monkeypatch, _http_spec("web", _free_port()), _http_spec("api", _free_port()))
    up(settings=settings)

    stopped = down(["api"], settings=settings)
    states = {row.name: row.state for row in status(settings=settings)}
    restarted = up(["api"], settings=settings)

    assert [change.action for change in stopped] == [Action.STOPPED]
    assert states == {"web": ServiceState.RUNNING, "api": ServiceState.STOPPED}
    assert [change.action for change in restarted] == [Action.STARTED]
    assert restarted[0].status.state is ServiceState.RUNNING
    assert Layout(settings.stack_dir.resolve()).pid_file("api").read_text().strip() == str(
        restarted[0].status.pid
    )


def test_up_brings_required_services(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    _install(
        monkeypatch, _http_spec("db", _free_port()), _http_spec("gateway", _free_port(), requires=("db",))
    )

    changes = up(["gateway"], settings=settings)

    assert [change.name for change in changes] == ["db", "gateway"]


def test_down_of_nothing_is_not_running(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    _install(monkeypatch, _http_spec("web", _free_port()))

    changes = down(settings=settings)

    assert [change.action for change in changes] == [Action.NOT_RUNNING]


def test_unknown_service_is_a_config_error(settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"unknown service.*choose from kafka, redis, hbase, thrift"):
        up(["zookeeper"], settings=settings)


def test_thrift_requires_the_hbase_master() -> None:
    assert manager.select(["thrift"], with_requirements=True) == ("hbase", "thrift")
    assert manager.select(["thrift"]) == ("thrift",)
    assert manager.select(None) == ("kafka", "redis", "hbase", "thrift")


def test_port_held_by_a_foreign_process_names_it(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        _install(monkeypatch, _http_spec("web", port))

        with pytest.raises(ConfigError, match=rf"port {port} is used by pid \d+ \(.*python.*\); stop it"):
            up(settings=settings)
        assert status(settings=settings)[0].detail.startswith(f"port {port} is used by pid")


def test_an_external_server_is_reused_and_left_running(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, tmp_path: Path
) -> None:
    port = _free_port()
    external = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _install(monkeypatch, _http_spec("cache", port, reuse_external=True))
        for _ in range(100):
            try:
                _http_probe(port)
                break
            except StackError:
                time.sleep(0.1)

        started = up(settings=settings)
        stopped = down(settings=settings)

        assert started[0].action is Action.REUSED
        assert started[0].status.state is ServiceState.EXTERNAL
        assert started[0].status.pid == external.pid
        assert stopped[0].action is Action.LEFT_RUNNING
        assert external.poll() is None
    finally:
        external.terminate()
        external.wait(10)


def test_a_crash_during_start_reports_the_log_tail(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    _install(monkeypatch, _crashing_spec("broken", _free_port()))

    with pytest.raises(StackError, match="broken exited during start-up") as caught:
        up(settings=settings)

    assert caught.value.service == "broken"
    assert "bad config: no such listener" in caught.value.log_tail
    assert not Layout(settings.stack_dir.resolve()).pid_file("broken").exists()


def test_cli_status_prints_a_table_and_fails_when_stopped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _install(monkeypatch, _http_spec("web", _free_port()))
    monkeypatch.setenv("PINSTREAM_STACK_DIR", str(tmp_path / "stack"))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["stack", "status"])
    finally:
        get_settings.cache_clear()

    assert result.exit_code == 1
    assert "web" in result.output
    assert "stopped" in result.output


def test_cli_rejects_an_unknown_service() -> None:
    result = CliRunner().invoke(cli, ["stack", "up", "zookeeper"])

    assert result.exit_code == 2
    assert "zookeeper" in result.output
