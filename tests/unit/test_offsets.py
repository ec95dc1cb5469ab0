"""Operator positions: offsets, times, edges; garbage is refused with the accepted forms named."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.errors import InputError
from streams.offsets import Position, parse_position


def test_positions_parse_offsets_times_and_edges() -> None:
    assert parse_position("42") == Position(offset=42)
    assert parse_position("beginning") == Position(edge="beginning")
    assert parse_position("END") == Position(edge="end")
    assert parse_position("2026-11-20T10:00:00Z") == Position(
        time=datetime(2026, 11, 20, 10, tzinfo=UTC))


def test_garbage_position_names_the_accepted_forms() -> None:
    with pytest.raises(InputError, match="neither an offset, an ISO-8601 time"):
        parse_position("last tuesday")
