"""The ANN index of pin embeddings for one embedding-model version: upsert, delete, cosine search.

Vectors are L2-normalised, so inner product = cosine. Small collections are searched exactly
(`IndexFlatIP` behind an `IndexIDMap2`); once a collection is large enough to train on, the index
becomes IVF over 8-bit scalar-quantised vectors (`IndexIVFScalarQuantizer`, 1.3 KB per 1280-d
vector) with a hash-table direct map, which supports in-place removal, so upsert and delete need no
tombstones. `docs/benchmarks.md` ("Visual search (ANN)") has the measurements behind this choice.
Every public method takes one lock: searches from a web view may run beside upserts from an agent.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, NamedTuple

import faiss
import numpy as np
import numpy.typing as npt

from sinks.faiss_snapshot import SnapshotError, SnapshotMeta, read_snapshot, write_snapshot
from streams.errors import SinkError
from streams.events import PinEmbedding

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
VectorLike = Sequence[float] | npt.NDArray[Any]

DEFAULT_FLAT_MAX = 20_000  # exact search below this size (about 5 ms per query at 1280-d)
DEFAULT_NPROBE = 32
RETRAIN_GROWTH = 8
TRAIN_POINTS_PER_LIST = 39  # fewer makes k-means unreliable (faiss warns below this)
_ID_MASK = (1 << 63) - 1
_DIRECT_MAP_HASHTABLE: int = faiss.DirectMap.Hashtable  # type: ignore[attr-defined]
_NORM_TOLERANCE = 1e-3

RejectReason = Literal["model_version_mismatch", "bad_dimension", "bad_vector", "bad_pin_id",
                       "id_collision"]


class IndexKind(StrEnum):
    AUTO = "auto"  # exact until large enough to train, then IVF-SQ8
    FLAT = "flat"  # always exact (memory: 4 * dim bytes per vector)
    IVF_SQ8 = "ivf_sq8"  # IVF over 8-bit scalar-quantised vectors, as soon as it can be trained


class VectorRejectedError(SinkError):
    """A vector was refused; ``reason`` says why, ``pin_id`` names the pin."""

    def __init__(self, message: str, *, reason: RejectReason, pin_id: str) -> None:
        super().__init__(message, dependency="faiss")
        self.reason: RejectReason = reason
        self.pin_id = pin_id


class SearchHit(NamedTuple):
    pin_id: str
    score: float  # cosine similarity (approximate once quantised; capped at 1.0)


def pin_key(pin_id: str) -> int:
    """The int64 faiss id of a pin: the first 8 bytes of its BLAKE2b digest, as 63 bits."""
    digest = hashlib.blake2b(pin_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _ID_MASK


def nlist_for(size: int) -> int:
    """Inverted lists for a collection of `size`: a power of two near sqrt(size), 64..4096."""
    target = math.sqrt(max(size, 1))
    return int(min(4096, max(64, 2 ** round(math.log2(target)))))


class VectorIndex:
    """Pin embeddings of one model version, searchable by cosine similarity. Thread-safe."""

    def __init__(self, model_version: str, dim: int, *, kind: IndexKind = IndexKind.AUTO,
                 flat_max: int = DEFAULT_FLAT_MAX, nprobe: int = DEFAULT_NPROBE,
                 expected_size: int = 0, topic: str = "") -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.model_version = model_version
        self.dim = dim
        self.kind_policy = IndexKind(kind)
        self.flat_max = flat_max
        self.nprobe = nprobe
        self.expected_size = expected_size
        self.topic = topic
        self._lock = threading.Lock()
        self._pins: dict[int, str] = {}
        self._offsets: dict[int, int] = {}
        self._trained_for = 0
        self.trained_on = 0  # vectors the IVF lists were trained on, in this process (0: unknown)
        self._index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    # --- state -----------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._pins)

    def __contains__(self, pin_id: object) -> bool:
        if not isinstance(pin_id, str):
            return False
        with self._lock:
            return self._pins.get(pin_key(pin_id)) == pin_id

    @property
    def kind(self) -> IndexKind:
        """What the index is now: FLAT (exact) or IVF_SQ8 (trained)."""
        return IndexKind.IVF_SQ8 if self._trained_for else IndexKind.FLAT

    @property
    def faiss_index(self) -> faiss.Index:
        """The underlying faiss index, for benchmarks and diagnostics: searching it bypasses the
        lock and the pin-id map, and writing to it would desynchronise them."""
        return self._index

    @property
    def trained_for(self) -> int:
        """The collection size the IVF lists were chosen for; 0 while exact."""
        return self._trained_for

    @property
    def needs_retrain(self) -> bool:
        """True once the collection outgrew its lists 8-fold: searches slow down, rebuild it."""
        return bool(self._trained_for) and len(self) > RETRAIN_GROWTH * self._trained_for

    def set_nprobe(self, nprobe: int) -> None:
        """IVF lists scanned per query from now on: more = better recall, slower searches."""
        if nprobe <= 0:
            raise ValueError(f"nprobe must be positive, got {nprobe}")
        with self._lock:
            self.nprobe = nprobe
            if self._trained_for:
                faiss.extract_index_ivf(self._index).nprobe = nprobe

    def offsets(self) -> dict[int, int]:
        """Partition -> next offset of the embeddings topic that this index reflects."""
        with self._lock:
            return dict(self._offsets)

    def advance(self, offsets: Mapping[int, int]) -> None:
        """Record that records before these offsets are applied (offsets never move back)."""
        with self._lock:
            self._advance(offsets)

    def memory_bytes(self) -> int:
        """Estimated resident bytes: vectors/codes, ids, lists or maps, and the pin-id map."""
        with self._lock:
            count = len(self._pins)
            # str + int objects and a dict slot for each pin in `_pins`
            python_map = count * 150
            if self._trained_for:
                ivf = faiss.extract_index_ivf(self._index)
                code_size = int(ivf.code_size)
                hashtable = 40  # unordered_map node + bucket per id
                trained = ivf.nlist * self.dim * 4 + 2 * self.dim * 4
                return count * (code_size + 8 + hashtable) + trained + python_map
            return count * (self.dim * 4 + 8 + 40) + python_map

    # --- writes ----------------------------------------------------------------------------

    def check(self, pin_id: str, vector: VectorLike, *, model_version: str | None = None) -> FloatArray:
        """Validate one vector for this index; returns it as a unit-length float32 row (1, dim)."""
        if model_version is not None and model_version != self.model_version:
            raise VectorRejectedError(
                f"pin {pin_id}: model version {model_version!r}, index holds {self.model_version!r}",
                reason="model_version_mismatch", pin_id=pin_id)
        if not pin_id or "\n" in pin_id:
            raise VectorRejectedError(f"pin id {pin_id!r} is empty or has a newline",
                                      reason="bad_pin_id", pin_id=pin_id)
        row = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if row.shape[1] != self.dim:
            raise VectorRejectedError(f"pin {pin_id}: {row.shape[1]}-d vector, index is {self.dim}-d",
                                      reason="bad_dimension", pin_id=pin_id)
        return _unit_rows(row, [pin_id])

    def upsert(self, pin_id: str, vector: VectorLike, *, model_version: str | None = None,
               offsets: Mapping[int, int] | None = None) -> None:
        """Insert or replace the vector of `pin_id` (and advance `offsets`, atomically)."""
        row = self.check(pin_id, vector, model_version=model_version)
        self.upsert_many([pin_id], row, offsets=offsets)

    def upsert_embedding(self, event: PinEmbedding, *, offsets: Mapping[int, int] | None = None) -> None:
        """Upsert a `PinEmbedding`, refusing one of another model version."""
        self.upsert(event.pin_id, event.vector, model_version=event.model_version, offsets=offsets)

    def upsert_many(self, pin_ids: Sequence[str], vectors: VectorLike,
                    *, offsets: Mapping[int, int] | None = None) -> None:
        """Insert or replace many vectors in one call (the last one wins for a repeated pin).

        All are validated before any is applied: a refused vector leaves the index unchanged.
        """
        if not pin_ids:
            if offsets:
                self.advance(offsets)
            return
        rows = np.asarray(vectors, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim or rows.shape[0] != len(pin_ids):
            first = pin_ids[0] if pin_ids else ""
            raise VectorRejectedError(
                f"expected {len(pin_ids)} vectors of dim {self.dim}, got shape {rows.shape}",
                reason="bad_dimension", pin_id=first)
        last = {pin: i for i, pin in enumerate(pin_ids)}
        for pin in last:
            if not pin or "\n" in pin:
                raise VectorRejectedError(f"pin id {pin!r} is empty or has a newline",
                                          reason="bad_pin_id", pin_id=pin)
        order = np.fromiter(last.values(), dtype=np.int64, count=len(last))
        unique_pins = list(last)
        rows = _unit_rows(rows[order], unique_pins)
        keys = np.fromiter((pin_key(p) for p in unique_pins), dtype=np.int64, count=len(unique_pins))
        with self._lock:
            self._refuse_collisions(unique_pins, keys)
            present = np.fromiter((int(k) in self._pins for k in keys), dtype=bool, count=len(keys))
            if present.any():
                self._remove_keys(keys[present])
            if len(keys):
                self._index.add_with_ids(rows, keys)
            self._pins.update(zip(keys.tolist(), unique_pins, strict=True))
            if offsets:
                self._advance(offsets)
            self._maybe_train()

    def delete(self, pin_id: str, *, offsets: Mapping[int, int] | None = None) -> bool:
        """Remove `pin_id`; False when it was not there."""
        return self.delete_many([pin_id], offsets=offsets) == 1

    def delete_many(self, pin_ids: Sequence[str], *, offsets: Mapping[int, int] | None = None) -> int:
        """Remove the pins that are present; returns how many were removed."""
        with self._lock:
            keys = [k for k, pin in ((pin_key(p), p) for p in set(pin_ids)) if self._pins.get(k) == pin]
            if keys:
                self._remove_keys(np.asarray(keys, dtype=np.int64))
                for key in keys:
                    del self._pins[key]
            if offsets:
                self._advance(offsets)
            return len(keys)

    # --- reads -----------------------------------------------------------------------------

    def search(self, queries: VectorLike, k: int, *, min_score: float | None = None) -> list[list[SearchHit]]:
        """The `k` nearest pins of each query row (a (dim,) vector or an (n, dim) matrix), best first."""
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        rows = np.asarray(queries, dtype=np.float32)
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise VectorRejectedError(f"query of shape {rows.shape}, index is {self.dim}-d",
                                      reason="bad_dimension", pin_id="")
        rows = _unit_rows(rows, ["query"] * rows.shape[0])
        with self._lock:
            if not self._pins:
                return [[] for _ in range(rows.shape[0])]
            scores, ids = self._index.search(rows, min(k, len(self._pins)))
            pins = self._pins
            return [
                [SearchHit(pins[int(i)], min(float(s), 1.0)) for s, i in zip(srow, irow, strict=True)
                 if i >= 0 and (min_score is None or s >= min_score)]
                for srow, irow in zip(scores, ids, strict=True)
            ]

    def vectors(self, pin_ids: Sequence[str]) -> dict[str, FloatArray]:
        """The stored vectors of the pins that are present (decoded: approximate once quantised)."""
        present, rows = self._reconstruct(pin_ids)
        return {pin_ids[i]: row for i, row in zip(present.tolist(), rows, strict=True)}

    def cosine(self, pin_ids: Sequence[str], query: VectorLike
               ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        """Cosine of each pin's vector with the unit `query`, and whether the pin is present."""
        present, rows = self._reconstruct(pin_ids)
        sims = np.zeros(len(pin_ids))
        found = np.zeros(len(pin_ids), dtype=bool)
        if present.size:
            # einsum, not BLAS: a threaded BLAS matvec on busy cores costs several times more.
            sims[present] = np.einsum("ij,j->i", rows, np.asarray(query, dtype=np.float32))
            found[present] = True
        return sims, found

    def _reconstruct(self, pin_ids: Sequence[str]) -> tuple[npt.NDArray[np.int64], FloatArray]:
        """Positions in `pin_ids` of the present pins, and their vectors (one faiss call)."""
        keys = [pin_key(p) for p in pin_ids]
        with self._lock:
            pins = self._pins
            present = np.fromiter((i for i, (k, p) in enumerate(zip(keys, pin_ids, strict=True))
                                   if pins.get(k) == p), dtype=np.int64)
            if not present.size:
                return present, np.empty((0, self.dim), dtype=np.float32)
            wanted = np.asarray(keys, dtype=np.int64)[present]
            try:
                rows = self._index.reconstruct_batch(wanted)
            except RuntimeError as exc:  # faiss reports a missing id this way
                raise SinkError(f"faiss could not return {wanted.size} vectors: {exc}",
                                dependency="faiss") from exc
        return present, rows

    # --- snapshots -------------------------------------------------------------------------

    def save(self, directory: Path) -> Path:
        """Write an atomic, checksummed snapshot (index, pin ids, offsets) into `directory`.

        Holds the lock while writing, so the snapshot is consistent with the offsets it records.
        """
        with self._lock:
            meta = SnapshotMeta(model_version=self.model_version, dim=self.dim, kind=str(self.kind),
                                count=len(self._pins), trained_for=self._trained_for,
                                topic=self.topic, offsets=dict(self._offsets))
            return write_snapshot(directory, self._index, list(self._pins.values()), meta)

    @classmethod
    def load(cls, directory: Path, expected_model_version: str, *, expected_dim: int | None = None,
             expected_topic: str | None = None, kind: IndexKind = IndexKind.AUTO,
             flat_max: int = DEFAULT_FLAT_MAX, nprobe: int = DEFAULT_NPROBE) -> VectorIndex:
        """Load a snapshot written by `save`; raises SnapshotError (missing / corrupt / mismatched)."""
        loaded = read_snapshot(directory, expected_model_version=expected_model_version,
                               expected_dim=expected_dim, expected_topic=expected_topic)
        meta = loaded.meta
        index = cls(meta.model_version, meta.dim, kind=kind, flat_max=flat_max, nprobe=nprobe,
                    expected_size=meta.trained_for, topic=meta.topic)
        index._restore(loaded.index, loaded.pin_ids, meta, directory)
        return index

    # --- internals (called with the lock held) ----------------------------------------------

    def _restore(self, faiss_index: faiss.Index, pin_ids: list[str], meta: SnapshotMeta,
                 directory: Path) -> None:
        keys = np.fromiter((pin_key(p) for p in pin_ids), dtype=np.int64, count=len(pin_ids))
        stored = _stored_ids(faiss_index, meta.kind)
        if stored is None or not np.array_equal(np.sort(keys), np.sort(stored)):
            raise SnapshotError(f"snapshot at {directory} is corrupt (ids): the faiss ids do not "
                                "match the pin ids", reason="corrupt", detail="ids")
        if meta.kind == IndexKind.IVF_SQ8:
            faiss.extract_index_ivf(faiss_index).nprobe = self.nprobe
        self._index = faiss_index
        self._pins = dict(zip(keys.tolist(), pin_ids, strict=True))
        self._offsets = dict(meta.offsets)
        self._trained_for = meta.trained_for if meta.kind == IndexKind.IVF_SQ8 else 0

    def _advance(self, offsets: Mapping[int, int]) -> None:
        for partition, offset in offsets.items():
            if offset > self._offsets.get(partition, -1):
                self._offsets[partition] = offset

    def _refuse_collisions(self, pin_ids: list[str], keys: npt.NDArray[np.int64]) -> None:
        seen: dict[int, str] = {}
        for pin, key in zip(pin_ids, keys.tolist(), strict=True):
            other = self._pins.get(key) or seen.get(key)
            if other is not None and other != pin:
                raise VectorRejectedError(
                    f"pin {pin} hashes to the id of pin {other} ({key}); refusing to overwrite it",
                    reason="id_collision", pin_id=pin)
            seen[key] = pin

    def _remove_keys(self, keys: npt.NDArray[np.int64]) -> None:
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        # the hash-table direct map removes by an explicit id array, in O(1) per id
        selector = faiss.IDSelectorArray(len(keys), faiss.swig_ptr(keys))
        removed = self._index.remove_ids(selector)
        if removed != len(keys):
            raise SinkError(f"faiss removed {removed} of {len(keys)} vectors", dependency="faiss")

    def _train_at(self) -> int | None:
        """Size at which to switch from exact to IVF, or None to stay exact."""
        if self.kind_policy == IndexKind.FLAT or self._trained_for:
            return None
        planned = max(self.expected_size, len(self._pins))
        needed = TRAIN_POINTS_PER_LIST * nlist_for(planned)
        return needed if self.kind_policy == IndexKind.IVF_SQ8 else max(self.flat_max, needed)

    def _maybe_train(self) -> None:
        threshold = self._train_at()
        if threshold is None or len(self._pins) < threshold:
            return
        flat = self._index
        assert isinstance(flat, faiss.IndexIDMap2)
        count = int(flat.ntotal)
        vectors = faiss.downcast_index(flat.index).reconstruct_n(0, count)
        ids = faiss.vector_to_array(flat.id_map).astype(np.int64)
        planned = max(self.expected_size, count)
        nlist = min(nlist_for(planned), count // TRAIN_POINTS_PER_LIST)
        log.info("training IVF%d,SQ8 on the first %d vectors (planned size %d)", nlist, count, planned)
        ivf = faiss.index_factory(self.dim, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
        ivf.train(vectors)
        ivf_view = faiss.extract_index_ivf(ivf)
        ivf_view.set_direct_map_type(_DIRECT_MAP_HASHTABLE)
        ivf_view.nprobe = self.nprobe
        ivf.add_with_ids(vectors, ids)
        self._index = ivf
        self._trained_for = planned
        self.trained_on = count


def _unit_rows(rows: FloatArray, names: Sequence[str]) -> FloatArray:
    """Finite, non-zero rows scaled to unit length (a copy when any needs scaling)."""
    if not np.isfinite(rows).all():
        bad = int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])
        raise VectorRejectedError(f"pin {names[bad]}: vector has NaN or infinity",
                                  reason="bad_vector", pin_id=names[bad])
    norms = np.linalg.norm(rows, axis=1)
    if (norms == 0).any():
        bad = int(np.flatnonzero(norms == 0)[0])
        raise VectorRejectedError(f"pin {names[bad]}: zero vector", reason="bad_vector",
                                  pin_id=names[bad])
    if np.abs(norms - 1).max() > _NORM_TOLERANCE:
        rows = rows / norms[:, None]
    return np.ascontiguousarray(rows, dtype=np.float32)


def _stored_ids(index: faiss.Index, kind: str) -> npt.NDArray[np.int64] | None:
    """Every id held by a flat (IDMap2) or IVF index; None for an index of another type."""
    if kind == IndexKind.FLAT and isinstance(index, faiss.IndexIDMap2):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    if kind == IndexKind.IVF_SQ8 and isinstance(index, faiss.IndexIVFScalarQuantizer):
        lists = index.invlists
        assert lists is not None
        parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                 for i in range(index.nlist) if lists.list_size(i)]
        return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)
    return None
