"""The bad-input campaign: property-based fuzzing (hypothesis) of every decoder, the JSONL reader,
the image loader and the consumer's dead-letter routing. Each input must be accepted, or rejected
with one of our typed errors carrying a reason; anything else (another exception, an error
without a reason, a truncated frame accepted, an input taking over 5 s) is a crash."""

from __future__ import annotations

import copy
import io
import json
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from fastavro import parse_schema, schemaless_writer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from processors.images import ImageLimits, decode_image
from streams.campaigns.strategies import (
    CONTRACT_NAMES,
    HOSTILE_IMAGES,
    NAMED_RECORDS,
    mutated,
    schema_strategy,
    zigzag_varint,
)
from streams.codec import SINGLE_OBJECT_MAGIC, AvroCodec
from streams.consumer import decode_record
from streams.contracts import contracts
from streams.deadletter import DeadLetterWriter, RawRecord
from streams.errors import ContractError, InputError, ProcessingError
from streams.events import Event
from streams.jsonl import (
    INTERACTION_FIELDS,
    PIN_FIELDS,
    Line,
    interaction_arguments,
    pin_arguments,
    read_objects,
)
from streams.producer import EventProducer, PinProducer
from streams.ratelimit import RateLimiter
from streams.registry import ConfluentRegistry
from streams.settings import Settings, load_settings
from streams.topics import HEADER_DLQ_REASON, HEADER_DLQ_SOURCE, TopicSpec

SLOW_S = 5.0
_ROUND = 200  # examples per hypothesis run; rounds repeat until the budget is spent
_CRASHES_KEPT = 20


class Crash(Exception):
    """An outcome the campaign counts as a crash although no exception escaped."""


@dataclass
class TargetResult:
    name: str
    examples: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    crashes: int = 0
    crash_examples: list[str] = field(default_factory=list)
    slowest_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "examples": self.examples, "accepted": self.accepted,
                "rejected": dict(self.rejected.most_common()), "crashes": self.crashes,
                "crash_examples": self.crash_examples, "slowest_s": round(self.slowest_s, 4)}


Check = Callable[[Any], str]  # "accepted" or "rejected:<reason>"; raises on a crash


@dataclass(frozen=True)
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Check


