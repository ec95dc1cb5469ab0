"""Pinstream wiring: the core everyone may use (events, codec, settings, errors, topics) and the
entry points nobody imports (CLI, faust app, web views)."""

__version__ = "0.1.0"
