"""`pinstream load`: the load campaign (sustained rate, a spike, recovery) against a worker on a
private namespace of the local stack; JSON under bench/results/, exit code 1 when it fails."""

from __future__ import annotations

import faulthandler
import sys
import tempfile
from pathlib import Path

import click

from streams.cli.common import console, err, reports_errors


@click.command()
@click.option("--rate", type=click.FloatRange(min=1), default=200.0, show_default=True,
              help="Sustained interactions/s.")
@click.option("--spike-factor", type=click.FloatRange(min=1), default=3.0, show_default=True)
@click.option("--warmup", "warmup_s", type=click.FloatRange(min=1), default=20.0, show_default=True,
              help="Seconds at the sustained rate before the baseline memory is taken.")
@click.option("--sustained", "sustained_s", type=click.FloatRange(min=1), default=60.0, show_default=True)
@click.option("--spike", "spike_s", type=click.FloatRange(min=1), default=180.0, show_default=True)
@click.option("--recovery", "recovery_s", type=click.FloatRange(min=1), default=120.0, show_default=True)
@click.option("--pins", type=click.IntRange(min=0), default=20, show_default=True,
              help="Pins with images published first (plus one with a corrupt image).")
@click.option("--users", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--memory-ratio", type=click.FloatRange(min=1), default=1.5, show_default=True,
              help="Largest peak RSS over the warm-up RSS that counts as bounded.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="JSON result file  [default: bench/results/load-<date>.json]")
@click.option("--keep", is_flag=True, help="Keep the namespace's topics and tables afterwards.")
@reports_errors
def load(rate: float, spike_factor: float, warmup_s: float, sustained_s: float, spike_s: float,
         recovery_s: float, pins: int, users: int, seed: int, memory_ratio: float, out: Path | None,
         keep: bool) -> None:
    """Drive a worker (private namespace on the local stack) at RATE interactions/s, then
    RATE x SPIKE-FACTOR, then RATE again, sampling its RSS, consumer lag and pools each second;
    then check the invariants (`pinstream verify`). Passes when memory stays bounded, lag
    recovers after the spike, no pool is exhausted, and nothing is lost or double-counted."""
    from streams.bench.report import default_result_path, write_json
    from streams.campaigns.load import LoadPlan, load_worker, run_load

    faulthandler.enable()  # a native crash under a broker restart leaves its stack behind
    plan = LoadPlan(rate=rate, spike_factor=spike_factor, warmup_s=warmup_s, sustained_s=sustained_s,
                    spike_s=spike_s, recovery_s=recovery_s, pins=pins, users=users, seed=seed,
                    memory_ratio_limit=memory_ratio)
    with tempfile.TemporaryDirectory(prefix="pinstream-load-") as workdir:
        worker = load_worker(Path(workdir))
        try:
            result = run_load(worker, plan, err)
        finally:
            if not keep:
                worker.cleanup()
    payload = result.to_json(" ".join(["pinstream", *sys.argv[1:]]))
    path = write_json(out or default_result_path("load"), payload)
    screen = console()
    memory, lag, pools = payload["memory"], payload["lag"], payload["pools"]
    screen.print(f"sent {result.sent} at {result.achieved_rate} interactions/s")
    screen.print(f"memory: {memory['baseline_rss_mib']} MiB after warm-up, peak {memory['peak_rss_mib']} "
                 f"MiB ({memory['peak_over_baseline']}x; bounded: {memory['bounded']})")
    screen.print(f"lag: peak {lag['peak']}, back to the sustained level {lag['recovered_after_spike_s']} s "
                 f"after the spike, 0 {lag['drained_after_traffic_s']} s after the traffic")
    screen.print(f"pools: highest usage {pools['usage_max']}, exhausted {pools['exhausted']}, "
                 f"leaks {pools['leaks']}")
    verdict = result.verdict
    if verdict is not None:
        screen.print(f"invariants: {'PASS' if verdict.ok else 'FAIL'} lost={verdict.lost} "
                     f"double_counted={verdict.double_counted}; dead letters {result.dead_letters}")
        for check in verdict.checks:
            screen.print(f"  {'PASS' if check.ok else 'FAIL'} {check.name}: {dict(check.counts)}")
    if result.servers_restarted:
        screen.print(f"servers restarted during the run (faults this campaign did not plan): "
                     f"{', '.join(result.servers_restarted)}")
    screen.print(f"{'PASS' if result.ok else 'FAIL'}; written to {path}")
    if not result.ok:
        sys.exit(1)
