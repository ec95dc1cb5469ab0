"""Avro schema compatibility by the spec's resolution rules: can a reader schema read a writer's data?

`check_full_transitive` applies it in both directions over every pair of kept versions, which is
what the tests (and so CI) run over `schemas/`, so an incompatible contract change fails the build.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
# writer type -> reader types it may be promoted to (Avro spec, "Schema Resolution")
_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


@dataclass(frozen=True)
class Incompatibility:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class _Names:
    """Named types (records, enums, fixed) of one schema, by full name and by short name."""

    def __init__(self, schema: Any) -> None:
        self.types: dict[str, dict[str, Any]] = {}
        self._collect(schema, "")

    def _collect(self, schema: Any, namespace: str) -> None:
        if isinstance(schema, list):
            for branch in schema:
                self._collect(branch, namespace)
        elif isinstance(schema, dict):
            kind = schema.get("type")
            if kind in ("record", "error", "enum", "fixed"):
                ns = schema.get("namespace", namespace)
                name = schema["name"]
                full = name if "." in name else f"{ns}.{name}".lstrip(".")
                self.types[full] = schema
                self.types.setdefault(name.rsplit(".", 1)[-1], schema)
                for f in schema.get("fields", []):
                    self._collect(f["type"], ns)
            elif kind == "array":
                self._collect(schema["items"], namespace)
            elif kind == "map":
                self._collect(schema["values"], namespace)
            elif isinstance(kind, dict | list):
                self._collect(kind, namespace)

    def resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            return self.types.get(schema, self.types.get(schema.rsplit(".", 1)[-1], schema))
        if isinstance(schema, dict) and isinstance(schema.get("type"), str | dict | list) and \
                schema.get("type") not in ("record", "error", "enum", "fixed", "array", "map"):
            return self.resolve(schema["type"])  # {"type": "long", "logicalType": ...}
        return schema


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    return str(schema["type"])


def _short(schema: dict[str, Any]) -> str:
    return str(schema["name"]).rsplit(".", 1)[-1]


class _Checker:
    def __init__(self, reader: Any, writer: Any) -> None:
        self.rnames = _Names(reader)
        self.wnames = _Names(writer)
        self.problems: list[Incompatibility] = []
        self._seen: set[tuple[int, int]] = set()

    def check(self, reader: Any, writer: Any, path: str) -> bool:
        reader, writer = self.rnames.resolve(reader), self.wnames.resolve(writer)
        rk, wk = _kind(reader), _kind(writer)
        if wk == "union":
            ok = True
            for i, branch in enumerate(writer):
                ok &= self.check(reader, branch, f"{path}<union:{i}>")
            return ok
        if rk == "union":
            if any(self._quiet(branch, writer) for branch in reader):
                return True
            return self._fail(path, f"no branch of the reader union reads writer type {wk}")
        if rk != wk:
            if rk in _PROMOTIONS.get(wk, set()):
                return True
            return self._fail(path, f"reader type {rk} cannot read writer type {wk}")
        if rk == "record":
            return self._record(reader, writer, path)
        if rk == "enum":
            return self._enum(reader, writer, path)
        if rk == "array":
            return self.check(reader["items"], writer["items"], f"{path}[]")
        if rk == "map":
            return self.check(reader["values"], writer["values"], f"{path}{{}}")
        if rk == "fixed" and (_short(reader) != _short(writer) or reader["size"] != writer["size"]):
            return self._fail(path, "fixed name or size differs")
        return True

    def _quiet(self, reader: Any, writer: Any) -> bool:
        probe = _Checker.__new__(_Checker)
        probe.rnames, probe.wnames, probe.problems, probe._seen = (
            self.rnames, self.wnames, [], self._seen)
        return probe.check(reader, writer, "")

    def _record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> bool:
        if _short(reader) != _short(writer):
            return self._fail(path, f"record {_short(writer)} read as {_short(reader)}")
        key = (id(reader), id(writer))
        if key in self._seen:  # recursive types
            return True
        self._seen.add(key)
        writer_fields = {f["name"]: f for f in writer.get("fields", [])}
        ok = True
        for field in reader.get("fields", []):
            names = [field["name"], *field.get("aliases", [])]
            match = next((writer_fields[n] for n in names if n in writer_fields), None)
            where = f"{path}.{field['name']}"
            if match is None:
                if "default" not in field:
                    ok = self._fail(where, "reader field missing in writer and has no default")
            else:
                ok &= self.check(field["type"], match["type"], where)
        return ok

    def _enum(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> bool:
        if _short(reader) != _short(writer):
            return self._fail(path, f"enum {_short(writer)} read as {_short(reader)}")
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing and "default" not in reader:
            return self._fail(path, f"writer symbols {missing} unknown to reader (no default)")
        return True

    def _fail(self, path: str, message: str) -> bool:
        self.problems.append(Incompatibility(path or "(root)", message))
        return False


def can_read(reader: Any, writer: Any) -> list[Incompatibility]:
    """Problems that stop `reader` from reading data written with `writer` (empty = compatible)."""
    checker = _Checker(reader, writer)
    checker.check(reader, writer, _short(reader) if isinstance(reader, dict) else "")
    return checker.problems


def check_full_transitive(versions: Sequence[tuple[str, Any]]) -> list[str]:
    """Backward and forward compatibility between every pair of (label, schema) versions."""
    problems: list[str] = []
    for i, (new_label, new) in enumerate(versions):
        for old_label, old in versions[:i]:
            problems += [f"backward {new_label} reads {old_label}: {p}" for p in can_read(new, old)]
            problems += [f"forward {old_label} reads {new_label}: {p}" for p in can_read(old, new)]
    return problems
