"""The topic catalogue: every topic's name, key, contract and retention, as data in one place.

Names are a contract with upstream producers and downstream consumers; change them only by adding
a new `.vN` topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str  # what the record key holds
    schema: str | None  # contract name of the value; None for raw bytes (dead letters)
    partitions: int
    cleanup_policy: str  # "delete" or "compact"
    retention_ms: int | None  # None: broker default / infinite for compacted topics
    note: str = ""
    extra_config: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        """Topic-level configs that `topics apply` sets and keeps in sync."""
        conf = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            conf["retention.ms"] = str(self.retention_ms)
        return conf | self.extra_config


PINS_CREATED = TopicSpec(
    "pins.created.v1", "pin_id", "PinCreated", 6, "delete", 7 * DAY_MS,
    "image inline (bounded) or blob reference",
    # inline images are bounded by max_inline_image_bytes; the topic must accept them
    {"max.message.bytes": str(8 * 1024 * 1024)},
)
PINS_INTERACTIONS = TopicSpec(
    "pins.interactions.v1", "user_id", "PinInteraction", 6, "delete", 7 * DAY_MS,
    "save, click, closeup, hide, ...",
)
PINS_EMBEDDINGS = TopicSpec(
    "pins.embeddings.v1", "pin_id", "PinEmbedding", 6, "compact", None,
    "model id + version in every record",
)
GRAPH_EDGES = TopicSpec(
    "graph.edges.v1", "node id", "GraphEdgeDelta", 6, "delete", 7 * DAY_MS,
    "incremental weight changes",
)
FEEDS_UPDATED = TopicSpec(
    "feeds.updated.v1", "user_id", "FeedUpdated", 6, "compact", None,
    "what downstream consumers read",
)
RECONCILIATION = TopicSpec(
    "ops.reconciliation.v1", "entity id", "Reconciliation", 3, "delete", 14 * DAY_MS,
    "failed side effects, re-driven",
)
DEADLETTER = TopicSpec(
    "ops.deadletter.v1", "original key", None, 3, "delete", 30 * DAY_MS,
    "original bytes + reason headers; never silently dropped",
    {"max.message.bytes": str(8 * 1024 * 1024)},
)

CATALOGUE: tuple[TopicSpec, ...] = (
    PINS_CREATED, PINS_INTERACTIONS, PINS_EMBEDDINGS, GRAPH_EDGES, FEEDS_UPDATED,
    RECONCILIATION, DEADLETTER,
)
BY_NAME: dict[str, TopicSpec] = {spec.name: spec for spec in CATALOGUE}

# Headers written on records we derive from others.
HEADER_REPLAY_OF = "pinstream.replay.of"  # "<topic>/<partition>/<offset>" of the original
HEADER_DLQ_REASON = "pinstream.dlq.reason"
HEADER_DLQ_ERROR = "pinstream.dlq.error"
HEADER_DLQ_SOURCE = "pinstream.dlq.source"  # "<topic>/<partition>/<offset>"
# On a PinEmbedding: Kafka timestamp (ms) of the pins.created record it came from, so the index
# can measure publish -> searchable.
HEADER_SOURCE_TIMESTAMP = "pinstream.source.timestamp_ms"
# On FeedUpdated: "live" for a feed live-patched by interactions since its last announcement
# (coalesced per user), "full" for a re-rank (downstream and `pinstream bench feed` tell them apart).
HEADER_FEED_CHANGE = "pinstream.feed.change"
# On a redriven dead letter: "<topic>/<partition>/<offset>" of the dead letter it re-publishes.
HEADER_DLQ_REDRIVE_OF = "pinstream.dlq.redrive_of"
# On a reconciler dead letter: every attempt (JSON list of {attempt, at, dependency, error}), and
# the stage and dependency of the failed side effect.
HEADER_RECONCILE_HISTORY = "pinstream.reconcile.history"
HEADER_RECONCILE_STAGE = "pinstream.reconcile.stage"
HEADER_RECONCILE_DEPENDENCY = "pinstream.reconcile.dependency"
