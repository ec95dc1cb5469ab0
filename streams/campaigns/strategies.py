"""Hypothesis strategies shared by the bad-input campaign and its short form in the unit tests:
valid values generated from the .avsc contracts themselves, byte mutations, and hostile frames
(unknown enum symbols, oversized length prefixes, truncations, image bombs)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st
from PIL import Image

from streams.contracts import contracts

CONTRACT_NAMES = contracts().names()

_MILLIS_DATETIMES = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))

_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    # NaN is excluded only because NaN != NaN would fail an equality check, not the codec.
    "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False),
    "bytes": st.binary(max_size=64),
    "string": st.text(max_size=24),
}


def schema_strategy(schema: Any, named: dict[str, st.SearchStrategy[Any]] | None = None,
                    namespace: str = "") -> st.SearchStrategy[Any]:
    """Values valid for an Avro schema (the JSON form), in the shapes fastavro writes and reads."""
    named = {} if named is None else named
    if isinstance(schema, list):
        return st.one_of([schema_strategy(branch, named, namespace) for branch in schema])
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        return named[schema if "." in schema else f"{namespace}.{schema}".lstrip(".")]
    logical = schema.get("logicalType")
    if logical == "uuid":
        return st.uuids()
    if logical == "timestamp-millis":
        return _MILLIS_DATETIMES
    kind = schema["type"]
    if kind == "array":
        return st.lists(schema_strategy(schema["items"], named, namespace), max_size=8)
    if kind in ("enum", "record"):
        namespace = schema.get("namespace", namespace)
        full = f"{namespace}.{schema['name']}".lstrip(".")
        strategy: st.SearchStrategy[Any]
        if kind == "enum":
            strategy = st.sampled_from(schema["symbols"])
        else:
            strategy = st.fixed_dictionaries(
                {f["name"]: schema_strategy(f["type"], named, namespace) for f in schema["fields"]}
            )
        named[full] = strategy
        named[schema["name"]] = strategy
        return strategy
    return schema_strategy(kind, named, namespace)


RECORDS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    name: schema_strategy(contracts().latest(name).raw) for name in CONTRACT_NAMES
}
NAMED_RECORDS = st.sampled_from(CONTRACT_NAMES).flatmap(
    lambda name: st.tuples(st.just(name), RECORDS[name])
)

Mutation = Callable[[bytearray], None]


@st.composite
def mutation(draw: st.DrawFn, size: int) -> Mutation:
    """One edit of a byte string: flip a bit, truncate, insert, overwrite or delete bytes."""
    at = draw(st.integers(0, max(size, 1)))
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite", "delete"]))
    bit = draw(st.integers(0, 7))
    extra = draw(st.binary(min_size=1, max_size=8))

    def apply(data: bytearray) -> None:
        where = min(at, len(data))
        if kind == "flip" and where < len(data):
            data[where] ^= 1 << bit
        elif kind == "truncate":
            del data[where:]
        elif kind == "insert":
            data[where:where] = extra
        elif kind == "overwrite":
            data[where:where + len(extra)] = extra
        elif kind == "delete":
            del data[where:where + len(extra)]

    return apply


@st.composite
def mutated(draw: st.DrawFn, original: bytes, max_edits: int = 4) -> bytes:
    data = bytearray(original)
    for apply in draw(st.lists(mutation(len(data)), min_size=1, max_size=max_edits)):
        apply(data)
    return bytes(data)


def zigzag_varint(value: int) -> bytes:
    """Avro's encoding of a long: a length prefix, when it opens a string or bytes field."""
    number = (value << 1) ^ (value >> 63)
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# --- images ---------------------------------------------------------------------------------------

def encode_image(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A valid PNG header claiming `width` x `height` RGB pixels with a tiny IDAT: a decompression
    bomb's header, built without allocating its pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 4096, 9)) + chunk(b"IEND", b""))


def gif_with_size(width: int, height: int) -> bytes:
    """A GIF whose logical screen and only frame claim `width` x `height` (a bomb header)."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


@st.composite
def small_images(draw: st.DrawFn) -> bytes:
    """A small valid image in an allowed or a foreign format, some with EXIF orientation."""
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    mode = draw(st.sampled_from(["RGB", "RGBA", "L", "P", "1", "I;16"]))
    fmt = draw(st.sampled_from(["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "ICO", "PPM"]))
    colour = draw(st.integers(0, 255))
    image = Image.new(mode, (width, height), colour)
    usable = {"JPEG": ("RGB", "L"), "GIF": ("P", "L", "1"), "BMP": ("RGB", "L", "P", "1"),
              "WEBP": ("RGB", "RGBA"), "PPM": ("RGB", "L", "1"), "ICO": ("RGB", "RGBA")}
    if fmt in usable and image.mode not in usable[fmt]:
        image = image.convert(usable[fmt][0])
    params: dict[str, Any] = {}
    if fmt in ("JPEG", "PNG", "WEBP", "TIFF") and draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(0, 12))  # orientation, valid or not
        params["exif"] = exif.tobytes()
    try:
        return encode_image(image, fmt, **params)
    except (OSError, ValueError):
        return encode_image(image.convert("RGB"), "PNG")


HOSTILE_IMAGES = st.one_of(
    small_images().flatmap(lambda data: mutated(data, max_edits=6)),
    small_images().flatmap(lambda data: st.integers(0, len(data)).map(lambda cut: data[:cut])),
    st.tuples(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1)).map(lambda wh: png_with_size(*wh)),
    st.tuples(st.integers(1, 65_535), st.integers(1, 65_535)).map(lambda wh: gif_with_size(*wh)),
    st.binary(max_size=512),
)
