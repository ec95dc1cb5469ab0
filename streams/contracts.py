"""The Avro contracts of `schemas/`, parsed once: every kept version, its fingerprint, the latest.

`schemas/<Record>/v<N>.avsc` holds version N of a record; the highest N is what we write.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from streams.errors import ConfigError

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    """One kept version of one record schema."""

    name: str  # short record name, e.g. "PinCreated"
    version: int
    path: Path
    raw: dict[str, Any]  # the JSON as written (for registries and compatibility checks)
    parsed: Any  # fastavro's parsed schema, reused for every message
    canonical: str  # Avro parsing canonical form
    fingerprint: bytes  # CRC-64-AVRO of the canonical form, little-endian (single-object header)

    @property
    def full_name(self) -> str:
        return f"{self.raw.get('namespace', '')}.{self.raw['name']}".lstrip(".")


@dataclass(frozen=True)
class ContractSet:
    """All kept versions of all records, indexed for the codec."""

    versions: dict[str, tuple[SchemaVersion, ...]]  # name -> versions, oldest first
    by_fingerprint: dict[bytes, SchemaVersion]

    def latest(self, name: str) -> SchemaVersion:
        try:
            return self.versions[name][-1]
        except KeyError as exc:
            known = ", ".join(sorted(self.versions))
            raise ConfigError(f"no schema named {name!r}; known: {known}") from exc

    def names(self) -> list[str]:
        return sorted(self.versions)


def _crc64_avro_fingerprint(canonical: str) -> bytes:
    # fastavro's hex string already lists the bytes little-endian, which is the order the
    # single-object header carries (the Avro spec's test vector is checked in the unit tests).
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def load_contracts(directory: Path = SCHEMAS_DIR) -> ContractSet:
    """Parse every `<Record>/v<N>.avsc` under `directory`. Raises ConfigError on a bad file."""
    if not directory.is_dir():
        raise ConfigError(f"schema folder {directory} is missing; reinstall pinstream")
    versions: dict[str, list[SchemaVersion]] = {}
    by_fp: dict[bytes, SchemaVersion] = {}
    for record_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        for path in sorted(record_dir.glob("v*.avsc")):
            match = _VERSION_FILE.match(path.name)
            if not match:
                continue
            try:
                raw = json.loads(path.read_text())
                # Keep fastavro's "already parsed" marker: without it every schemaless_writer and
                # schemaless_reader call parses the schema again (about 2x slower per message).
                parsed = parse_schema(raw, _force=True)
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"schema {path} does not parse: {exc}") from exc
            if raw.get("name") != record_dir.name:
                raise ConfigError(f"schema {path}: record name {raw.get('name')!r} != folder")
            canonical = to_parsing_canonical_form(raw)
            version = SchemaVersion(
                name=record_dir.name,
                version=int(match.group(1)),
                path=path,
                raw=raw,
                parsed=parsed,
                canonical=canonical,
                fingerprint=_crc64_avro_fingerprint(canonical),
            )
            versions.setdefault(version.name, []).append(version)
            by_fp[version.fingerprint] = version
    ordered = {name: tuple(sorted(vs, key=lambda v: v.version)) for name, vs in versions.items()}
    return ContractSet(versions=ordered, by_fingerprint=by_fp)


@lru_cache(maxsize=1)
def contracts() -> ContractSet:
    """The process-wide contract set, parsed once."""
    return load_contracts()