def run_target(target: Target, *, examples: int, seconds: float) -> TargetResult:
    """Feed `examples` generated inputs (or as many as fit in `seconds`) to the target's check."""
    result = TargetResult(target.name)
    deadline = time.monotonic() + seconds

    def body(value: Any) -> None:
        if result.examples >= examples or time.monotonic() > deadline:
            return
        result.examples += 1
        started = time.perf_counter()
        try:
            outcome = target.check(value)
            elapsed = time.perf_counter() - started
            if elapsed > SLOW_S:
                raise Crash(f"took {elapsed:.1f} s")
        except Exception as exc:  # the campaign's whole point: count, keep going
            result.crashes += 1
            if len(result.crash_examples) < _CRASHES_KEPT:
                result.crash_examples.append(f"{type(exc).__name__}: {str(exc)[:200]} on "
                                             f"{repr(value)[:300]}")
            return
        result.slowest_s = max(result.slowest_s, elapsed)
        if outcome == "accepted":
            result.accepted += 1
        else:
            result.rejected[outcome.removeprefix("rejected:")] += 1

    while result.examples < examples and time.monotonic() < deadline:
        before = result.examples
        run = settings(max_examples=min(_ROUND, examples - result.examples), deadline=None,
                       database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        with warnings.catch_warnings():  # Pillow warns about the truncated files we feed it
            warnings.simplefilter("ignore")
            run(given(target.strategy)(body))()
        if result.examples == before:
            break
    return result


def _reason(exc: ContractError | InputError | ProcessingError) -> str:
    if isinstance(exc, InputError):
        reason = "unknown_field" if str(exc).startswith(("unknown field", f"line {exc.line}: unknown")) \
            else exc.field or "input"
    else:
        reason = exc.reason
    if not reason:
        raise Crash(f"{type(exc).__name__} without a reason: {exc}")
    return f"rejected:{reason}"


# --- decoders -----------------------------------------------------------------------------------

class Codecs:
    """One single-object codec and one Confluent codec on an in-process registry."""

    def __init__(self) -> None:
        self.registry = ConfluentRegistry(f"mock://fuzz-{uuid.uuid4()}")
        self.single = AvroCodec()
        self.confluent = AvroCodec(registry=self.registry)
        self.registry_ids = [self.registry.register(contracts().latest(n).full_name,
                                                    json.dumps(contracts().latest(n).raw))
                             for n in CONTRACT_NAMES]

    def decode(self, codec: AvroCodec, data: bytes) -> str:
        try:
            codec.decode(data)
            event = codec.decode_event(data)
        except ContractError as exc:
            return _reason(exc)
        if not isinstance(event, Event):
            raise Crash(f"decoded to {type(event).__name__}, not an event")
        return "accepted"

    def both(self, data: bytes) -> str:
        """Both codecs must survive; the registry-backed one (it reads both framings) decides."""
        self.decode(self.single, data)
        return self.decode(self.confluent, data)


_EXTRA_SYMBOLS = ["FUZZ_UNKNOWN_A", "FUZZ_UNKNOWN_B"]


def _with_extra_enum_symbols(schema: Any, *, only_extra: bool = False) -> Any:
    """A copy of a schema whose enums gain symbols our readers do not know (`only_extra`: the
    enums hold nothing else, to generate records that use them)."""
    if isinstance(schema, list):
        return [_with_extra_enum_symbols(s, only_extra=only_extra) for s in schema]
    if isinstance(schema, dict):
        out = {k: _with_extra_enum_symbols(v, only_extra=only_extra) if k != "default" else v
               for k, v in schema.items()}
        if schema.get("type") == "enum":
            out["symbols"] = _EXTRA_SYMBOLS if only_extra else [*schema["symbols"], *_EXTRA_SYMBOLS]
        return out
    return schema


def _has_enum(schema: Any) -> bool:
    if isinstance(schema, list):
        return any(_has_enum(s) for s in schema)
    if isinstance(schema, dict):
        return schema.get("type") == "enum" or any(_has_enum(v) for v in schema.values())
    return False


def _uses_enum(value: Any) -> bool:
    if isinstance(value, str):
        return value in _EXTRA_SYMBOLS
    if isinstance(value, dict):
        return any(_uses_enum(v) for v in value.values())
    if isinstance(value, list):
        return any(_uses_enum(v) for v in value)
    return False


def codec_targets(codecs: Codecs) -> list[Target]:
    fingerprints = sorted(contracts().by_fingerprint)
    framed_headers = st.one_of(
        st.sampled_from(fingerprints).map(lambda fp: SINGLE_OBJECT_MAGIC + fp),
        st.sampled_from(codecs.registry_ids).map(lambda i: b"\x00" + i.to_bytes(4, "big")),
    )
    encodings = st.tuples(NAMED_RECORDS, st.sampled_from(["single", "confluent"])).map(
        lambda pair: (codecs.single if pair[1] == "single" else codecs.confluent).encode(*pair[0]))
    enum_names = [n for n in CONTRACT_NAMES if _has_enum(contracts().latest(n).raw)]
    extended = {n: copy.deepcopy(_with_extra_enum_symbols(contracts().latest(n).raw)) for n in enum_names}
    extended_ids = {n: codecs.registry.register(contracts().latest(n).full_name, json.dumps(extended[n]))
                    for n in enum_names}
    parsed = {n: parse_schema(copy.deepcopy(extended[n]), _force=True) for n in enum_names}

    def unknown_enum(named: tuple[str, dict[str, Any], bool]) -> bytes:
        name, record, by_registry = named
        buffer = io.BytesIO()
        schemaless_writer(buffer, parsed[name], record)
        header = (b"\x00" + extended_ids[name].to_bytes(4, "big") if by_registry
                  else SINGLE_OBJECT_MAGIC + contracts().latest(name).fingerprint)
        return header + buffer.getvalue()

    generating = {n: _with_extra_enum_symbols(contracts().latest(n).raw, only_extra=True)
                  for n in enum_names}
    unknown_enums = st.sampled_from(enum_names).flatmap(
        lambda n: st.tuples(st.just(n), schema_strategy(generating[n]), st.booleans()))

    def unknown_enum_check(named: tuple[str, dict[str, Any], bool]) -> str:
        # Under our own fingerprint an unknown symbol is an index past the end: never accepted.
        # Under a registered newer schema it resolves to the enum's default, when there is one.
        outcome = codecs.both(unknown_enum(named))
        if not named[2] and outcome == "accepted" and _uses_enum(named[1]):
            raise Crash("an enum index past our symbols was accepted")
        return outcome

    def truncated_must_fail(pair: tuple[bytes, int]) -> str:
        data, cut = pair
        outcome = codecs.both(data[:cut])
        if cut < len(data) and outcome == "accepted":
            raise Crash(f"a frame cut at {cut} of {len(data)} bytes was accepted")
        return outcome

    return [
        Target("codec: arbitrary bytes", st.binary(max_size=512), codecs.both),
        Target("codec: known header, arbitrary body",
               st.tuples(framed_headers, st.binary(max_size=512)).map(lambda p: p[0] + p[1]), codecs.both),
        Target("codec: mutated valid encodings (every contract, both framings)",
               encodings.flatmap(mutated), codecs.both),
        Target("codec: truncated frames",
               encodings.flatmap(lambda d: st.tuples(st.just(d), st.integers(0, len(d)))),
               truncated_must_fail),
        Target("codec: wrong schema (a record under another contract's fingerprint)",
               st.tuples(NAMED_RECORDS, st.sampled_from(fingerprints)).map(
                   lambda p: SINGLE_OBJECT_MAGIC + p[1] + codecs.single.encode(*p[0])[10:]),
               codecs.both),
        Target("codec: unknown enum symbols (lying fingerprint, registered newer schema)",
               unknown_enums, unknown_enum_check),
        Target("codec: oversized length prefixes",
               st.tuples(framed_headers, st.integers(2**16, 2**62), st.binary(max_size=64)).map(
                   lambda p: p[0] + zigzag_varint(p[1]) + p[2]), codecs.both),
    ]


# --- the JSONL reader ---------------------------------------------------------------------------

class RecordingProducer:
    """Stands in for EventProducer (encodes, records, sends nothing)."""

    def __init__(self, settings: Settings, codec: AvroCodec) -> None:
        self.settings = settings
        self.codec = codec
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    def send_raw(self, topic: str, key: bytes | None, value: bytes | None, *,
                 headers: Sequence[tuple[str, bytes]] | None = None, **_: Any) -> None:
        self.sent.append((topic, key, value, list(headers or [])))

    def send_event(self, spec: TopicSpec, key: str, event: Event, **_: Any) -> None:
        self.send_raw(self.settings.topic(spec.name), key.encode(), self.codec.encode_event(event))


_JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                          st.floats(allow_nan=False), st.text(max_size=20))
_JSON = st.recursive(_JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=6)
_VALID_PIN = {"pin_id": "p1", "user_id": "u1", "board_id": "b1", "title": "t", "image_ref": "abc.jpg"}
_VALID_INTERACTION = {"user_id": "u1", "pin_id": "p1", "action": "click", "session_id": "s1"}
_FIELD_VALUES = st.dictionaries(
    st.sampled_from(sorted(PIN_FIELDS | INTERACTION_FIELDS | {"unknown_field"})),
    st.one_of(_JSON, st.sampled_from(["save", "CLICK", "hide", "2026-03-01T00:00:00Z", "nope",
                                      "http://127.0.0.1/a.jpg", "aGVsbG8=", "../x", str(uuid.uuid4())])),
    max_size=4)
