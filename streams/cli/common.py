"""Shared CLI plumbing: settings loading and turning our errors into clean messages and exit codes."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click
from rich.console import Console

from streams.errors import ConfigError, PinstreamError
from streams.settings import Settings, load_settings

P = ParamSpec("P")
R = TypeVar("R")


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Show a PinstreamError as one clear line (and a log tail when it has one), exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except PinstreamError as exc:
            tail = getattr(exc, "log_tail", "")
            if tail:
                click.echo(tail, err=True)
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


def err(message: str) -> None:
    click.echo(message, err=True)
    sys.stderr.flush()


def console() -> Console:
    """A rich console that does not squeeze tables when output is piped (wide enough for names)."""
    out = Console()
    return out if out.is_terminal else Console(width=200)
