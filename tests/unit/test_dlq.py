"""Dead letters for operators, without a broker: ids, filters, where a letter goes back to, and the
headers a redriven record carries (so that it is counted once downstream and never redriven twice)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from processors.graph_state import position_of
from streams.deadletter import RawRecord, dead_letter_headers
from streams.dlq import DeadLetter, LetterFilter, parse_letter_id, redrive_headers
from streams.errors import InputError
from streams.topics import HEADER_DLQ_REASON, HEADER_DLQ_REDRIVE_OF, HEADER_REPLAY_OF

ROOT = Path(__file__).resolve().parents[2]
T = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def letter(reason: str = "corrupt_image", source: str = "t1.pins.created.v1/4/1234",
           headers: tuple[tuple[str, bytes], ...] = (("trace", b"abc"),)) -> DeadLetter:
    original = RawRecord("t1.pins.created.v1", 4, 1234, b"p1", b"bytes", headers, None)
    listed = [(k, v) for k, v in dead_letter_headers(original, reason, "boom") if k != "pinstream.dlq.source"]
    return DeadLetter(2, 77, int(T.timestamp() * 1000), b"p1", b"bytes",
                      (*listed, ("pinstream.dlq.source", source.encode())))


def test_letter_ids_are_partition_colon_offset() -> None:
    assert parse_letter_id("2:77") == (2, 77)
    assert letter().id == "2:77"
    for bad in ("2", "a:1", "2:-1", ""):
        with pytest.raises(InputError, match="pinstream dlq list"):
            parse_letter_id(bad)


def test_a_letter_knows_its_reason_source_topic_and_time() -> None:
    one = letter()
    assert one.reason == "corrupt_image"
    assert one.source_topic == "t1.pins.created.v1"
    assert one.time == T
    assert letter(source="nonsense").source_topic is None


def test_filters_select_by_reason_source_and_time() -> None:
    one = letter()
    assert LetterFilter().matches(one)
    assert LetterFilter(reason="corrupt_image", source="pins.created", since=T).matches(one)
    assert not LetterFilter(reason="bad_magic").matches(one)
    assert not LetterFilter(source="interactions").matches(one)
    assert not LetterFilter(since=datetime(2026, 5, 2, tzinfo=UTC)).matches(one)


def test_a_redriven_record_keeps_its_headers_names_its_letter_and_keeps_its_original_position() -> None:
    headers = redrive_headers(letter(), "t1.ops.deadletter.v1")
    names = [k for k, _ in headers]
    assert ("trace", b"abc") in headers
    assert HEADER_DLQ_REASON not in names and "pinstream.dlq.source" not in names
    assert dict(headers)[HEADER_DLQ_REDRIVE_OF] == b"t1.ops.deadletter.v1/2/77"
    assert dict(headers)[HEADER_REPLAY_OF] == b"t1.pins.created.v1/4/1234"
    # The graph counts the redriven copy at the original's position: once, not twice.
    copy = RawRecord("t1.pins.created.v1", 0, 9999, b"p1", b"bytes", tuple(headers), None)
    assert tuple(position_of(copy)) == ("t1.pins.created.v1/4", 1234)


def test_a_letter_that_was_already_a_replay_keeps_the_first_original() -> None:
    replayed = letter(headers=((HEADER_REPLAY_OF, b"t1.pins.created.v1/1/5"),))
    headers = redrive_headers(replayed, "t1.ops.deadletter.v1")
    assert [v for k, v in headers if k == HEADER_REPLAY_OF] == [b"t1.pins.created.v1/1/5"]


def test_the_readme_states_each_processors_guarantee_and_names_tests_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Processing guarantees", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| **")]
    named = {row.split("**")[1] for row in rows}
    assert named >= {"embed", "interactions / graph", "feed", "index follower", "reconciler"}, named
    for row in rows:
        offsets, key, tests = (cell.strip() for cell in row.split(" | ")[1:4])
        assert offsets and key, row
        files = [part.split("`")[0] for part in tests.split("`tests/")[1:]]
        assert files, f"no test named for {row[:40]}"
        for file in files:
            assert (ROOT / "tests" / file).exists(), file
    assert "Kafka transactions are not used" in section
