"""Typed records of the local stack: where a service keeps its files, how it is started, and
what `up`, `down` and `status` report about it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

Progress = Callable[[str], None]


class ServiceState(StrEnum):
    """What a status check found."""

    RUNNING = "running"  # our process, answering its protocol
    EXTERNAL = "external"  # not ours, but answering on the port (reused, never stopped by us)
    UNHEALTHY = "unhealthy"  # our process is alive but does not answer (yet)
    STOPPED = "stopped"  # nothing of ours runs


class Action(StrEnum):
    """What `up` or `down` did to one service."""

    STARTED = "started"
    ALREADY_RUNNING = "already running"
    REUSED = "reused"  # an external server already answers there
    STOPPED = "stopped"
    NOT_RUNNING = "not running"
    LEFT_RUNNING = "left running"  # external: we did not start it, so we do not stop it


@dataclass(frozen=True)
class ServiceStatus:
    """One service as `status` sees it."""

    name: str
    state: ServiceState
    pid: int | None
    ports: tuple[int, ...]
    detail: str

    @property
    def healthy(self) -> bool:
        return self.state in (ServiceState.RUNNING, ServiceState.EXTERNAL)


@dataclass(frozen=True)
class ServiceChange:
    """What `up` or `down` did to one service, how long it took, and the status afterwards."""

    name: str
    action: Action
    seconds: float
    status: ServiceStatus


@dataclass(frozen=True)
class Layout:
    """Where the stack keeps its files: `<root>/<service>/{data,logs}`, jars under `<root>/lib`."""

    root: Path

    def service_dir(self, service: str) -> Path:
        return self.root / service

    def data_dir(self, service: str) -> Path:
        return self.root / service / "data"

    def log_file(self, service: str) -> Path:
        return self.root / service / "logs" / f"{service}.log"

    def pid_file(self, service: str) -> Path:
        return self.root / service / f"{service}.pid"

    def lib_dir(self, jar_set: str) -> Path:
        return self.root / "lib" / jar_set

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"


@dataclass(frozen=True)
class Launch:
    """A prepared command line: argv, extra environment, working directory."""

    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceSpec:
    """How to prepare, start, recognise and check one service.

    `prepare` writes configuration and resolves jars, then returns the command to run.
    `probe` performs a real protocol round trip and returns a short detail, or raises StackError.
    `marker` is a string found in the command line of our process (guards against pid reuse).
    """

    name: str
    title: str
    ports: tuple[int, ...]
    marker: str
    prepare: Callable[[Layout, Progress], Launch]
    probe: Callable[[], str]
    ready_timeout: float
    stop_timeout: float
    requires: tuple[str, ...] = ()
    reuse_external: bool = False
