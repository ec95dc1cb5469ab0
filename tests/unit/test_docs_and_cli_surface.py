"""The README documents every setting, and every CLI command the root lists can be loaded."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from streams.cli import _COMMANDS, cli
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"PINSTREAM_{name.upper()}" not in readme]
    assert not missing, f"README lacks {missing}"


def test_every_listed_command_loads_and_has_help() -> None:
    runner = CliRunner()
    for name in _COMMANDS:
        command = cli.get_command(click.Context(cli), name)
        assert isinstance(command, click.Command), name
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output


def test_unknown_setting_in_environment_is_a_clean_cli_error() -> None:
    result = CliRunner().invoke(cli, ["config"], env={"PINSTREAM_BOOTSTRAP_SERVER": "x:1"})
    assert result.exit_code == 1
    assert "unknown settings in the environment: PINSTREAM_BOOTSTRAP_SERVER" in result.output