_LINE = st.one_of(
    st.tuples(st.sampled_from([_VALID_PIN, _VALID_INTERACTION]), _FIELD_VALUES).map(
        lambda p: json.dumps(p[0] | p[1])),
    _JSON.map(json.dumps),
    st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=80),
)


def jsonl_target(settings: Settings) -> Target:
    producer = PinProducer(settings, rate_limiter=RateLimiter(0),
                           producer=cast(EventProducer, RecordingProducer(settings, AvroCodec())))

    def check(lines: list[str]) -> str:
        outcomes = []
        for item in read_objects(io.StringIO("\n".join(lines) + "\n")):
            if isinstance(item, InputError):
                if item.line is None or not 1 <= item.line <= len(lines):
                    raise Crash(f"error without its line number: {item}")
                outcomes.append(_reason(item))
                continue
            if json.loads(lines[item.number - 1]) != item.fields:
                raise Crash(f"line {item.number} is not the line that was read")
            outcomes += [_send(producer, item, kind) for kind in ("pin", "interaction")]
        rejected = [o for o in outcomes if o != "accepted"]
        return rejected[0] if rejected else "accepted"

    return Target("jsonl: reader, validation and encoding of pins and interactions",
                  st.lists(_LINE, max_size=8), check)


def _send(producer: PinProducer, line: Line, kind: str) -> str:
    try:
        if kind == "pin":
            producer.create_pin(**pin_arguments(line))
        else:
            producer.interact(**interaction_arguments(line))
    except (InputError, ContractError) as exc:
        return _reason(exc)
    return "accepted"


