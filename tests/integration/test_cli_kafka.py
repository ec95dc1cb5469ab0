"""The CLI, invoked as a user would, against the real Kafka: produce, tail, replay, groups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.settings import Settings
from streams.topics import GRAPH_EDGES, PINS_CREATED, PINS_INTERACTIONS
from tests.integration.kafka_fixtures import kafka_settings

pytestmark = pytest.mark.integration
__all__ = ["kafka_settings"]

GOOD = {"user_id": "u1", "pin_id": "p1", "action": "click", "session_id": "s1",
        "event_time": "2026-11-20T10:00:00.000Z"}


def run_cli(settings: Settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PINSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
                        "PINSTREAM_TOPIC_PREFIX": settings.topic_prefix, "PINSTREAM_METRICS_PORT": "0"}
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_produce_reports_bad_lines_by_number_sends_good_ones_and_fails_exit_code(
        kafka_settings: Settings, tmp_path: Path) -> None:
    lines = [
        json.dumps(GOOD),
        "{not json",
        json.dumps(GOOD | {"action": "teleport"}),
        json.dumps(GOOD | {"pin_id": "p2"}),
        json.dumps(GOOD | {"surprise": 1}),
        json.dumps(GOOD | {"action": "save"}),  # a save without board_id
        json.dumps(GOOD | {"pin_id": "p3", "action": "save", "board_id": "b1"}),
    ]
    path = tmp_path / "interactions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = run_cli(kafka_settings, "produce", "interactions", str(path))
    assert result.returncode == 1
    for number, reason in ((2, "not valid JSON"), (3, "unknown action 'teleport'"),
                           (5, "unknown field(s) surprise"), (6, "a save needs board_id")):
        assert f"{path}:{number}: {reason}" in result.stderr
    assert "7 lines, 3 acknowledged, 4 invalid" in result.stderr

    tail = run_cli(kafka_settings, "tail", PINS_INTERACTIONS.name, "--from-beginning", "--max", "3",
                   "--idle-timeout", "15")
    assert tail.returncode == 0, tail.stderr
    events = [json.loads(line) for line in tail.stdout.splitlines()]
    assert sorted(e["value"]["pin_id"] for e in events) == ["p1", "p2", "p3"]
    assert {e["value"]["action"] for e in events} == {"CLICK", "SAVE"}


def test_produce_all_good_lines_exits_zero(kafka_settings: Settings) -> None:
    stdin = "\n".join(json.dumps(GOOD | {"pin_id": f"p{i}"}) for i in range(10)) + "\n"
    result = run_cli(kafka_settings, "produce", "interactions", "-", stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert "10 lines, 10 acknowledged, 0 invalid" in result.stderr


def test_produce_pins_rate_limit_refusals_are_reported_per_line(kafka_settings: Settings) -> None:
    pins = [{"pin_id": f"p{i}", "user_id": "u1", "board_id": "b1", "title": "t",
             "image_ref": "0a1b.jpg"} for i in range(5)]
    stdin = "\n".join(json.dumps(p) for p in pins) + "\n"
    result = run_cli(kafka_settings, "produce", "pins", "-", "--rate-limit", "3", stdin=stdin)
    assert result.returncode == 1
    assert "<stdin>:4: refused: user u1 exceeded 3 pin creations per minute" in result.stderr
    assert "5 lines, 3 acknowledged, 0 invalid, 2 rate-limited" in result.stderr
    listed = run_cli(kafka_settings, "topics", "list")
    assert listed.returncode == 0, listed.stderr
    assert kafka_settings.topic(PINS_CREATED.name) in listed.stdout


def test_replay_cli_prints_exact_counts(kafka_settings: Settings) -> None:
    stdin = "\n".join(json.dumps(GOOD | {"pin_id": f"p{i}"}) for i in range(12)) + "\n"
    assert run_cli(kafka_settings, "produce", "interactions", "-", stdin=stdin).returncode == 0
    result = run_cli(kafka_settings, "replay", "--topic", PINS_INTERACTIONS.name, "--from",
                     "beginning", "--into", GRAPH_EDGES.name)
    assert result.returncode == 0, result.stderr
    assert "read 12, acknowledged 12, failed 0" in result.stdout
    dry = run_cli(kafka_settings, "groups", "reset", "nobody", "--to-datetime", "2026-01-01T00:00:00Z")
    assert dry.returncode == 1 and "no committed offsets" in dry.stderr
