"""JSONL validation for `pinstream produce`: every bad line is named with its number and reason."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime

import pytest

from streams.errors import InputError
from streams.jsonl import (
    MAX_LINE_CHARS,
    Line,
    interaction_arguments,
    parse_event_time,
    pin_arguments,
    read_objects,
)

PIN = {"pin_id": "p1", "user_id": "u1", "board_id": "b1", "title": "Lamp", "image_ref": "ab12.jpg"}


def _pin(**changes: object) -> Line:
    return Line(7, {**PIN, **changes})


def test_reader_reports_non_json_and_non_objects_with_line_numbers() -> None:
    text = '{"a": 1}\n\n{oops\n[1]\n"x"\n{"b": 2}\n'
    items = list(read_objects(io.StringIO(text)))
    errors = [i for i in items if isinstance(i, InputError)]
    assert [e.line for e in errors] == [3, 4, 5]
    assert [i.number for i in items if isinstance(i, Line)] == [1, 6]
    assert "not valid JSON" in str(errors[0]) and "got list" in str(errors[1])


def test_oversized_line_is_refused_and_reading_continues() -> None:
    text = '{"a": "' + "x" * (MAX_LINE_CHARS + 10) + '"}\n{"b": 1}\n'
    items = list(read_objects(io.StringIO(text)))
    assert isinstance(items[0], InputError) and items[0].line == 1
    assert isinstance(items[1], Line) and items[1].number == 2


def test_valid_pin_line_gives_producer_arguments() -> None:
    args = pin_arguments(_pin(tags=["a"], event_time="2026-11-20T10:00:00.000Z",
                              event_id="7d3f1c5e-2b1a-4c8e-9f00-0123456789ab"))
    assert args["image_ref"] == "ab12.jpg" and args["tags"] == ("a",)
    assert args["event_time"] == datetime(2026, 11, 20, 10, tzinfo=UTC)
    assert str(args["event_id"]) == "7d3f1c5e-2b1a-4c8e-9f00-0123456789ab"


def test_inline_base64_image_is_decoded() -> None:
    raw = b"\xff\xd8\xff" + bytes(100)
    args = pin_arguments(Line(1, {**{k: v for k, v in PIN.items() if k != "image_ref"},
                                  "image_base64": base64.b64encode(raw).decode()}))
    assert args["image_bytes"] == raw


@pytest.mark.parametrize(("changes", "reason"), [
    ({"image_ref": None}, "exactly one of image_ref, image_base64, image_url"),
    ({"image_url": "https://example.com/x.jpg"}, "exactly one of"),
    ({"image_ref": "../etc/passwd"}, "is not a blob key"),
    ({"image_ref": None, "image_base64": "@@@"}, "not valid base64"),
    ({"image_ref": None, "image_url": "file:///etc/passwd"}, "image_url must be http(s)"),
    ({"title": None}, "missing required field(s) title"),
    ({"title": 3}, "title must be a string"),
    ({"tags": "a,b"}, "tags must be a list of strings"),
    ({"colour": "red"}, "unknown field(s) colour"),
    ({"event_id": "nope"}, "is not a UUID"),
    ({"event_time": "yesterday"}, "is not ISO-8601"),
    ({"event_time": "2026-11-20T10:00:00"}, "has no UTC offset"),
    ({"event_time": True}, "ISO-8601 text or epoch milliseconds"),
])
def test_invalid_pin_lines_name_line_and_reason(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(InputError) as info:
        pin_arguments(_pin(**changes))
    assert info.value.line == 7
    assert reason in str(info.value) and str(info.value).startswith("line 7: ")


def test_interaction_line_requires_its_fields() -> None:
    with pytest.raises(InputError, match=r"missing required field.*session_id"):
        interaction_arguments(Line(2, {"user_id": "u", "pin_id": "p", "action": "click"}))
    args = interaction_arguments(Line(2, {"user_id": "u", "pin_id": "p", "action": "click",
                                          "session_id": "s", "event_time": 1_700_000_000_000}))
    assert args["event_time"] == datetime.fromtimestamp(1_700_000_000, tz=UTC)


def test_event_time_out_of_range_is_an_input_error() -> None:
    with pytest.raises(InputError, match="out of range"):
        parse_event_time(10**20)


def test_generated_lines_round_trip_through_json() -> None:
    line = json.dumps(PIN)
    (item,) = list(read_objects(io.StringIO(line)))
    assert isinstance(item, Line) and pin_arguments(item)["pin_id"] == "p1"
