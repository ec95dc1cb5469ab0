"""The bad-input campaign in short (`pinstream fuzz` runs it in full): every target survives its
generated inputs with 0 crashes, rejections carry reasons, and the runner does count a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.campaigns.coverage import BYTE_TARGETS, run_coverage
from streams.campaigns.fuzz import Target, campaign_targets, run_target
from streams.campaigns.strategies import HOSTILE_IMAGES
from streams.settings import load_settings

pytestmark = pytest.mark.timeout(300)

TARGETS = campaign_targets(load_settings(metrics_port=0))


@pytest.mark.parametrize("target", TARGETS, ids=[f"{t.name.split(':')[0]}{i}" for i, t in enumerate(TARGETS)])
def test_every_target_rejects_bad_input_with_a_reason_and_never_crashes(target: Target) -> None:
    result = run_target(target, examples=120, seconds=20)
    assert result.crashes == 0, result.crash_examples
    assert result.examples >= 60  # the budget was not spent on nothing
    assert sum(result.rejected.values()) > 0 and all(result.rejected)


def test_an_unexpected_exception_or_a_missing_reason_counts_as_a_crash() -> None:
    def fragile(data: bytes) -> str:
        if len(data) % 2:
            raise ValueError("odd")
        return "accepted"

    result = run_target(Target("fragile", HOSTILE_IMAGES, fragile), examples=50, seconds=20)
    assert result.crashes > 0 and result.accepted > 0
    assert result.crashes + result.accepted == result.examples
    assert "ValueError: odd" in result.crash_examples[0]


def test_coverage_guided_runs_of_every_byte_target_find_no_crash(tmp_path: Path) -> None:
    runs = run_coverage(8, lambda line: None, tmp_path / "crashes")
    assert [run.target for run in runs] == list(BYTE_TARGETS)
    assert all(run.runs > 100 and run.coverage > 0 and not run.crashed for run in runs), runs
    assert not list((tmp_path / "crashes").iterdir())
