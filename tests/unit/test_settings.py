"""Settings: precedence of overrides, environment and TOML file; unknown keys rejected; SASL rules;
secrets never shown; librdkafka dicts built from the one object."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from streams.errors import ConfigError
from streams.settings import CONFIG_FILE_ENV, FETCH_MIN_BYTES, Settings, load_settings

SECRET = "hunter2-very-secret"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from no PINSTREAM_* variables, whatever the machine has set."""
    for key in list(os.environ):
        if key.startswith("PINSTREAM_"):
            monkeypatch.delenv(key)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pinstream.toml"
    path.write_text(text)
    return path


def _sasl(**changes: Any) -> Settings:
    values: dict[str, Any] = {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "svc-pins", "sasl_password": SECRET,
    }
    return load_settings(**(values | changes))


# --- sources and precedence ----------------------------------------------------------------------


def test_defaults_point_at_the_local_stack() -> None:
    settings = load_settings()
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.security_protocol == "PLAINTEXT"
    assert settings.schema_registry_url is None


def test_environment_overrides_defaults_with_typed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINSTREAM_BOOTSTRAP_SERVERS", " k1:9092, k2:9093 ")
    monkeypatch.setenv("PINSTREAM_REDIS_POOL_SIZE", "32")
    monkeypatch.setenv("PINSTREAM_PRODUCER_COMPRESSION", "lz4")
    settings = load_settings()
    assert settings.bootstrap_servers == "k1:9092,k2:9093"
    assert settings.redis_pool_size == 32
    assert settings.producer_compression == "lz4"


def test_toml_file_named_by_pinstream_config_is_read_from_its_pinstream_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _toml(tmp_path, '[pinstream]\nclient_id = "from-file"\nhbase_port = 9191\n')
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    settings = load_settings()
    assert (settings.client_id, settings.hbase_port) == ("from-file", 9191)


def test_environment_beats_file_and_explicit_overrides_beat_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _toml(tmp_path, '[pinstream]\nclient_id = "file"\nredis_pool_size = 4\nhbase_pool_size = 2\n')
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    monkeypatch.setenv("PINSTREAM_REDIS_POOL_SIZE", "9")
    monkeypatch.setenv("PINSTREAM_CLIENT_ID", "env")
    settings = load_settings(client_id="explicit")
    assert (settings.client_id, settings.redis_pool_size, settings.hbase_pool_size) == ("explicit", 9, 2)


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.client_id = "changed"  # type: ignore[misc]


# --- rejection -----------------------------------------------------------------------------------


def test_unknown_environment_key_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINSTREAM_BOOTSRAP_SERVERS", "k1:9092")
    with pytest.raises(ConfigError, match="PINSTREAM_BOOTSRAP_SERVERS"):
        load_settings()


def test_unknown_file_key_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[pinstream]\nredis_pool = 4\n')
    with pytest.raises(ConfigError, match="redis_pool"):
        load_settings(path)


def test_missing_config_file_is_a_config_error_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_FILE_ENV, str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match=CONFIG_FILE_ENV):
        load_settings()


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(_toml(tmp_path, "[pinstream\n"))


@pytest.mark.parametrize(
    ("key", "value"),
    [("hbase_port", 70000), ("bootstrap_servers", "kafka-without-port"), ("security_protocol", "TLS"),
     ("redis_pool_size", 0)],
)
def test_invalid_value_is_a_config_error_naming_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=key):
        load_settings(**{key: value})


# --- SASL ----------------------------------------------------------------------------------------


def test_sasl_protocol_without_mechanism_is_rejected() -> None:
    with pytest.raises(ConfigError, match="needs sasl_mechanism"):
        load_settings(security_protocol="SASL_PLAINTEXT")


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_password_mechanisms_need_username_and_password(mechanism: str) -> None:
    with pytest.raises(ConfigError, match="needs sasl_username/password"):
        load_settings(security_protocol="SASL_SSL", sasl_mechanism=mechanism, sasl_username="u")


