"""One rule for Kafka error events in every consumer loop: end of partition passes silently,
what no retry mends raises with the fix, the rest is logged while librdkafka retries."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError

from streams.errors import PinstreamError
from streams.kafka_errors import check_error


def test_end_of_partition_passes_silently(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        check_error(KafkaError(KafkaError._PARTITION_EOF), consumer="c", topic="t")
    assert not caplog.records


@pytest.mark.parametrize("code", [KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                                  KafkaError.REQUEST_TIMED_OUT])
def test_a_broker_away_is_logged_and_passed_over(code: int, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        check_error(KafkaError(code, "down"), consumer="interaction consumer", topic="t")
    assert "interaction consumer" in caplog.text and "retries by itself" in caplog.text


def test_a_missing_topic_raises_naming_the_fix() -> None:
    with pytest.raises(PinstreamError, match="topics apply"):
        check_error(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "gone"), consumer="c", topic="x.pins")


def test_refused_reads_raise_naming_the_fix() -> None:
    with pytest.raises(PinstreamError, match="read access"):
        check_error(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), consumer="c", topic="t")


def test_a_fatal_error_raises() -> None:
    with pytest.raises(PinstreamError, match="fatal"):
        check_error(KafkaError(KafkaError._FENCED, "fenced", fatal=True), consumer="c")