# --- images -------------------------------------------------------------------------------------

def image_target(limits: ImageLimits) -> Target:
    def check(data: bytes) -> str:
        try:
            image = decode_image(data, limits, min_side=224)
        except ProcessingError as exc:
            return _reason(exc)
        if image.mode != "RGB":
            raise Crash(f"decoded to mode {image.mode}, not RGB")
        return "accepted"

    return Target("images: mutated, truncated, bombs, foreign formats, EXIF orientations",
                  HOSTILE_IMAGES, check)


# --- dead-letter routing ------------------------------------------------------------------------

def routing_target(settings: Settings, codecs: Codecs) -> Target:
    recorder = RecordingProducer(settings, codecs.single)
    writer = DeadLetterWriter(cast(EventProducer, recorder))
    values = st.one_of(st.none(), st.binary(max_size=256),
                       NAMED_RECORDS.map(lambda p: codecs.single.encode(*p)),
                       NAMED_RECORDS.map(lambda p: codecs.single.encode(*p)).flatmap(mutated))
    records = st.builds(
        RawRecord, topic=st.just(settings.topic("pins.interactions.v1")), partition=st.integers(0, 5),
        offset=st.integers(0, 2**40), key=st.one_of(st.none(), st.binary(max_size=16)), value=values,
        headers=st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=8)), max_size=2).map(tuple),
        timestamp_ms=st.one_of(st.none(), st.integers(0, 2**41)))

    def check(raw: RawRecord) -> str:
        try:
            decode_record(codecs.single, raw)
        except ContractError as exc:
            writer.send(raw, exc.reason, str(exc))
            _, key, value, headers = recorder.sent.pop()
            named = dict(headers)
            if (key, value) != (raw.key, raw.value) or headers[:len(raw.headers)] != list(raw.headers):
                raise Crash("the dead letter does not keep the original key, value and headers") from exc
            if named.get(HEADER_DLQ_REASON) != exc.reason.encode() or \
                    named.get(HEADER_DLQ_SOURCE) != raw.source.encode():
                raise Crash("the dead letter lacks its reason or source header") from exc
            return f"rejected:{exc.reason}"
        return "accepted"

    return Target("consumer: dead-letter routing of undecodable records", records, check)


# --- the campaign -------------------------------------------------------------------------------

def campaign_targets(settings: Settings | None = None) -> list[Target]:
    chosen = settings or load_settings(metrics_port=0)
    codecs = Codecs()
    return [*codec_targets(codecs), jsonl_target(chosen), image_target(ImageLimits.from_settings(chosen)),
            routing_target(chosen, codecs)]


def run_campaign(*, examples: int, seconds: float, progress: Callable[[str], None],
                 settings: Settings | None = None) -> list[TargetResult]:
    """Every target with `examples` inputs each (fewer if its share of `seconds` runs out)."""
    targets = campaign_targets(settings)
    results = []
    for target in targets:
        result = run_target(target, examples=examples, seconds=seconds / len(targets))
        progress(f"{target.name}: {result.examples} examples, {result.crashes} crashes")
        results.append(result)
    return results
