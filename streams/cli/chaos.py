"""`pinstream chaos`: the fault campaign against a worker and the reconciler on a private namespace
of the local stack; JSON under bench/results/, exit code 1 when an invariant fails."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from streams.campaigns.chaos_plan import OUTAGE_TARGETS
from streams.cli.common import console, err, reports_errors


def _outages(_: click.Context, __: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in OUTAGE_TARGETS]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)}: choose from {', '.join(OUTAGE_TARGETS)} "
                                 "(comma-separated), or '' for none")
    return names


@click.command()
@click.option("--events", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Events published in all: pins plus interactions.")
@click.option("--pins", type=click.IntRange(min=0), default=1_000, show_default=True,
              help="Of those, pin creations with generated images (each embedded by the model).")
@click.option("--users", type=click.IntRange(min=1), default=400, show_default=True)
@click.option("--duration", "duration_s", type=click.FloatRange(min=10), default=360.0,
              show_default=True, help="Seconds over which the traffic is spread.")
@click.option("--kills", type=click.IntRange(min=0), default=10, show_default=True,
              help="kill -9 at random moments (every 4th hits the reconciler, the others the worker).")
@click.option("--outages", default=",".join(OUTAGE_TARGETS), show_default=True, callback=_outages,
              help="Stack services stopped and started, one after another.")
@click.option("--outage-seconds", "outage_s", type=click.FloatRange(min=1), default=30.0,
              show_default=True, help="How long each service stays down.")
@click.option("--converge-timeout", "converge_timeout_s", type=click.FloatRange(min=10),
              default=900.0, show_default=True,
              help="After the traffic and the last fault: how long the invariants may take to hold.")
@click.option("--seed", type=int, default=7, show_default=True, help="Workload and fault schedule.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="JSON result file  [default: bench/results/chaos-<date>.json]")
@click.option("--keep", is_flag=True, help="Keep the namespace's topics and tables afterwards.")
@reports_errors
def chaos(events: int, pins: int, users: int, duration_s: float, kills: int,
          outages: tuple[str, ...], outage_s: float, converge_timeout_s: float, seed: int,
          out: Path | None, keep: bool) -> None:
    """Publish EVENTS generated events over DURATION seconds to a worker and the reconciler (a
    private namespace on the local stack, 127.0.0.1 only) while killing them with SIGKILL at
    random moments and stopping Redis, the HBase Thrift server and the Kafka broker in turn;
    then wait for the pipeline to converge and check the invariants (`pinstream verify`). Passes
    with every invariant holding: 0 lost, 0 double-counted. Needs `pinstream stack up` and
    stops and starts its services."""
    from streams.bench.report import default_result_path, write_json
    from streams.campaigns.chaos import chaos_worker, run_chaos
    from streams.campaigns.chaos_plan import ChaosPlan

    try:
        plan = ChaosPlan(events=events, pins=pins, users=users, duration_s=duration_s, kills=kills,
                         outages=outages, outage_s=outage_s, seed=seed,
                         converge_timeout_s=converge_timeout_s)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    with tempfile.TemporaryDirectory(prefix="pinstream-chaos-") as workdir:
        worker = chaos_worker(Path(workdir))
        try:
            result = run_chaos(worker, plan, err)
        finally:
            if not keep:
                worker.cleanup()
    payload = result.to_json(" ".join(["pinstream", *sys.argv[1:]]))
    path = write_json(out or default_result_path("chaos"), payload)
    screen = console()
    traffic = result.traffic
    screen.print(f"events: {traffic.sent} sent in {traffic.seconds:.0f}s, {traffic.refused} refused by "
                 f"the broker and sent again, {traffic.unacknowledged} never acknowledged")
    for name, record in result.processes.items():
        screen.print(f"{name}: {record['kills']} kills, {record['starts']} starts, "
                     f"{record['unplanned_exits']} unplanned exits, ready after {record['ready_s']} s")
    for outage in result.outages:
        screen.print(f"{outage.service}: down {outage.down_s:.0f}s at {outage.down_at_s:.0f}s, "
                     f"{outage.restart_s:.1f}s to answer again")
    converged = (f"{result.converged_after_s:.0f}s" if result.converged_after_s is not None
                 else "never (within the timeout)")
    screen.print(f"converged: {converged} after the traffic and the last fault "
                 f"({result.verify_rounds} verify rounds)")
    if result.verdict is not None:
        for check in result.verdict.checks:
            screen.print(f"  {'PASS' if check.ok else 'FAIL'} {check.name}: {dict(check.counts)}"
                         + (f" e.g. {list(check.examples)}" if check.examples else ""))
    screen.print(f"dead letters: {result.dead_letters or 'none'}")
    screen.print(f"lost={result.lost} double_counted={result.double_counted}  "
                 f"{'PASS' if result.ok else 'FAIL'}; written to {path}")
    if not result.ok:
        sys.exit(1)
