"""Schema-registry adapter: confluent-kafka's client behind the codec's small `SchemaRegistry` protocol."""

from __future__ import annotations

from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streams.codec import AvroCodec
from streams.errors import ConfigError, UnknownSchemaError
from streams.settings import Settings


class ConfluentRegistry:
    """Registers our contracts (record-name subjects) and resolves ids, caching both ways."""

    def __init__(self, url: str, basic_auth: str | None = None) -> None:
        conf: dict[str, Any] = {"url": url}
        if basic_auth:
            conf["basic.auth.user.info"] = basic_auth
        try:
            # `mock://` URLs give confluent-kafka's in-process registry (unit tests only).
            self._client = SchemaRegistryClient.new_client(conf)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"schema registry settings rejected: {exc}") from exc

    def register(self, subject: str, schema_json: str) -> int:
        try:
            return int(self._client.register_schema(subject, Schema(schema_json, "AVRO")))
        except SchemaRegistryError as exc:
            raise UnknownSchemaError(
                f"registry refused subject {subject}: {exc}", reason="registry_refused"
            ) from exc
        except Exception as exc:  # transport errors (connection refused, TLS, timeouts)
            raise UnknownSchemaError(
                f"schema registry unreachable while registering {subject}: {exc}; check "
                "PINSTREAM_SCHEMA_REGISTRY_URL",
                reason="registry_unreachable",
            ) from exc

    def schema_by_id(self, schema_id: int) -> str:
        return str(self._client.get_schema(schema_id).schema_str)


def build_codec(settings: Settings) -> AvroCodec:
    """The codec the settings ask for: Confluent framing when a registry URL is configured."""
    if not settings.schema_registry_url:
        return AvroCodec()
    auth = settings.schema_registry_basic_auth
    registry = ConfluentRegistry(
        settings.schema_registry_url, auth.get_secret_value() if auth else None
    )
    return AvroCodec(registry=registry)
