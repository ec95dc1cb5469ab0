"""`pinstream bench codec`: encode+decode throughput of our AvroCodec (single-object framing) beside
raw fastavro on the same records in the same run, plus the typed (dataclass) path.

The ceiling is fastavro used as its documentation says: the schema parsed once with
`parse_schema`, then `schemaless_writer`/`schemaless_reader` over a BytesIO per record. Our paths
add the framing header, the fingerprint lookup, error translation and (typed) the dataclasses.
"""

from __future__ import annotations

import io
import math
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from streams.bench.report import Laps, Series, code_revision, machine_info, ratio
from streams.codec import AvroCodec
from streams.contracts import ContractSet, contracts
from streams.events import Event, InteractionAction, PinCreated, PinEmbedding, PinInteraction

# A feed-heavy day: interactions dominate; creations carry a small inline image; embeddings are
# the big records (1280 float32s, about 5 KB on the wire).
DEFAULT_MIX: dict[str, float] = {"PinInteraction": 0.90, "PinCreated": 0.05, "PinEmbedding": 0.05}
IMAGE_BYTES = 2048
EMBEDDING_DIM = 1280
GOAL_RATIO = 0.9
SINGLE_OBJECT_HEADER_BYTES = 10
# Paths take turns every CHUNK events, so that load from other processes lands on all of them.
CHUNK = 200

RAW = "raw fastavro (ceiling)"
OURS = "AvroCodec encode/decode (dicts)"
TYPED = "AvroCodec encode_event/decode_event (dataclasses)"
PATHS = (RAW, OURS, TYPED)


# --- workload ------------------------------------------------------------------------------------


def build_workload(events: int, seed: int = 7, mix: dict[str, float] | None = None) -> list[Event]:
    """`events` deterministic events in the proportions of `mix`, shuffled."""
    mix = mix or DEFAULT_MIX
    rng = random.Random(seed)
    counts = {kind: int(events * share) for kind, share in mix.items()}
    counts[next(iter(mix))] += events - sum(counts.values())
    start = datetime(2026, 11, 20, 10, tzinfo=UTC)
    makers: dict[str, Callable[[int], Event]] = {
        "PinInteraction": lambda i: PinInteraction(
            event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            event_time=start + timedelta(milliseconds=i * 37),
            user_id=f"u{rng.randrange(100_000)}",
            pin_id=f"p{rng.randrange(1_000_000)}",
            action=rng.choice(list(InteractionAction)[1:]),
            session_id=f"s{rng.getrandbits(48):012x}",
            board_id=f"b{rng.randrange(50_000)}" if rng.random() < 0.1 else None,
        ),
        "PinCreated": lambda i: PinCreated(
            event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            event_time=start + timedelta(milliseconds=i * 37),
            pin_id=f"p{rng.randrange(1_000_000)}",
            user_id=f"u{rng.randrange(100_000)}",
            board_id=f"b{rng.randrange(50_000)}",
            title="Misty lake at dawn",
            description="A calm lake under morning mist, pines along the far shore.",
            link="https://example.org/lakes/dawn" if rng.random() < 0.5 else None,
            image_bytes=rng.randbytes(IMAGE_BYTES),
            tags=("lake", "dawn", "mist"),
        ),
        "PinEmbedding": lambda i: PinEmbedding(
            event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            event_time=start + timedelta(milliseconds=i * 37),
            pin_id=f"p{rng.randrange(1_000_000)}",
            source_event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            model_id="efficientnet-lite0",
            model_version="1",
            vector=_unit_vector(rng, EMBEDDING_DIM),
        ),
    }
    workload = [makers[kind](i) for kind, count in counts.items() for i in range(count)]
    rng.shuffle(workload)
    return workload


def _unit_vector(rng: random.Random, dim: int) -> tuple[float, ...]:
    values = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(v * v for v in values))
    return tuple(v / norm for v in values)


