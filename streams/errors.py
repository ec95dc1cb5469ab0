"""The one exception root of Pinstream and its tree.

    PinstreamError
    ├── ConfigError            settings invalid, unknown keys, missing tools (names the fix)
    ├── StackError             a local server failed to start/stop (carries its log tail)
    ├── ContractError          bytes or records that break an Avro contract (carries `reason`)
    │   ├── FramingError       not Confluent framing nor Avro single-object encoding
    │   └── UnknownSchemaError fingerprint / registry id we do not know
    ├── InputError             a user-supplied record is invalid (carries `line` when from a file)
    ├── RateLimitedError       a producer call refused by the per-user limiter (carries retry_after)
    ├── DeliveryError          Kafka did not acknowledge a record (carries the broker's error)
    ├── SinkError              a store write failed (carries `dependency`, `retry_after`)
    └── ProcessingError        a processor could not handle a record (carries `stage`)
        └── RedriveRefused     a reconciliation record no retry can re-drive (carries `reason`)

Library errors are translated at the boundary with ``raise ... from exc`` so that callers only
ever catch ours, and every error carries what is needed to recover or to report it.
"""

from __future__ import annotations


class PinstreamError(Exception):
    """Root of every error Pinstream raises on purpose."""


class ConfigError(PinstreamError):
    """Settings are invalid or a required tool is missing; the message names the fix."""


class StackError(PinstreamError):
    """A local server did not start or stop; ``log_tail`` holds the end of its log."""

    def __init__(self, message: str, *, service: str = "", log_tail: str = "") -> None:
        super().__init__(message)
        self.service = service
        self.log_tail = log_tail


class ContractError(PinstreamError):
    """Bytes or a record break an Avro contract; ``reason`` is a short machine-readable code."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class FramingError(ContractError):
    """The bytes carry neither Confluent framing nor Avro single-object encoding."""


class UnknownSchemaError(ContractError):
    """The bytes name a schema (fingerprint or registry id) that we do not know."""


class InputError(PinstreamError):
    """A user-supplied record is invalid; ``line`` is its 1-based line number in a file."""

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.field = field

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{super().__str__()}"


class RateLimitedError(PinstreamError):
    """A producer call was refused by the per-user rate limiter."""

    def __init__(self, message: str, *, user_id: str, retry_after: float) -> None:
        super().__init__(message)
        self.user_id = user_id
        self.retry_after = retry_after


class DeliveryError(PinstreamError):
    """Kafka did not acknowledge a produced record."""

    def __init__(self, message: str, *, topic: str, key: bytes | None, retriable: bool) -> None:
        super().__init__(message)
        self.topic = topic
        self.key = key
        self.retriable = retriable


class SinkError(PinstreamError):
    """A store write failed; ``dependency`` names the store, ``retry_after`` a hint in seconds."""

    def __init__(self, message: str, *, dependency: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.dependency = dependency
        self.retry_after = retry_after


class ProcessingError(PinstreamError):
    """A processor could not handle a record; ``stage`` names the processor stage."""

    def __init__(self, message: str, *, stage: str, reason: str = "") -> None:
        super().__init__(message)
        self.stage = stage
        self.reason = reason


class RedriveRefused(ProcessingError):
    """A reconciliation record that no retry can re-drive (no payload, an unknown stage, no source
    position to stay idempotent by); it goes to the dead-letter topic at once, with `reason`."""

    def __init__(self, message: str, *, stage: str, reason: str) -> None:
        super().__init__(message, stage=stage, reason=reason)
