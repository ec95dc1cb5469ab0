"""Shared unit-test fixtures: one realistic event per contract."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from streams.events import (
    EdgeType,
    Event,
    Fallback,
    FeedItem,
    FeedUpdated,
    GraphEdgeDelta,
    InteractionAction,
    NodeType,
    PinCreated,
    PinEmbedding,
    PinInteraction,
    Reconciliation,
    Stage,
)

_T0 = datetime(2024, 5, 17, 12, 30, 45, 123000, tzinfo=UTC)


@pytest.fixture(scope="session")
def one_event_per_contract() -> dict[str, Event]:
    """Contract name -> an event with every optional field set (so nothing hides behind a default)."""
    events: list[Event] = [
        PinCreated(event_time=_T0, pin_id="p1", user_id="u1", board_id="b1", title="Lake",
                   description="A calm lake", link="https://example.org/lake",
                   image_bytes=bytes(range(256)), tags=("nature", "water")),
        PinInteraction(event_time=_T0, user_id="u1", pin_id="p1", action=InteractionAction.SAVE,
                       session_id="s1", board_id="b2"),
        PinEmbedding(event_time=_T0, pin_id="p1", source_event_id=uuid.uuid4(),
                     model_id="efficientnet-lite0", model_version="1",
                     vector=(0.5, -0.25, 0.125, 0.0)),
        GraphEdgeDelta(event_time=_T0, cause_event_id=uuid.uuid4(), src="u1", src_type=NodeType.USER,
                       dst="p1", dst_type=NodeType.PIN, edge_type=EdgeType.USER_PIN, weight_delta=-1.5),
        FeedUpdated(event_time=_T0, user_id="u1",
                    items=(FeedItem("p1", 0.9, "board:b1"), FeedItem("p2", 0.4, "trending")),
                    model="pixie-1", fallbacks=(Fallback.TRENDING_FILL, Fallback.UNCACHED)),
        Reconciliation(event_time=_T0, stage=Stage.GRAPH, entity_type="edge", entity_id="u1:p1",
                       dependency="hbase", error="TTransportException: timed out", attempt=3,
                       first_failed_at=_T0, cause_event_id=uuid.uuid4(), source_topic="graph.edges.v1",
                       source_partition=2, source_offset=2**40, payload=b"\x00\x01"),
    ]
    return {event.schema_name: event for event in events}
