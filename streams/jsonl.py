"""JSONL input for `pinstream produce`: each line parsed and validated into producer arguments.

A bad line becomes an InputError carrying its line number and the reason; it never stops the
lines after it. Unknown fields are rejected (a misspelt field must not silently vanish).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from streams.errors import InputError

MAX_LINE_CHARS = 12 * 1024 * 1024  # an inline image of up to ~8 MiB, base64-encoded
_BLOB_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")

PIN_FIELDS = {
    "event_id", "event_time", "pin_id", "user_id", "board_id", "title", "description", "link",
    "tags", "image_ref", "image_base64", "image_url",
}
PIN_REQUIRED = {"pin_id", "user_id", "board_id", "title"}
INTERACTION_FIELDS = {
    "event_id", "event_time", "user_id", "pin_id", "action", "session_id", "board_id",
}
INTERACTION_REQUIRED = {"user_id", "pin_id", "action", "session_id"}


@dataclass(frozen=True, slots=True)
class Line:
    number: int  # 1-based
    fields: dict[str, Any]


def read_objects(handle: TextIO) -> Iterator[Line | InputError]:
    """Yield each non-blank line as a JSON object, or an InputError saying why it is not one."""
    for number, text in enumerate(_bounded_lines(handle), start=1):
        if isinstance(text, InputError):
            yield InputError(str(text), line=number)
            continue
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield InputError(f"not valid JSON: {exc.msg} at column {exc.colno}", line=number)
            continue
        if not isinstance(value, dict):
            yield InputError(f"expected a JSON object, got {type(value).__name__}", line=number)
            continue
        yield Line(number, value)


def _bounded_lines(handle: TextIO) -> Iterator[str | InputError]:
    while True:
        try:
            text = handle.readline(MAX_LINE_CHARS + 1)
        except UnicodeDecodeError as exc:
            # The rest of this physical line is unreadable; the stream cannot resync reliably.
            yield InputError(f"not UTF-8 text: {exc.reason}; the rest of the file is skipped")
            return
        if not text:
            return
        if len(text) > MAX_LINE_CHARS and not text.endswith("\n"):
            while text and not text.endswith("\n"):  # drain the rest of the oversized line
                text = handle.readline(MAX_LINE_CHARS + 1)
            yield InputError(f"line longer than {MAX_LINE_CHARS} characters")
            continue
        yield text


def _check_fields(fields: dict[str, Any], allowed: set[str], required: set[str], line: int) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise InputError(f"unknown field(s) {', '.join(unknown)}", line=line, field=unknown[0])
    missing = sorted(f for f in required if fields.get(f) in (None, ""))
    if missing:
        raise InputError(f"missing required field(s) {', '.join(missing)}", line=line,
                         field=missing[0])


def _string(fields: dict[str, Any], name: str, line: int, *, optional: bool = False) -> str | None:
    value = fields.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, got {type(value).__name__}", line=line, field=name)
    return value


def _event_id(fields: dict[str, Any], line: int) -> uuid.UUID | None:
    raw = fields.get("event_id")
    if raw is None:
        return None
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise InputError(f"event_id {raw!r} is not a UUID", line=line, field="event_id") from None


def parse_event_time(raw: Any, line: int | None = None) -> datetime | None:
    """ISO-8601 (with offset or Z) or epoch milliseconds; naive times are refused (ambiguous)."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise InputError("event_time must be ISO-8601 text or epoch milliseconds", line=line,
                         field="event_time")
    if isinstance(raw, int):
        try:
            return datetime.fromtimestamp(raw / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise InputError(f"event_time {raw} out of range", line=line, field="event_time") from None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"event_time {raw!r} is not ISO-8601", line=line, field="event_time") from None
    if parsed.tzinfo is None:
        raise InputError(f"event_time {raw!r} has no UTC offset (add Z)", line=line, field="event_time")
    return parsed.astimezone(UTC)


def pin_arguments(line: Line) -> dict[str, Any]:
    """Keyword arguments for PinProducer.create_pin from one JSONL line."""
    f, n = line.fields, line.number
    _check_fields(f, PIN_FIELDS, PIN_REQUIRED, n)
    images = [k for k in ("image_ref", "image_base64", "image_url") if f.get(k) is not None]
    if len(images) != 1:
        raise InputError("exactly one of image_ref, image_base64, image_url is required "
                         f"(found {len(images)})", line=n, field="image")
    args: dict[str, Any] = {
        "pin_id": _string(f, "pin_id", n), "user_id": _string(f, "user_id", n),
        "board_id": _string(f, "board_id", n), "title": _string(f, "title", n),
        "description": _string(f, "description", n, optional=True) or "",
        "link": _string(f, "link", n, optional=True),
        "event_id": _event_id(f, n), "event_time": parse_event_time(f.get("event_time"), n),
    }
    tags = f.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InputError("tags must be a list of strings", line=n, field="tags")
    args["tags"] = tuple(tags)
    if images[0] == "image_base64":
        try:
            args["image_bytes"] = base64.b64decode(_string(f, "image_base64", n) or "", validate=True)
        except (binascii.Error, ValueError):
            raise InputError("image_base64 is not valid base64", line=n, field="image_base64") from None
    elif images[0] == "image_ref":
        ref = _string(f, "image_ref", n) or ""
        if not _BLOB_REF.match(ref):
            raise InputError(f"image_ref {ref[:80]!r} is not a blob key ([A-Za-z0-9._-], no paths)",
                             line=n, field="image_ref")
        args["image_ref"] = ref
    else:
        url = _string(f, "image_url", n) or ""
        if not url.startswith(("http://", "https://")):
            raise InputError("image_url must be http(s)", line=n, field="image_url")
        args["image_url"] = url
    return args


def interaction_arguments(line: Line) -> dict[str, Any]:
    """Keyword arguments for PinProducer.interact from one JSONL line."""
    f, n = line.fields, line.number
    _check_fields(f, INTERACTION_FIELDS, INTERACTION_REQUIRED, n)
    return {
        "user_id": _string(f, "user_id", n), "pin_id": _string(f, "pin_id", n),
        "action": _string(f, "action", n), "session_id": _string(f, "session_id", n),
        "board_id": _string(f, "board_id", n, optional=True),
        "event_id": _event_id(f, n), "event_time": parse_event_time(f.get("event_time"), n),
    }
