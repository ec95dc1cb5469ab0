"""`up`, `down` and `status` of the local stack: the order of services, readiness, locking."""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from streams.errors import ConfigError, StackError
from streams.settings import Settings, get_settings
from streams.stack import hbase, kafka, redis
from streams.stack.model import (
    Action,
    Launch,
    Layout,
    Progress,
    ServiceChange,
    ServiceSpec,
    ServiceState,
    ServiceStatus,
)
from streams.stack.process import (
    PortOwner,
    log_tail,
    owned_pid,
    port_open,
    port_owner,
    process_age_s,
    process_cpu_s,
    read_pid,
    remove_pid,
    spawn,
    terminate,
)

SPECS: dict[str, ServiceSpec] = {
    spec.name: spec for spec in (kafka.SPEC, redis.SPEC, hbase.MASTER_SPEC, hbase.THRIFT_SPEC)
}
SERVICES: tuple[str, ...] = tuple(SPECS)
POLL_SECONDS = 0.5
LOG_TAIL_LINES = 40

_log = logging.getLogger(__name__)


def _log_progress(message: str) -> None:
    _log.info("%s", message)


def layout_for(settings: Settings) -> Layout:
    return Layout(settings.stack_dir.resolve())


def select(names: Iterable[str] | None, *, with_requirements: bool = False) -> tuple[str, ...]:
    """Validated service names in stack order; all of them when `names` is empty or None."""
    wanted = set(names or SERVICES)
    unknown = sorted(wanted - set(SPECS))
    if unknown:
        raise ConfigError(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(SERVICES)}")
    if with_requirements:
        for name in list(wanted):
            wanted.update(SPECS[name].requires)
    return tuple(name for name in SERVICES if name in wanted)


