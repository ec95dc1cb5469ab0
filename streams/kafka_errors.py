"""What every consumer loop does with an error event from librdkafka, one rule for all of them
(the SDK consumer, the interaction stage, the reconciler, the index catch-up):

- end of a partition: nothing, it is news, not an error;
- fatal, or a topic that does not exist or may not be read: raise PinstreamError naming the fix,
  since waiting would not mend it;
- anything else (a broker away, a timed-out request): log it and go on, since librdkafka
  reconnects and retries by itself.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, Message

from streams.errors import PinstreamError

log = logging.getLogger(__name__)

_MISSING_TOPIC = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
                            KafkaError._UNKNOWN_PARTITION})
_REFUSED = frozenset({KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED})


def check_error(err: KafkaError, *, consumer: str, topic: str | None = None) -> None:
    """Raise for an error no retry mends; log any other (except end of partition) and return."""
    code = err.code()
    if code == KafkaError._PARTITION_EOF:
        return
    if err.fatal():
        raise PinstreamError(f"{consumer}: fatal Kafka error: {err.str()}")
    where = f"topic {topic}" if topic else "a subscribed topic"
    if code in _MISSING_TOPIC:
        raise PinstreamError(f"{consumer}: {where} does not exist ({err.str()}): run `pinstream "
                             "topics apply` with the same PINSTREAM_TOPIC_PREFIX")
    if code in _REFUSED:
        raise PinstreamError(f"{consumer}: the broker refuses to let it read {where} ({err.str()}): "
                             "grant the principal of PINSTREAM_SASL_USERNAME read access")
    log.warning("%s: Kafka error, librdkafka retries by itself: %s", consumer, err.str())


def usable(message: Message, *, consumer: str) -> bool:
    """True for a record; False for an error event that may be passed over (after `check_error`)."""
    err = message.error()
    if err is None:
        return True
    check_error(err, consumer=consumer, topic=message.topic())
    return False
