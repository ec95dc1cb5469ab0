"""The generated events as immutable records, and their JSON-line form.

Times are kept as epoch milliseconds (what the Avro contracts carry) and rendered as ISO-8601 UTC.
"""

from __future__ import annotations

import base64
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Action = Literal["impression", "click", "closeup", "save", "hide"]


def event_uuid(rng: random.Random) -> str:
    """A version-4 uuid drawn from `rng`, so that ids repeat exactly under the same seed."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def iso_ms(ms: int) -> str:
    """ISO-8601 UTC with milliseconds, e.g. 2026-11-20T10:00:00.000Z."""
    seconds, millis = divmod(ms, 1000)
    # gmtime and an f-string: several times cheaper than datetime.strftime per event.
    t = time.gmtime(seconds)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{millis:03d}Z"
    )


@dataclass(frozen=True, slots=True)
class PinRecord:
    """A pin creation; `image` holds the JPEG bytes, or None when images were not rendered."""

    event_id: str
    event_time_ms: int
    pin_id: str
    user_id: str
    board_id: str
    title: str
    description: str
    link: str | None
    tags: tuple[str, ...]
    image: bytes | None

    def to_json(self, image_ref: str | None = None) -> dict[str, Any]:
        """The JSON line: with `image_ref` the image is referenced, otherwise inlined as base64."""
        line: dict[str, Any] = {
            "event_id": self.event_id,
            "event_time": iso_ms(self.event_time_ms),
            "pin_id": self.pin_id,
            "user_id": self.user_id,
            "board_id": self.board_id,
            "title": self.title,
            "description": self.description,
            "link": self.link,
            "tags": list(self.tags),
        }
        if image_ref is not None:
            line["image_ref"] = image_ref
        elif self.image is not None:
            line["image_base64"] = base64.b64encode(self.image).decode("ascii")
        else:
            raise ValueError(f"pin {self.pin_id} has neither an image nor an image_ref")
        return line


@dataclass(frozen=True, slots=True)
class InteractionRecord:
    """One user action on a pin within a session; `board_id` is set only on saves."""

    event_id: str
    event_time_ms: int
    user_id: str
    pin_id: str
    action: Action
    session_id: str
    board_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_time": iso_ms(self.event_time_ms),
            "user_id": self.user_id,
            "pin_id": self.pin_id,
            "action": self.action,
            "session_id": self.session_id,
            "board_id": self.board_id,
        }
