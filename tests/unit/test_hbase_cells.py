"""The pin store's cell layout without a server: encode and decode round trips, exact timestamps,
graph neighbour values, and bad vectors refused with a typed error."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinks.hbase import (
    decode_neighbour,
    decode_pin,
    describe,
    embedding_cells,
    encode_neighbour,
    from_millis,
    millis,
    neighbour_column,
    pin_cells,
    row_key,
)
from streams.errors import InputError
from streams.events import PinCreated, PinEmbedding


def test_pin_cells_decode_to_the_same_metadata() -> None:
    pin = PinCreated(pin_id="p1", user_id="u1", board_id="b1", title="Été à Paris ☀",
                     description="", link=None, tags=("a", "b c"), image_ref="sha256:ab",
                     event_time=datetime(2026, 11, 20, 10, 0, 0, 123000, tzinfo=UTC))
    record = decode_pin("p1", pin_cells(pin))
    assert record is not None
    assert (record.title, record.description, record.link, record.tags) == ("Été à Paris ☀", "", None,
                                                                             ("a", "b c"))
    assert (record.image_ref, record.image_url) == ("sha256:ab", None)
    assert (record.event_id, record.event_time) == (pin.event_id, pin.event_time)
    assert record.embedding is None and record.pending_embedding is None


def test_a_row_without_metadata_is_not_a_pin() -> None:
    assert decode_pin("p1", {b"s:embedding": b"pending", b"s:reason": b"timeout"}) is None


def test_embedding_cells_hold_little_endian_float32_and_clear_the_pending_mark() -> None:
    vector = np.random.default_rng(3).standard_normal(1280).astype(np.float32)
    embedding = PinEmbedding(pin_id="p1", source_event_id=PinCreated(
        pin_id="p1", user_id="u", board_id="b", title="t", description="d").event_id,
        model_id="m", model_version="2", vector=tuple(vector.tolist()))
    cells = embedding_cells(embedding)
    assert len(cells[b"e:vector"]) == 1280 * 4
    assert np.array_equal(np.frombuffer(cells[b"e:vector"], dtype="<f4"), vector)
    assert (cells[b"s:embedding"], cells[b"s:reason"]) == (b"ready", b"")


@pytest.mark.parametrize("bad", [(1e39, 0.0), (math.inf, "x")])
def test_a_vector_that_is_not_float32_is_an_input_error(bad: tuple[object, ...]) -> None:
    embedding = PinEmbedding(pin_id="p1", source_event_id=PinCreated(
        pin_id="p1", user_id="u", board_id="b", title="t", description="d").event_id,
        model_id="m", model_version="1", vector=bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="p1"):
        embedding_cells(embedding)


def test_millis_is_exact_and_naive_times_are_utc() -> None:
    moment = datetime(2026, 11, 20, 10, 0, 0, 999000, tzinfo=UTC)
    assert millis(moment) == 1_795_168_800_999
    assert from_millis(millis(moment)) == moment
    assert millis(moment.replace(tzinfo=None)) == millis(moment)
    later = moment + timedelta(milliseconds=1)
    assert millis(later) == millis(moment) + 1


def test_neighbour_values_round_trip() -> None:
    updated = datetime(2026, 11, 20, 10, tzinfo=UTC)
    assert decode_neighbour(encode_neighbour(0.25, updated)) == (0.25, updated)
    assert neighbour_column("pin:p9") == b"n:pin:p9"


def test_an_empty_pin_id_is_refused() -> None:
    with pytest.raises(ValueError):
        row_key("")


def test_error_descriptions_keep_one_short_line() -> None:
    java_trace = "org.apache.hadoop.hbase.TableNotFoundException: x\n\tat org.apache...\n" * 50
    text = describe(OSError(java_trace))
    assert "\n" not in text and text.startswith("OSError: org.apache.hadoop.hbase.TableNotFound")


@given(st.integers(min_value=-62_135_596_800_000 + 86_400_000, max_value=253_402_300_799_999))
def test_from_millis_is_the_epoch_plus_that_many_milliseconds(value: int) -> None:
    moment = from_millis(value)
    assert moment == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value)
    assert millis(moment) == value
