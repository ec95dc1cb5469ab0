"""`pinstream bench graph`: sustained interactions/s through the graph processor beside a bare
confluent-kafka consume loop over the same topic."""

from __future__ import annotations

import uuid

from sinks.hbase import from_millis
from streams.events import InteractionAction, PinInteraction
from streams.workload.records import InteractionRecord


def interaction_event(record: InteractionRecord) -> PinInteraction:
    """The contract event of a generated interaction (same id and time)."""
    return PinInteraction(event_id=uuid.UUID(record.event_id), event_time=from_millis(record.event_time_ms),
                          user_id=record.user_id, pin_id=record.pin_id,
                          action=InteractionAction(record.action.upper()), session_id=record.session_id,
                          board_id=record.board_id)