# --- the measured paths --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Path:
    """How one path encodes a group of same-contract inputs and decodes what it encoded."""

    encode: Callable[[str, Sequence[Any]], list[bytes]]
    decode: Callable[[str, Sequence[bytes]], None]
    inputs: Callable[[Sequence[Event]], list[Any]]


def _raw_path(contract_set: ContractSet, kinds: Sequence[str]) -> _Path:
    schemas = {kind: parse_schema(contract_set.latest(kind).raw) for kind in kinds}

    def encode(kind: str, records: Sequence[Any]) -> list[bytes]:
        schema, out = schemas[kind], []
        for record in records:
            buffer = io.BytesIO()
            schemaless_writer(buffer, schema, record)
            out.append(buffer.getvalue())
        return out

    def decode(kind: str, blobs: Sequence[bytes]) -> None:
        schema = schemas[kind]
        for blob in blobs:
            schemaless_reader(io.BytesIO(blob), schema, None)

    return _Path(encode, decode, lambda events: [e.to_record() for e in events])


def _dict_path(codec: AvroCodec) -> _Path:
    def encode(kind: str, records: Sequence[Any]) -> list[bytes]:
        encode_one = codec.encode
        return [encode_one(kind, record) for record in records]

    def decode(kind: str, blobs: Sequence[bytes]) -> None:
        decode_one = codec.decode
        for blob in blobs:
            decode_one(blob)

    return _Path(encode, decode, lambda events: [e.to_record() for e in events])


def _typed_path(codec: AvroCodec) -> _Path:
    def encode(kind: str, events: Sequence[Any]) -> list[bytes]:
        encode_one = codec.encode_event
        return [encode_one(event) for event in events]

    def decode(kind: str, blobs: Sequence[bytes]) -> None:
        decode_one = codec.decode_event
        for blob in blobs:
            decode_one(blob)

    return _Path(encode, decode, list)


def _check_same_work(codec: AvroCodec, contract_set: ContractSet, groups: dict[str, list[Event]]) -> None:
    """Our body bytes must equal fastavro's and decode to the same record, or the race is unfair."""
    for kind, events in groups.items():
        schema = parse_schema(contract_set.latest(kind).raw)
        for event in events[:50]:
            record = event.to_record()
            body = io.BytesIO()
            schemaless_writer(body, schema, record)
            framed = codec.encode(kind, record)
            same_bytes = framed[SINGLE_OBJECT_HEADER_BYTES:] == body.getvalue()
            if not same_bytes or codec.decode(framed).record != schemaless_reader(
                io.BytesIO(body.getvalue()), schema, None
            ):
                raise RuntimeError(f"{kind}: AvroCodec and fastavro disagree; the bench is void")


# --- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodecBenchResult:
    events: int
    repeat: int
    seed: int
    counts: dict[str, int]
    mean_bytes: dict[str, float]
    total: dict[str, Series]  # path -> encode+decode events/s
    encode: dict[str, Series]  # path -> encode events/s
    decode: dict[str, Series]  # path -> decode events/s
    by_contract: dict[str, dict[str, Series]]  # contract -> path -> encode+decode events/s

    def ratio(self, path: str) -> float:
        return ratio(self.total[path], self.total[RAW])

    def to_json(self, command: str) -> dict[str, Any]:
        return {
            "bench": "codec",
            "command": command,
            "revision": code_revision(),
            "machine": machine_info(["fastavro", "confluent-kafka", "pinstream"]),
            "params": {"events": self.events, "repeat": self.repeat, "seed": self.seed,
                       "framing": "single-object", "counts": self.counts,
                       "mean_wire_bytes": self.mean_bytes},
            "goal": {"ratio_dicts_vs_raw": GOAL_RATIO},
            # median of per-repetition ratios (paths measured side by side in each repetition)
            "ratios": {"dicts_vs_raw": self.ratio(OURS), "dataclasses_vs_raw": self.ratio(TYPED)},
            "encode_decode": [self.total[p].to_json() for p in PATHS],
            "encode": [self.encode[p].to_json() for p in PATHS],
            "decode": [self.decode[p].to_json() for p in PATHS],
            "by_contract": {
                kind: {"ratio_dicts_vs_raw": ratio(series[OURS], series[RAW]),
                       "ratio_dataclasses_vs_raw": ratio(series[TYPED], series[RAW]),
                       "encode_decode": [series[p].to_json() for p in PATHS]}
                for kind, series in self.by_contract.items()
            },
        }


