"""On-disk snapshots of the ANN index: faiss index bytes, pin ids and a checksummed JSON manifest.

A snapshot is a folder holding `manifest.json` plus two data files named in it. Data files are
written under fresh names first; replacing the manifest (temp file, fsync, rename) is the single
commit point, so a crash leaves either the old snapshot or the new one, never a mix. The manifest's
SHA-256 covers its own metadata and both data files, so a flipped byte anywhere is detected.
Nothing is pickled: the index goes through faiss's own serialisation, pin ids are UTF-8 lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import faiss

from streams.errors import SinkError

SNAPSHOT_FORMAT = "pinstream-ann-snapshot/1"
MANIFEST_NAME = "manifest.json"
_CHUNK = 4 * 1024 * 1024

SnapshotProblem = Literal["missing", "corrupt", "mismatched"]


class SnapshotError(SinkError):
    """A snapshot cannot be used; ``reason`` is missing / corrupt / mismatched, ``detail`` says why."""

    def __init__(self, message: str, *, reason: SnapshotProblem, detail: str) -> None:
        super().__init__(message, dependency="faiss")
        self.reason: SnapshotProblem = reason
        self.detail = detail

    @property
    def summary(self) -> str:
        """`corrupt: checksum`, `missing`, `mismatched: model version`...: short, for logs."""
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot holds and which part of the embeddings topic it covers."""

    model_version: str
    dim: int
    kind: str  # "flat" | "ivf_sq8"
    count: int
    trained_for: int  # the collection size the index was trained for (0 when untrained)
    topic: str = ""
    offsets: Mapping[int, int] = field(default_factory=dict)  # partition -> next offset to read
    created_at: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["offsets"] = {str(p): o for p, o in sorted(self.offsets.items())}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SnapshotMeta:
        return cls(
            model_version=str(data["model_version"]), dim=int(data["dim"]), kind=str(data["kind"]),
            count=int(data["count"]), trained_for=int(data["trained_for"]),
            topic=str(data.get("topic", "")),
            offsets={int(p): int(o) for p, o in dict(data.get("offsets", {})).items()},
            created_at=str(data.get("created_at", "")),
        )


@dataclass(frozen=True, slots=True)
class LoadedSnapshot:
    index: faiss.Index
    pin_ids: list[str]
    meta: SnapshotMeta


