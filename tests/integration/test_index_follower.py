"""The live index follower against the real Kafka: embeddings of its model version are indexed,
other versions of the same model are skipped, and an embedding it cannot serve (another model, a
wrong dimension) lands in the dead-letter topic with a reason while the follower goes on."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from processors.index_live import IndexFollower
from streams.dlq import DeadLetter
from streams.events import PinEmbedding
from streams.settings import Settings
from tests.integration.kafka_fixtures import kafka_settings
from tests.integration.test_index_catchup import EMBEDDING_DIM, MODEL, embedding, publish

pytestmark = pytest.mark.integration
LetterWait = Callable[[Settings, int, float], dict[str, DeadLetter]]  # the dead_letters fixture
__all__ = ["kafka_settings"]

MODEL_ID = "efficientnet-lite0"


@pytest.fixture
def follower(kafka_settings: Settings, tmp_path: Path) -> Iterator[IndexFollower]:
    settings = kafka_settings.model_copy(update={"index_dir": tmp_path / "index"})
    follower = IndexFollower(settings, MODEL, EMBEDDING_DIM, model_id=MODEL_ID)
    follower.start()
    assert follower.ready.wait(60) and follower.error is None
    yield follower
    follower.stop()


def _wait_for(follower: IndexFollower, handled: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while follower.applied + follower.rejected < handled and time.monotonic() < deadline:
        time.sleep(0.1)
    assert follower.error is None
    assert follower.applied + follower.rejected >= handled, (follower.applied, follower.rejected)


def test_unsupported_embeddings_are_dead_lettered_with_reasons_and_the_follower_goes_on(
        follower: IndexFollower, dead_letters: LetterWait) -> None:
    settings = follower.settings
    good = embedding("p-good", 1)
    migrating = embedding("p-next-version", 2, model_version="lite0-2025.2")
    foreign = PinEmbedding(pin_id="p-foreign", source_event_id=uuid.uuid4(), model_id="resnet50",
                           model_version="v3", vector=good.vector)
    short = PinEmbedding(pin_id="p-short", source_event_id=uuid.uuid4(), model_id=MODEL_ID,
                         model_version=MODEL, vector=(0.6, 0.8))
    publish(settings, [good, migrating, foreign, short])
    _wait_for(follower, 4)

    assert follower.index is not None
    assert "p-good" in follower.index
    assert not any(pin in follower.index for pin in ("p-next-version", "p-foreign", "p-short"))
    assert (follower.applied, follower.rejected) == (2, 2)  # indexed + skipped; two refused
    letters = dead_letters(settings, 2, 30)
    assert {key: letter.reason for key, letter in letters.items()} == {
        "p-foreign": "unsupported_model", "p-short": "bad_dimension"}
    assert all(letter.source_topic == settings.topic("pins.embeddings.v1") for letter in letters.values())

    publish(settings, [embedding("p-after", 3)])  # the follower is still alive and indexing
    _wait_for(follower, 5)
    assert "p-after" in follower.index
