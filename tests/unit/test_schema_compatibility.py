"""The CI gate over `schemas/` (full transitive compatibility, docs, defaults, event identity) and
unit cases of the compatibility checker, one per Avro resolution rule."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.compat import can_read, check_full_transitive
from streams.contracts import SCHEMAS_DIR

RECORD_DIRS = sorted(p for p in SCHEMAS_DIR.iterdir() if p.is_dir())
SCHEMA_FILES = sorted(SCHEMAS_DIR.glob("*/v*.avsc"))


def _versions(record_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    files = sorted(record_dir.glob("v*.avsc"), key=lambda p: int(p.stem[1:]))
    return [(p.stem, json.loads(p.read_text())) for p in files]


def _named_types(schema: Any) -> Iterator[dict[str, Any]]:
    """Every record, enum and fixed defined anywhere inside `schema`."""
    if isinstance(schema, list):
        for branch in schema:
            yield from _named_types(branch)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            yield schema
            for field in schema.get("fields", []):
                yield from _named_types(field["type"])
        elif kind == "array":
            yield from _named_types(schema["items"])
        elif kind == "map":
            yield from _named_types(schema["values"])


def _fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in schema["fields"]}


# --- the gate over schemas/ ----------------------------------------------------------------------


def test_schema_folder_holds_every_contract() -> None:
    assert [p.name for p in RECORD_DIRS] == [
        "FeedUpdated", "GraphEdgeDelta", "PinCreated", "PinEmbedding", "PinInteraction", "Reconciliation",
    ]
    assert all(list(d.glob("v*.avsc")) for d in RECORD_DIRS)


@pytest.mark.parametrize("record_dir", RECORD_DIRS, ids=lambda p: p.name)
def test_kept_versions_are_full_transitive_compatible(record_dir: Path) -> None:
    assert check_full_transitive(_versions(record_dir)) == []


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_field_and_named_type_has_a_doc(path: Path) -> None:
    for named in _named_types(json.loads(path.read_text())):
        assert named.get("doc", "").strip(), f"{named['name']} has no doc"
        for field in named.get("fields", []):
            assert field.get("doc", "").strip(), f"{named['name']}.{field['name']} has no doc"


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_enum_has_a_default_among_its_symbols(path: Path) -> None:
    for named in _named_types(json.loads(path.read_text())):
        if named["type"] == "enum":
            assert named.get("default") in named["symbols"], f"enum {named['name']} lacks a default"


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_record_has_a_uuid_event_id_and_a_millisecond_event_time(path: Path) -> None:
    fields = _fields(json.loads(path.read_text()))
    assert fields["event_id"]["type"] == {"type": "string", "logicalType": "uuid"}
    assert fields["event_time"]["type"] == {"type": "long", "logicalType": "timestamp-millis"}


# --- checker unit cases --------------------------------------------------------------------------


def _record(*fields: dict[str, Any], name: str = "R") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields)}


def _field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def test_int_written_is_readable_as_long() -> None:
    assert can_read(_record(_field("n", "long")), _record(_field("n", "int"))) == []


def test_long_written_is_not_readable_as_int() -> None:
    problems = can_read(_record(_field("n", "int")), _record(_field("n", "long")))
    assert [p.path for p in problems] == ["R.n"]
    assert "int cannot read writer type long" in problems[0].message


def test_promotion_through_a_logical_type_wrapper() -> None:
    millis = {"type": "long", "logicalType": "timestamp-millis"}
    assert can_read(_record(_field("t", millis)), _record(_field("t", "int"))) == []
    assert can_read(_record(_field("t", "double")), _record(_field("t", millis))) == []


def test_string_and_bytes_are_interchangeable() -> None:
    assert can_read(_record(_field("b", "bytes")), _record(_field("b", "string"))) == []
    assert can_read(_record(_field("b", "string")), _record(_field("b", "bytes"))) == []


def test_union_branch_added_is_readable_by_the_new_reader_only() -> None:
    old = _record(_field("v", ["null", "string"], default=None))
    new = _record(_field("v", ["null", "string", "long"], default=None))
    assert can_read(new, old) == []
    assert [p.path for p in can_read(old, new)] == ["R.v<union:2>"]
    assert len(check_full_transitive([("v1", old), ("v2", new)])) == 1


def test_union_branch_removed_breaks_backward_compatibility() -> None:
    old = _record(_field("v", ["null", "string", "long"], default=None))
    new = _record(_field("v", ["null", "string"], default=None))
    problems = check_full_transitive([("v1", old), ("v2", new)])
    assert len(problems) == 1 and problems[0].startswith("backward v2 reads v1")


def test_plain_type_widened_to_a_union_reads_old_data() -> None:
    assert can_read(_record(_field("v", ["null", "string"])), _record(_field("v", "string"))) == []


def test_enum_symbol_added_without_reader_default_is_flagged() -> None:
    def enum(*symbols: str, **extra: Any) -> dict[str, Any]:
        return _record(_field("e", {"type": "enum", "name": "E", "symbols": list(symbols), **extra}))

    problems = can_read(enum("A", "B"), enum("A", "B", "C"))
    assert len(problems) == 1 and "['C']" in problems[0].message
    assert can_read(enum("A", "B", default="A"), enum("A", "B", "C")) == []


def test_field_removed_without_default_breaks_old_readers() -> None:
    old = _record(_field("a", "string"), _field("b", "string"))
    new = _record(_field("a", "string"))
    problems = check_full_transitive([("v1", old), ("v2", new)])
    assert problems == ["forward v1 reads v2: R.b: reader field missing in writer and has no default"]


def test_field_removed_with_default_is_compatible() -> None:
    old = _record(_field("a", "string"), _field("b", "string", default=""))
    new = _record(_field("a", "string"))
    assert check_full_transitive([("v1", old), ("v2", new)]) == []


def test_field_renamed_with_an_alias_is_readable() -> None:
    old = _record(_field("title", "string"))
    new = _record(_field("headline", "string", aliases=["title"]))
    assert can_read(new, old) == []


def test_record_rename_is_flagged() -> None:
    old, new = _record(_field("a", "string"), name="Old"), _record(_field("a", "string"), name="New")
    problems = can_read(new, old)
    assert len(problems) == 1 and "record Old read as New" in problems[0].message


def test_nested_record_in_array_is_checked_field_by_field() -> None:
    feed = json.loads((SCHEMAS_DIR / "FeedUpdated" / "v1.avsc").read_text())
    changed = json.loads(json.dumps(feed))
    item = next(f for f in changed["fields"] if f["name"] == "items")["type"]["items"]
    item["fields"].append(_field("explanation", "string", doc="Why, in words."))
    next(f for f in item["fields"] if f["name"] == "score")["type"] = "float"
    problems = check_full_transitive([("v1", feed), ("v2", changed)])
    assert sorted(problems) == [
        "backward v2 reads v1: FeedUpdated.items[].explanation: "
        "reader field missing in writer and has no default",
        "backward v2 reads v1: FeedUpdated.items[].score: reader type float cannot read writer type double",
    ]


def test_fixed_of_another_size_is_flagged() -> None:
    def fixed(size: int) -> dict[str, Any]:
        return _record(_field("h", {"type": "fixed", "name": "Hash", "size": size}))

    assert can_read(fixed(16), fixed(16)) == []
    problems = can_read(fixed(16), fixed(8))
    assert [(p.path, p.message) for p in problems] == [("R.h", "fixed name or size differs")]


def test_recursive_record_is_checked_without_looping() -> None:
    node = _record(_field("value", "long"), _field("next", ["null", "R"], default=None))
    assert can_read(node, node) == []
