"""`pinstream gen pins|interactions` invoked as a user would: files, formats, errors."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from streams.cli import cli
from streams.jsonl import Line, interaction_arguments, pin_arguments

WORLD = ["--seed", "5", "--users", "20", "--pins", "30", "--clusters", "6"]
PIN_FIELDS = ["event_id", "event_time", "pin_id", "user_id", "board_id", "title",
              "description", "link", "tags"]


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["gen", *args], catch_exceptions=False)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pins_write_lines_and_content_addressed_blobs(tmp_path: Path) -> None:
    blobs, out = tmp_path / "blobs", tmp_path / "pins.jsonl"
    result = _invoke("pins", *WORLD, "--blob-dir", str(blobs), "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    lines = _lines(out)
    assert [line["pin_id"] for line in lines] == [f"p{i:08d}" for i in range(1, 31)]
    for number, line in enumerate(lines, start=1):
        assert list(line) == [*PIN_FIELDS, "image_ref"]
        assert "cluster" not in line
        data = (blobs / line["image_ref"]).read_bytes()
        assert line["image_ref"] == hashlib.sha256(data).hexdigest() + ".jpg"
        assert line["event_time"].endswith("Z") and len(line["event_time"]) == 24
        assert line["link"] is None or line["link"].startswith("https://example.com/")
        pin_arguments(Line(number, line))  # what `pinstream produce pins` accepts


def test_pins_inline_carry_base64_instead_of_a_ref(tmp_path: Path) -> None:
    out = tmp_path / "pins.jsonl"
    result = _invoke("pins", *WORLD, "--pins", "5", "--inline", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    for line in _lines(out):
        assert "image_ref" not in line
        Image.open(io.BytesIO(base64.b64decode(line["image_base64"]))).verify()


def test_pins_to_stdout_are_byte_identical_under_the_same_seed(tmp_path: Path) -> None:
    args = ["pins", *WORLD, "--pins", "12", "--inline", "--quiet"]
    first, second = _invoke(*args), _invoke(*args)
    assert first.exit_code == 0 and first.stdout == second.stdout
    other = _invoke("pins", "--seed", "6", *WORLD[2:], "--pins", "12", "--inline", "--quiet")
    assert other.stdout != first.stdout


def test_blob_dir_defaults_to_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.settings import get_settings

    monkeypatch.setenv("PINSTREAM_BLOB_DIR", str(tmp_path / "store"))
    get_settings.cache_clear()
    try:
        result = _invoke("pins", *WORLD, "--pins", "3", "--out", str(tmp_path / "p.jsonl"))
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "store").glob("*.jpg"))) == 3
    assert "wrote 3 pins" in result.stderr


def test_interactions_reference_the_pins_generated_with_the_same_world(tmp_path: Path) -> None:
    pins, events = tmp_path / "pins.jsonl", tmp_path / "events.jsonl"
    _invoke("pins", *WORLD, "--inline", "--out", str(pins), "--quiet")
    result = _invoke("interactions", *WORLD, "--out", str(events), "--quiet")
    assert result.exit_code == 0, result.output
    pin_ids = {line["pin_id"] for line in _lines(pins)}
    lines = _lines(events)
    assert lines and {line["pin_id"] for line in lines} <= pin_ids
    assert [line["event_time"] for line in lines] == sorted(line["event_time"] for line in lines)
    for number, line in enumerate(lines, start=1):
        assert list(line) == ["event_id", "event_time", "user_id", "pin_id", "action",
                              "session_id", "board_id"]
        interaction_arguments(Line(number, line))


def test_both_commands_write_the_same_truth(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    _invoke("pins", *WORLD, "--inline", "--out", str(tmp_path / "p"), "--truth", str(a), "--quiet")
    _invoke("interactions", *WORLD, "--out", str(tmp_path / "i"), "--truth", str(b), "--quiet")
    assert a.read_bytes() == b.read_bytes()
    truth = json.loads(a.read_text())
    assert len(truth["pins"]) == 30 and len(truth["users"]) == 20
    assert {"clusters", "weights", "boards"} <= set(truth["users"]["u0000001"])


def test_interactions_are_byte_identical_under_the_same_seed() -> None:
    first = _invoke("interactions", *WORLD, "--quiet")
    assert first.exit_code == 0 and first.stdout
    assert _invoke("interactions", *WORLD, "--quiet").stdout == first.stdout


@pytest.mark.parametrize("command", ["pins", "interactions"])
@pytest.mark.parametrize("bad", [["--users", "0"], ["--pins", "-3"], ["--start", "yesterday"]])
def test_bad_arguments_exit_with_usage_error(command: str, bad: list[str]) -> None:
    result = _invoke(command, *bad)
    assert result.exit_code == 2
    assert "Invalid value" in result.stderr or "Error" in result.stderr


@pytest.mark.parametrize("command", ["pins", "interactions"])
def test_unwritable_out_is_a_usage_error(tmp_path: Path, command: str) -> None:
    extra = ["--blob-dir", str(tmp_path / "blobs")] if command == "pins" else []
    missing = _invoke(command, *WORLD, *extra, "--out", str(tmp_path / "missing" / "x.jsonl"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    directory = _invoke(command, *WORLD, *extra, "--out", str(tmp_path))
    assert directory.exit_code == 2 and "is a directory" in directory.stderr
    assert not (tmp_path / "blobs").exists()  # refused before any work