def test_oauthbearer_needs_no_password() -> None:
    settings = load_settings(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER")
    assert settings.sasl_password is None


def test_unknown_sasl_mechanism_is_rejected() -> None:
    with pytest.raises(ConfigError, match="sasl_mechanism"):
        _sasl(sasl_mechanism="SCRAM-SHA-1")


# --- secrets -------------------------------------------------------------------------------------


def _all_secrets_set(tmp_path: Path) -> Settings:
    return _sasl(ssl_key_password=SECRET, schema_registry_basic_auth=f"user:{SECRET}",
                 ssl_ca_location=tmp_path / "ca.pem")


def test_redacted_masks_every_secret_and_is_plain_data(tmp_path: Path) -> None:
    redacted = _all_secrets_set(tmp_path).redacted()
    for key in ("sasl_password", "ssl_key_password", "schema_registry_basic_auth"):
        assert redacted[key] == "**********"
    assert redacted["ssl_ca_location"] == str(tmp_path / "ca.pem")
    assert SECRET not in json.dumps(redacted)


def test_secrets_never_appear_in_repr_or_str(tmp_path: Path) -> None:
    settings = _all_secrets_set(tmp_path)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert SECRET not in f"{settings!r} {settings}"


def test_secret_from_the_environment_is_masked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINSTREAM_SCHEMA_REGISTRY_BASIC_AUTH", f"user:{SECRET}")
    settings = load_settings()
    assert SECRET not in repr(settings)
    assert settings.schema_registry_basic_auth is not None
    assert settings.schema_registry_basic_auth.get_secret_value() == f"user:{SECRET}"


# --- client dicts at the edge --------------------------------------------------------------------


def test_kafka_common_passes_sasl_and_ssl_through(tmp_path: Path) -> None:
    settings = _sasl(ssl_ca_location=tmp_path / "ca.pem", ssl_certificate_location=tmp_path / "c.pem",
                     ssl_key_location=tmp_path / "k.pem", ssl_key_password="key-pass")
    conf = settings.kafka_common()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "svc-pins"
    assert conf["sasl.password"] == SECRET  # librdkafka needs the plain value, only here
    assert conf["ssl.ca.location"] == str(tmp_path / "ca.pem")
    assert conf["ssl.certificate.location"] == str(tmp_path / "c.pem")
    assert conf["ssl.key.location"] == str(tmp_path / "k.pem")
    assert conf["ssl.key.password"] == "key-pass"


def test_plaintext_kafka_common_has_no_security_extras() -> None:
    conf = load_settings().kafka_common()
    assert set(conf) == {"bootstrap.servers", "client.id", "security.protocol"}


def test_producer_and_consumer_dicts_extend_common_and_take_overrides() -> None:
    settings = _sasl(producer_linger_ms=20)
    producer = settings.kafka_producer(**{"linger.ms": 1})
    consumer = settings.kafka_consumer("feed-writer")
    assert producer["sasl.password"] == consumer["sasl.password"] == SECRET
    assert producer["enable.idempotence"] is True and producer["acks"] == "all"
    assert producer["linger.ms"] == 1
    assert consumer["group.id"] == "feed-writer"
    assert consumer["enable.auto.commit"] is False


def test_consumers_let_the_broker_gather_records_for_a_bounded_wait() -> None:
    conf = load_settings().kafka_consumer("g")
    assert conf["fetch.wait.max.ms"] == 10 and conf["fetch.min.bytes"] == FETCH_MIN_BYTES
    assert load_settings(consumer_fetch_wait_ms=3).kafka_consumer("g")["fetch.wait.max.ms"] == 3
    plain = load_settings(consumer_fetch_wait_ms=0).kafka_consumer("g")  # librdkafka's own defaults
    assert "fetch.wait.max.ms" not in plain and "fetch.min.bytes" not in plain
    assert load_settings().kafka_consumer("g", **{"fetch.min.bytes": 1})["fetch.min.bytes"] == 1
    with pytest.raises(ConfigError):
        load_settings(consumer_fetch_wait_ms=501)


def test_topic_prefix_is_applied_to_catalogue_names() -> None:
    assert load_settings(topic_prefix="dev.").topic("pins.created.v1") == "dev.pins.created.v1"


def test_a_producer_may_take_its_own_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.producer as producer_module

    configs: list[dict[str, Any]] = []
    monkeypatch.setattr(producer_module, "Producer", lambda conf: configs.append(conf) or object())
    settings = load_settings()
    producer_module.EventProducer(settings)
    producer_module.EventProducer(settings, linger_ms=settings.worker_producer_linger_ms)
    assert [c["linger.ms"] for c in configs] == [5, 50]  # the SDK's default, the worker's