def run_codec_bench(events: int, repeat: int, seed: int = 7,
                    progress: Callable[[int], None] | None = None) -> CodecBenchResult:
    """Measure every path `repeat` times over the same workload (after one warm-up pass).

    Within a repetition the paths take turns every CHUNK events of one contract, in an order that
    rotates between repetitions, so that drift on a shared machine hits them alike; figures are
    medians over repetitions.
    """
    workload = build_workload(events, seed)
    groups: dict[str, list[Event]] = {}
    for event in workload:
        groups.setdefault(event.schema_name, []).append(event)
    codec = AvroCodec()
    paths = {RAW: _raw_path(contracts(), list(groups)), OURS: _dict_path(codec), TYPED: _typed_path(codec)}
    _check_same_work(codec, contracts(), groups)
    inputs = {name: {kind: path.inputs(evs) for kind, evs in groups.items()} for name, path in paths.items()}

    # seconds per measured repetition: path -> [encode, decode] and contract -> path -> both
    enc_s: dict[str, list[float]] = {p: [] for p in PATHS}
    dec_s: dict[str, list[float]] = {p: [] for p in PATHS}
    kind_s: dict[str, dict[str, list[float]]] = {k: {p: [] for p in PATHS} for k in groups}
    wire_bytes = dict.fromkeys(groups, 0)
    for rep in range(repeat + 1):  # repetition 0 warms up and is not recorded
        enc_rep = dict.fromkeys(PATHS, 0.0)
        dec_rep = dict.fromkeys(PATHS, 0.0)
        for kind, group in groups.items():
            kind_rep = dict.fromkeys(PATHS, 0.0)
            for start in range(0, len(group), CHUNK):
                for name in PATHS[rep % len(PATHS):] + PATHS[:rep % len(PATHS)]:
                    path, items = paths[name], inputs[name][kind][start:start + CHUNK]
                    laps = Laps()
                    blobs = path.encode(kind, items)
                    enc = laps.lap()
                    path.decode(kind, blobs)
                    dec = laps.lap()
                    enc_rep[name] += enc
                    dec_rep[name] += dec
                    kind_rep[name] += enc + dec
                    if rep == 0 and name == OURS:
                        wire_bytes[kind] += sum(len(b) for b in blobs)
            if rep:
                for name in PATHS:
                    kind_s[kind][name].append(kind_rep[name])
        if rep:
            for name in PATHS:
                enc_s[name].append(enc_rep[name])
                dec_s[name].append(dec_rep[name])
        if progress is not None:
            progress(rep)

    def rates(label: str, count: int, seconds: Sequence[float]) -> Series:
        return Series(label, "events/s", tuple(count / s for s in seconds))

    return CodecBenchResult(
        events=events,
        repeat=repeat,
        seed=seed,
        counts={kind: len(evs) for kind, evs in groups.items()},
        mean_bytes={kind: wire_bytes[kind] / len(evs) for kind, evs in groups.items()},
        total={p: rates(f"{p} encode+decode", events,
                        [e + d for e, d in zip(enc_s[p], dec_s[p], strict=True)]) for p in PATHS},
        encode={p: rates(f"{p} encode", events, enc_s[p]) for p in PATHS},
        decode={p: rates(f"{p} decode", events, dec_s[p]) for p in PATHS},
        by_contract={kind: {p: rates(f"{kind} {p} encode+decode", len(groups[kind]), seconds[p])
                            for p in PATHS}
                     for kind, seconds in kind_s.items()},
    )