@contextmanager
def _locked(layout: Layout) -> Iterator[None]:
    """One `up` or `down` at a time per stack folder (two shells, two test runs)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with layout.lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _probe(spec: ServiceSpec) -> tuple[bool, str]:
    try:
        return True, spec.probe()
    except StackError as exc:
        return False, str(exc)


def _foreign_port(spec: ServiceSpec) -> str | None:
    for port in spec.ports:
        owner = port_owner(port) or (PortOwner(None, "") if port_open(port) else None)
        if owner is not None:
            return f"port {port} is used by {owner.describe()}"
    return None


def _external_status(spec: ServiceSpec) -> ServiceStatus | None:
    """A server we did not start that answers where `spec` would listen, if `spec` may reuse one."""
    if not (spec.reuse_external and port_open(spec.ports[0])):
        return None
    ok, detail = _probe(spec)
    if not ok:
        return None
    owner = port_owner(spec.ports[0])
    pid = owner.pid if owner else None
    return ServiceStatus(spec.name, ServiceState.EXTERNAL, pid, spec.ports, f"{detail} (not ours)")


def service_status(spec: ServiceSpec, layout: Layout) -> ServiceStatus:
    pid = owned_pid(layout.pid_file(spec.name), spec.marker)
    if pid is not None:
        ok, detail = _probe(spec)
        state = ServiceState.RUNNING if ok else ServiceState.UNHEALTHY
        return ServiceStatus(spec.name, state, pid, spec.ports, detail)
    external = _external_status(spec)
    if external is not None:
        return external
    foreign = _foreign_port(spec)
    detail = f"{foreign}, not by the stack" if foreign else "not running"
    return ServiceStatus(spec.name, ServiceState.STOPPED, None, spec.ports, detail)


def _wait_ready(spec: ServiceSpec, layout: Layout, pid: int, started: float) -> ServiceStatus:
    deadline = started + spec.ready_timeout
    detail = "no check yet"
    while True:
        if owned_pid(layout.pid_file(spec.name), spec.marker) != pid:
            remove_pid(layout.pid_file(spec.name))
            raise StackError(
                f"{spec.name} exited during start-up ({detail})",
                service=spec.name,
                log_tail=log_tail(layout.log_file(spec.name), LOG_TAIL_LINES),
            )
        ok, detail = _probe(spec)
        if ok:
            return ServiceStatus(spec.name, ServiceState.RUNNING, pid, spec.ports, detail)
        if time.monotonic() >= deadline:
            raise StackError(
                f"{spec.name} (pid {pid}) was not ready after {spec.ready_timeout:.0f} s: {detail}",
                service=spec.name,
                log_tail=log_tail(layout.log_file(spec.name), LOG_TAIL_LINES),
            )
        time.sleep(POLL_SECONDS)


@dataclass(frozen=True)
class _Pending:
    spec: ServiceSpec
    pid: int
    started: float
    action: Action


def _plan(spec: ServiceSpec, layout: Layout, progress: Progress) -> ServiceChange | _Pending | Launch:
    """What `up` must do for `spec`: nothing (reused), wait (already running), or start `Launch`.

    Preparing (jars, configuration, storage format) happens here, before anything is started,
    so that start-up times measure the servers alone.
    """
    began = time.monotonic()
    pid = owned_pid(layout.pid_file(spec.name), spec.marker)
    if pid is not None:
        return _Pending(spec, pid, began, Action.ALREADY_RUNNING)
    remove_pid(layout.pid_file(spec.name))
    external = _external_status(spec)
    if external is not None:
        progress(f"{spec.name}: reusing the server already answering on port {spec.ports[0]}")
        return ServiceChange(spec.name, Action.REUSED, time.monotonic() - began, external)
    foreign = _foreign_port(spec)
    if foreign:
        raise ConfigError(
            f"{spec.name}: {foreign}; stop it, or run `pinstream stack down {spec.name}` "
            "from the folder that started it, then retry"
        )
    return spec.prepare(layout, progress)


def _await(item: _Pending, layout: Layout, progress: Progress) -> ServiceChange:
    """Wait until `item` answers; a server we started and that never answered is stopped."""
    try:
        status = _wait_ready(item.spec, layout, item.pid, item.started)
    except StackError as exc:
        progress(f"{item.spec.name}: FAILED: {exc}")
        if item.action is Action.STARTED:
            # A half-started server would only confuse the next `up`: the retry starts clean.
            terminate(item.pid, item.spec.stop_timeout)
            remove_pid(layout.pid_file(item.spec.name))
        raise
    seconds = time.monotonic() - item.started
    if item.action is Action.STARTED:
        progress(f"{item.spec.name}: ready in {seconds:.1f} s ({status.detail})")
    return ServiceChange(item.spec.name, item.action, seconds, status)


def up(
    services: Iterable[str] | None = None,
    settings: Settings | None = None,
    *,
    progress: Progress | None = None,
) -> tuple[ServiceChange, ...]:
    """Start the named services (all by default, plus what they require) and wait until each
    answers its protocol; running services are left as they are. The servers start together
    and are awaited in parallel, each timed from its own start. Raises StackError with the log
    tail of the first service that did not become ready, after waiting for all others."""
    report = progress or _log_progress
    layout = layout_for(settings or get_settings())
    names = select(services, with_requirements=True)
    changes: dict[str, ServiceChange] = {}
    failures: list[StackError] = []
    with _locked(layout):
        plans = {name: _plan(SPECS[name], layout, report) for name in names}
        pending: list[_Pending] = []
        for name, plan in plans.items():
            spec = SPECS[name]
            if isinstance(plan, ServiceChange):
                changes[name] = plan
            elif isinstance(plan, _Pending):
                pending.append(plan)
            else:
                began = time.monotonic()
                pid = spawn(plan, layout.log_file(name), layout.pid_file(name))
                report(f"{name}: started {spec.title} (pid {pid}), waiting for it to answer...")
                pending.append(_Pending(spec, pid, began, Action.STARTED))
        with ThreadPoolExecutor(max_workers=max(1, len(pending))) as pool:
            futures = [pool.submit(_await, item, layout, report) for item in pending]
            for future in futures:
                try:
                    change = future.result()
                except StackError as exc:
                    failures.append(exc)
                else:
                    changes[change.name] = change
    if failures:
        first = failures[0]
        others = "".join(f"; also {exc.service}: {exc}" for exc in failures[1:])
        raise StackError(f"{first}{others}", service=first.service, log_tail=first.log_tail)
    return tuple(changes[name] for name in names)


def _stop(spec: ServiceSpec, layout: Layout, progress: Progress) -> ServiceChange:
    began = time.monotonic()
    pid_file = layout.pid_file(spec.name)
    pid = owned_pid(pid_file, spec.marker)
    if pid is None:
        stale = read_pid(pid_file) is not None
        remove_pid(pid_file)
        current = service_status(spec, layout)
        if current.state is ServiceState.EXTERNAL:
            return ServiceChange(spec.name, Action.LEFT_RUNNING, 0.0, current)
        if stale:
            progress(f"{spec.name}: removed a stale pid file")
        return ServiceChange(spec.name, Action.NOT_RUNNING, 0.0, current)
    progress(f"{spec.name}: stopping pid {pid}...")
    graceful = terminate(pid, spec.stop_timeout)
    remove_pid(pid_file)
    seconds = time.monotonic() - began
    how = "" if graceful else f" (killed: no exit {spec.stop_timeout:.0f} s after SIGTERM)"
    progress(f"{spec.name}: stopped in {seconds:.1f} s{how}")
    detail = "stopped" if graceful else f"killed after {spec.stop_timeout:.0f} s"
    status = ServiceStatus(spec.name, ServiceState.STOPPED, None, spec.ports, detail)
    return ServiceChange(spec.name, Action.STOPPED, seconds, status)


def down(
    services: Iterable[str] | None = None,
    settings: Settings | None = None,
    *,
    progress: Progress | None = None,
) -> tuple[ServiceChange, ...]:
    """Stop the named services (all by default) that the stack started: SIGTERM, a grace
    period, then SIGKILL. Servers that the stack did not start are left running."""
    report = progress or _log_progress
    layout = layout_for(settings or get_settings())
    names = select(services)
    with _locked(layout):
        # Dependents first: the Thrift server before the master it talks to.
        changes = [_stop(SPECS[name], layout, report) for name in reversed(names)]
    return tuple(reversed(changes))


def status(
    services: Iterable[str] | None = None, settings: Settings | None = None
) -> tuple[ServiceStatus, ...]:
    """The state of each named service (all by default), checked by a protocol round trip."""
    layout = layout_for(settings or get_settings())
    return tuple(service_status(SPECS[name], layout) for name in select(services))


def ages(settings: Settings | None = None) -> dict[str, float]:
    """Seconds since each running service of the local stack started, from its pid file (services
    this stack did not start, e.g. external ones, are left out); no protocol round trip."""
    return {name: round(age, 1) for name, age in _per_running_service(settings, process_age_s).items()}


def cpu_seconds(settings: Settings | None = None) -> dict[str, float]:
    """CPU seconds each running service of the local stack has used since it started (services
    this stack did not start are left out): benches divide the growth over a phase by its length
    to show where the machine's cores went."""
    return _per_running_service(settings, process_cpu_s)


def _per_running_service(settings: Settings | None, measure: Callable[[int], float | None]
                         ) -> dict[str, float]:
    """`measure(pid)` of each service this stack started and that still runs (None: left out)."""
    layout = layout_for(settings or get_settings())
    out: dict[str, float] = {}
    for name in select(None):
        pid = owned_pid(layout.pid_file(name), SPECS[name].marker)
        value = measure(pid) if pid is not None else None
        if value is not None:
            out[name] = value
    return out


def logs(service: str, settings: Settings | None = None, lines: int = LOG_TAIL_LINES) -> str:
    """The end of a service's log since its last start."""
    (name,) = select([service])
    layout = layout_for(settings or get_settings())
    return log_tail(layout.log_file(name), lines)