def write_snapshot(directory: Path, index: faiss.Index, pin_ids: Sequence[str],
                   meta: SnapshotMeta) -> Path:
    """Write a snapshot into `directory` atomically; returns the manifest path.

    On any failure the previous snapshot (if any) stays valid and no temp file is left behind.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stamp = uuid.uuid4().hex[:12]
    index_path = directory / f"index-{stamp}.faiss"
    pins_path = directory / f"pins-{stamp}.txt"
    manifest_path = directory / MANIFEST_NAME
    meta = _with_time(meta)
    written: list[Path] = []
    try:
        _write_index_file(index, index_path, written)
        _write_durably(pins_path, [_pins_blob(pin_ids)], written)
        checksum = _checksum(meta, [index_path, pins_path])
        manifest = {
            "format": SNAPSHOT_FORMAT,
            "meta": meta.to_json(),
            "files": {
                "index": {"name": index_path.name, "bytes": index_path.stat().st_size},
                "pins": {"name": pins_path.name, "bytes": pins_path.stat().st_size},
            },
            "sha256": checksum,
        }
        _write_durably(manifest_path, [json.dumps(manifest, indent=2).encode() + b"\n"], [],
                       replace=True)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    _remove_stale(directory, keep={index_path.name, pins_path.name, MANIFEST_NAME})
    return manifest_path


def read_snapshot(directory: Path, *, expected_model_version: str, expected_dim: int | None = None,
                  expected_topic: str | None = None) -> LoadedSnapshot:
    """Read and verify a snapshot; raises SnapshotError (missing / corrupt / mismatched)."""
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        raise SnapshotError(f"no snapshot at {directory}", reason="missing", detail="")
    try:
        manifest = json.loads(manifest_path.read_bytes())
        if manifest.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, expected {SNAPSHOT_FORMAT!r}")
        meta = SnapshotMeta.from_json(manifest["meta"])
        files = manifest["files"]
        index_path = directory / str(files["index"]["name"])
        pins_path = directory / str(files["pins"]["name"])
        sizes = {index_path: int(files["index"]["bytes"]), pins_path: int(files["pins"]["bytes"])}
        expected_sum = str(manifest["sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise _corrupt(directory, "manifest", str(exc)) from exc
    for path, size in sizes.items():
        if path.parent != directory or not path.is_file():
            raise _corrupt(directory, "data file missing", path.name)
        if path.stat().st_size != size:
            raise _corrupt(directory, "truncated",
                           f"{path.name} has {path.stat().st_size} bytes, manifest says {size}")
    if _checksum(meta, [index_path, pins_path]) != expected_sum:
        raise _corrupt(directory, "checksum", "SHA-256 does not match the manifest")
    _check_expected(directory, meta, expected_model_version, expected_dim, expected_topic)
    try:
        index = faiss.read_index(str(index_path))
    except RuntimeError as exc:
        raise _corrupt(directory, "index bytes", str(exc).splitlines()[0] if str(exc) else "") from exc
    pin_ids = _parse_pins(pins_path.read_bytes())
    if len(pin_ids) != meta.count or index.ntotal != meta.count or index.d != meta.dim:
        raise _corrupt(directory, "inconsistent",
                       f"{len(pin_ids)} pin ids, {index.ntotal} vectors of dim {index.d}, "
                       f"manifest says {meta.count} of dim {meta.dim}")
    return LoadedSnapshot(index, pin_ids, meta)


def _check_expected(directory: Path, meta: SnapshotMeta, model_version: str, dim: int | None,
                    topic: str | None) -> None:
    if meta.model_version != model_version:
        raise SnapshotError(
            f"snapshot at {directory} is for model version {meta.model_version!r}, "
            f"expected {model_version!r}", reason="mismatched", detail="model version")
    if dim is not None and meta.dim != dim:
        raise SnapshotError(f"snapshot at {directory} holds {meta.dim}-d vectors, expected {dim}",
                            reason="mismatched", detail="dimension")
    if topic is not None and meta.topic != topic:
        raise SnapshotError(f"snapshot at {directory} covers topic {meta.topic!r}, expected {topic!r}",
                            reason="mismatched", detail="topic")


def _corrupt(directory: Path, what: str, why: str) -> SnapshotError:
    return SnapshotError(f"snapshot at {directory} is corrupt ({what}): {why}",
                         reason="corrupt", detail=what)


def _with_time(meta: SnapshotMeta) -> SnapshotMeta:
    if meta.created_at:
        return meta
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return SnapshotMeta(meta.model_version, meta.dim, meta.kind, meta.count, meta.trained_for,
                        meta.topic, dict(meta.offsets), now)


def _pins_blob(pin_ids: Sequence[str]) -> bytes:
    return "".join(f"{pin}\n" for pin in pin_ids).encode()


def _parse_pins(blob: bytes) -> list[str]:
    if not blob:
        return []
    return blob.decode().split("\n")[:-1]


def _checksum(meta: SnapshotMeta, paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(meta.to_json(), sort_keys=True, separators=(",", ":")).encode())
    for path in paths:
        digest.update(b"\x00" + path.name.encode() + b"\x00")
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _write_index_file(index: faiss.Index, path: Path, written: list[Path]) -> None:
    # faiss writes straight to the file: no second in-memory copy of a ~1 GB index.
    tmp = path.with_name(f".{path.name}.tmp")
    written.append(tmp)
    try:
        faiss.write_index(index, str(tmp))
    except RuntimeError as exc:
        raise SinkError(f"could not write the index to {tmp}: {exc}", dependency="faiss") from exc
    _fsync_file(tmp)
    os.replace(tmp, path)
    written.append(path)


def _write_durably(path: Path, chunks: Iterable[bytes], written: list[Path], *,
                   replace: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        if not replace and path.exists():
            raise FileExistsError(path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    written.append(path)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale(directory: Path, keep: set[str]) -> None:
    """Drop data files of earlier snapshots and temp files of interrupted ones."""
    for path in directory.iterdir():
        stale_data = path.name.startswith(("index-", "pins-")) and path.name not in keep
        stale_tmp = path.name.startswith(".") and path.name.endswith(".tmp")
        if (stale_data or stale_tmp) and path.is_file():
            path.unlink(missing_ok=True)
