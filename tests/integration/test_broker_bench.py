"""`pinstream bench broker` against the real local broker: every phase's groups read every record,
the broker's CPU is measured, and committing once a second sends fewer commits than per batch."""

from __future__ import annotations

from streams.bench.broker import run_broker_bench
from streams.settings import Settings


def test_every_phase_reads_everything_and_the_interval_commits_less(stack_settings: Settings) -> None:
    result = run_broker_bench(stack_settings, 400, 2.0, 2)

    defaults, waiting, interval = result.phases
    for phase in result.phases:
        assert phase.sent >= 700  # ~400/s for 2 s
        assert phase.received == [phase.sent, phase.sent]
        assert len(phase.latencies_s) == 2 * phase.sent and 0 < phase.latency_ms(50) < 1000
        assert phase.broker_cores > 0
    assert defaults.profile.fetch_wait_ms == 0 and waiting.profile.fetch_wait_ms > 0
    # Two groups over ~2.5 s commit at most a few times a second each, and when idle.
    assert interval.commits < defaults.commits and interval.commits <= 2 * 8
