"""The one small sink contract every store implements: write a batch, flush, close."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar, runtime_checkable

T_contra = TypeVar("T_contra", contravariant=True)


@runtime_checkable
class Sink(Protocol[T_contra]):
    """A store that takes items in batches; failures raise `SinkError`, never pass silently.

    `flush()` returns once everything handed to `write_batch` is durable in the store, so that a
    caller may commit the Kafka offsets of those items right after it.
    """

    def write_batch(self, items: Sequence[T_contra]) -> None:
        """Write `items` (typically one partition's records of one poll)."""
        ...

    def flush(self) -> None:
        """Make every item written so far durable; raises `SinkError` if it cannot."""
        ...

    def close(self) -> None:
        """Flush, then release connections; the sink is unusable afterwards."""
        ...
