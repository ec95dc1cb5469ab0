"""The fault campaign: a worker and the reconciler on a private namespace of the local stack take
the planted-interest workload while the plan's faults land (kill -9 of either process at random
moments; Redis, the HBase Thrift server and the Kafka broker stopped and started). Afterwards it
waits for the pipeline to converge and checks the invariants (`pinstream verify`): every pin
embedded, indexed and stored or dead-lettered with a reason; the graph in HBase equal to a batch
recomputation from the interactions topic; active users' feeds fresh; 0 lost, 0 double-counted.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from processors.invariant_inputs import verify_namespace
from processors.invariants import Verdict
from streams.bench.report import code_revision, machine_info
from streams.campaigns.chaos_faults import (
    OutageRecord,
    Supervised,
    run_outage,
    supervised_reconciler,
    supervised_worker,
)
from streams.campaigns.chaos_plan import ChaosPlan, Fault, schedule
from streams.campaigns.chaos_traffic import Publisher, TrafficReport, build_traffic
from streams.campaigns.sampling import total_lag
from streams.errors import PinstreamError
from streams.groups import worker_groups
from streams.localworker import LocalWorker

Progress = Callable[[str], None]
_VERIFY_EVERY_S = 15.0


@dataclass
class ChaosResult:
    plan: ChaosPlan
    schedule: list[Fault]
    traffic: TrafficReport = field(default_factory=TrafficReport)
    outages: list[OutageRecord] = field(default_factory=list)
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)
    converged_after_s: float | None = None  # from the end of traffic and faults to the invariants
    verify_rounds: int = 0
    verdict: Verdict | None = None
    dead_letters: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        """Events never acknowledged by the broker, plus what the invariants found missing."""
        found = self.verdict.lost if self.verdict is not None else 0
        return self.traffic.unacknowledged + found

    @property
    def double_counted(self) -> int:
        return self.verdict.double_counted if self.verdict is not None else 0

    @property
    def ok(self) -> bool:
        return self.verdict is not None and self.verdict.ok and self.lost == 0

    def to_json(self, command: str) -> dict[str, Any]:
        return {
            "bench": "chaos", "command": command, "revision": code_revision(), "machine": machine_info(),
            "plan": asdict(self.plan), "schedule": [asdict(f) for f in self.schedule],
            "traffic": asdict(self.traffic), "outages": [asdict(o) for o in self.outages],
            "processes": self.processes, "converged_after_s": self.converged_after_s,
            "verify_rounds": self.verify_rounds, "lost": self.lost,
            "double_counted": self.double_counted, "dead_letters": self.dead_letters,
            "invariants": self.verdict.to_json() if self.verdict is not None else None,
            "ok": self.ok,
        }


def chaos_worker(workdir: Path) -> LocalWorker:
    """A worker namespace whose reconciler group is private too."""
    worker = LocalWorker(workdir, feed_refresh_interval_s=1.0)
    group = f"{worker.settings.topic_prefix}pinstream-reconciler"
    worker.env["PINSTREAM_RECONCILE_GROUP_ID"] = group
    return worker


class _Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.started


def run_chaos(worker: LocalWorker, plan: ChaosPlan, progress: Progress) -> ChaosResult:
    """Run the campaign on `worker`'s namespace (from `chaos_worker`); the caller cleans it up."""
    result = ChaosResult(plan, schedule(plan))
    tag = f"c{uuid.uuid4().hex[:6]}"
    progress(f"preparing {plan.pins} pins with images and {plan.interactions} interactions")
    traffic = build_traffic(worker.settings, pins=plan.pins, interactions=plan.interactions,
                            users=plan.users, seed=plan.seed, tag=tag, progress=progress)
    for fault in result.schedule:
        progress(f"planned: {fault.describe()}")
    processes = {
        "worker": supervised_worker(worker, progress),
        "reconciler": supervised_reconciler(worker, worker.log.with_name("reconciler.log"), progress),
    }
    progress("starting the worker (model load, index catch-up) and the reconciler")
    for process in processes.values():
        process.start()
    publisher = Publisher(worker.settings, traffic, rate=len(traffic) / plan.duration_s)
    clock = _Clock()
    try:
        publisher.start()
        _inject(result, processes, clock, progress)
        progress("faults done; waiting for the traffic to be acknowledged")
        publisher.join()
        result.traffic = publisher.report
        quiet_since = time.monotonic()
        progress(f"traffic: {publisher.report.sent} sent, {publisher.report.refused} refused and "
                 f"sent again; converging")
        _converge(worker, result, quiet_since, progress)
    finally:
        publisher.close()
        for name, process in processes.items():
            process.stop()
            result.processes[name] = asdict(process.record)
    return result


def _inject(result: ChaosResult, processes: dict[str, Supervised], clock: _Clock,
            progress: Progress) -> None:
    """Carry out the schedule: kills inline, each outage in its own thread (kills go on meanwhile)."""
    outages: list[threading.Thread] = []
    errors: list[BaseException] = []

    def outage(fault: Fault) -> None:
        try:
            result.outages.append(run_outage(fault, clock, progress))
        except BaseException as exc:  # re-raised below: a service that will not come back
            errors.append(exc)

    for fault in result.schedule:
        delay = fault.at_s - clock()
        if delay > 0:
            time.sleep(delay)
        if fault.kind == "kill":
            hit = processes[fault.target].kill()
            progress(f"{clock():6.1f}s kill -9 {fault.target}" + ("" if hit else " (was restarting)"))
        else:
            thread = threading.Thread(target=outage, args=(fault,), name=f"outage-{fault.target}")
            thread.start()
            outages.append(thread)
    for thread in outages:
        thread.join()
    if errors:
        raise PinstreamError(f"a service did not come back after its outage: {errors[0]}") from errors[0]


def _converge(worker: LocalWorker, result: ChaosResult, quiet_since: float, progress: Progress) -> None:
    """Wait for the worker's and the reconciler's lag to reach 0, then check the invariants until
    they hold (the last feed refreshes and re-drives land a little later) or time is up."""
    settings = worker.settings
    groups = (*worker_groups(settings), worker.env["PINSTREAM_RECONCILE_GROUP_ID"])
    deadline = quiet_since + result.plan.converge_timeout_s
    last_check = 0.0
    while time.monotonic() < deadline:
        lag = {group: _lag(settings, group) for group in groups}
        if all(value == 0 for value in lag.values()) and time.monotonic() - last_check >= _VERIFY_EVERY_S:
            last_check = time.monotonic()
            try:
                verdict, facts = verify_namespace(settings, worker_url=worker.url)
            except PinstreamError as exc:  # a store blinked while being read: read again later
                progress(f"verify could not read everything ({exc}); trying again")
                continue
            result.verify_rounds += 1
            result.verdict, result.dead_letters = verdict, facts.dead_letter_reasons
            if verdict.ok:
                result.converged_after_s = round(time.monotonic() - quiet_since, 1)
                progress(f"invariants hold {result.converged_after_s:.0f}s after the last fault")
                return
            failing = ", ".join(check.name for check in verdict.checks if not check.ok)
            progress(f"not yet: {failing}")
        else:
            time.sleep(2.0)
    progress(f"invariants still failing {result.plan.converge_timeout_s:.0f}s after the last fault")


def _lag(settings: Any, group: str) -> int:
    try:
        return total_lag(settings, group)
    except PinstreamError:
        return -1  # the group has not committed yet (e.g. the reconciler before any failure)
