"""`pinstream config`: the effective settings, secrets masked."""

from __future__ import annotations

import json

import click

from streams.cli.common import settings_or_exit
from streams.settings import Settings


@click.command()
def config() -> None:
    """Show the effective settings as JSON (secrets masked).

    Every field can be set as PINSTREAM_<NAME> in the environment or in a TOML file named by
    PINSTREAM_CONFIG (a [pinstream] table); unknown names are rejected.
    """
    settings = settings_or_exit()
    click.echo(json.dumps(settings.redacted(), indent=2, default=str))


def field_help() -> list[tuple[str, str]]:
    return [(f"PINSTREAM_{name.upper()}", field.description or "")
            for name, field in Settings.model_fields.items()]
