"""Carrying out the fault campaign's faults: supervised processes (restarted when they die, as a
service manager would) that a fault kills with SIGKILL, and outages of the local stack's
services (stopped, held down, started again and awaited). Local stack only: every process here
listens on 127.0.0.1."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streams.campaigns.chaos_plan import Fault
from streams.errors import PinstreamError
from streams.localworker import LocalWorker
from streams.stack import manager
from streams.stack.model import Action

Progress = Callable[[str], None]
_RESTART_PAUSE_S = 1.0


@dataclass
class ProcessRecord:
    name: str
    starts: int = 0
    kills: int = 0
    unplanned_exits: int = 0  # deaths the campaign did not cause
    ready_s: list[float] = field(default_factory=list)  # start -> ready, per (re)start
    failed_starts: int = 0


class Supervised:
    """Keeps one process running: a thread restarts it whenever it is found dead."""

    def __init__(self, name: str, start: Callable[[], subprocess.Popen[bytes]],
                 ready: Callable[[subprocess.Popen[bytes]], None], progress: Progress) -> None:
        self.record = ProcessRecord(name)
        self._start, self._ready, self._progress = start, ready, progress
        self.process: subprocess.Popen[bytes] | None = None
        self._killed_by_us = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name=f"supervise-{name}", daemon=True)

    def start(self) -> None:
        self._launch()
        self._thread.start()

    def kill(self) -> bool:
        """SIGKILL the running process (the supervisor restarts it); False when none was running."""
        with self._lock:
            process = self.process
            if process is None or process.poll() is not None:
                return False
            self._killed_by_us = True
            process.send_signal(signal.SIGKILL)
            self.record.kills += 1
        return True

    def stop(self) -> None:
        """Stop supervising, then end the process gracefully (SIGTERM, SIGKILL after 60 s)."""
        self._stop.set()
        self._thread.join(30)
        with self._lock:
            process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def _launch(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            with self._lock:
                self.process = self._start()
                self._killed_by_us = False
                self.record.starts += 1
            try:
                self._ready(self.process)
            except PinstreamError as exc:
                self.record.failed_starts += 1
                self._progress(f"{self.record.name}: start failed ({str(exc).splitlines()[0]}); retrying")
                if self.process.poll() is None:
                    self.process.kill()
                    self.process.wait(10)
                time.sleep(_RESTART_PAUSE_S)
                continue
            self.record.ready_s.append(round(time.monotonic() - began, 1))
            return

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                process = self.process
                dead = process is not None and process.poll() is not None
                planned = self._killed_by_us
            if not dead:
                continue
            assert process is not None
            if not planned:
                self.record.unplanned_exits += 1
                self._progress(f"{self.record.name}: exited by itself with {process.returncode}; "
                               "restarting")
            time.sleep(_RESTART_PAUSE_S)
            self._launch()


def supervised_worker(worker: LocalWorker, progress: Progress) -> Supervised:
    return Supervised("worker", worker.spawn, worker.wait_ready, progress)


def supervised_reconciler(worker: LocalWorker, log: Path, progress: Progress) -> Supervised:
    """`pinstream reconcile run` with the worker's namespace and settings."""
    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "streams.cli", "reconcile", "run"],
                                env=worker.env, stdout=log.open("ab"), stderr=subprocess.STDOUT)

    def ready(process: subprocess.Popen[bytes]) -> None:
        time.sleep(2.0)
        if process.poll() is not None:
            raise PinstreamError(f"the reconciler exited with {process.returncode}; see {log}")

    return Supervised("reconciler", start, ready, progress)


@dataclass
class OutageRecord:
    service: str
    planned_s: float
    down_at_s: float = 0.0  # since the traffic started
    down_s: float = 0.0  # stop requested -> start requested
    restart_s: float = 0.0  # start requested -> the service answers its protocol again


def run_outage(fault: Fault, clock: Callable[[], float], progress: Progress) -> OutageRecord:
    """Stop one stack service, keep it down for the fault's duration, start it and wait for it."""
    record = OutageRecord(fault.target, fault.duration_s, down_at_s=round(clock(), 1))
    began = time.monotonic()
    progress(f"outage: stopping {fault.target} for {fault.duration_s:.0f}s")
    try:
        (change,) = manager.down([fault.target], progress=lambda _: None)
        if change.action is not Action.STOPPED:  # e.g. a Redis the stack did not start
            raise PinstreamError(f"{fault.target} was not stopped ({change.action}): the campaign "
                                 "needs services started by `pinstream stack up`")
        remaining = fault.duration_s - (time.monotonic() - began)
        if remaining > 0:
            time.sleep(remaining)
    finally:  # whatever happened, the service is started again
        record.down_s = round(time.monotonic() - began, 1)
        started = time.monotonic()
        manager.up([fault.target], progress=lambda _: None)
        record.restart_s = round(time.monotonic() - started, 1)
    progress(f"outage: {fault.target} back after {record.down_s:.0f}s down, "
             f"{record.restart_s:.1f}s to answer")
    return record
