"""One frozen, validated settings object, read from `PINSTREAM_*` env vars and an optional TOML file.

Unknown keys are rejected (a typo must not silently fall back to a default); secrets are
`SecretStr` and never printed. Client dicts for librdkafka, redis and happybase are built here,
at the edge, from the one object.
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streams.errors import ConfigError

CONFIG_FILE_ENV = "PINSTREAM_CONFIG"
# A consumer's fetch returns once this much has gathered, or after consumer_fetch_wait_ms: with
# librdkafka's 1 byte, a consumer that keeps up sends a fetch per arrival (at 5,000 records/s two
# such consumers cost a one-broker Kafka 0.54 cores; waiting 10 ms, 0.28).
FETCH_MIN_BYTES = 1 << 20

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"]
IndexKindName = Literal["auto", "flat", "ivf_sq8"]
EmbedOptimisation = Literal["eager", "channels_last", "fused", "jit", "compile"]


class Settings(BaseSettings):
    """Everything a Pinstream process can be told. Build with `load_settings()`."""

    model_config = SettingsConfigDict(
        env_prefix="PINSTREAM_",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    # Kafka
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "pinstream"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    schema_registry_url: str | None = None
    schema_registry_basic_auth: SecretStr | None = Field(
        default=None, description="user:password for the schema registry"
    )
    topic_prefix: str = Field(default="", description="prepended to every catalogue topic name")
    producer_linger_ms: int = Field(default=5, ge=0, le=10_000)
    producer_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "zstd"
    producer_queue_max_messages: int = Field(default=100_000, ge=1_000, le=10_000_000)
    worker_producer_linger_ms: int = Field(
        default=50, ge=0, le=10_000,
        description="linger.ms of the worker's and the live patch process's producers (graph deltas, "
                    "feed updates, dead letters, reconciliation): every batch of theirs ends with a "
                    "flush, which sends at once, so a longer linger only merges a batch's sends into "
                    "fewer requests (the broker's CPU goes mostly per request)")
    consumer_fetch_wait_ms: int = Field(
        default=10, ge=0, le=500,
        description="how long the broker holds a consumer's fetch to gather records (fetch.wait.max.ms, "
                    "with a fetch.min.bytes it rarely reaches): while records trickle in, each consumer "
                    "sends at most 1000/this fetches a second instead of one per arrival, for at most "
                    "this much more latency (0: librdkafka's defaults)")

    # Producer SDK policy
    pin_rate_limit_per_minute: int = Field(default=10, ge=0, description="0 disables the limit")
    max_inline_image_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)

    # Redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_pool_size: int = Field(default=16, ge=1, le=1024)

    # HBase (Thrift1)
    hbase_host: str = "127.0.0.1"
    hbase_port: int = Field(default=9090, ge=1, le=65535)
    hbase_pool_size: int = Field(default=8, ge=1, le=256)
    hbase_table_prefix: str = "pinstream"

    # Local data
    stack_dir: Path = Field(default=Path(".stack"), description="local stack data, logs, pids")
    blob_dir: Path = Field(default=Path("blobs"), description="local blob store for pin images")

    # Pin images and visual embeddings
    image_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024,
                                 description="largest encoded image read from a blob or URL")
    image_max_pixels: int = Field(default=25_000_000, ge=64 * 64, le=178_000_000,
                                  description="largest width*height decoded (checked from the header)")
    image_url_fetch_enabled: bool = Field(default=False,
                                          description="fetch image_url pins (public addresses only)")
    image_url_timeout_s: float = Field(default=5.0, gt=0, le=60)
    embed_optimisation: EmbedOptimisation = Field(default="jit", description="inference variant")
    embed_threads: int = Field(default=0, ge=0, le=256, description="torch threads; 0 = usable cores")
    embed_decode_threads: int = Field(default=0, ge=0, le=64,
                                      description="threads loading and decoding pin images ahead of "
                                                  "inference; 0 = in the inference thread")
    embed_max_batch: int = Field(default=4, ge=1, le=256)
    embed_max_wait_ms: float = Field(default=10.0, ge=0, le=10_000)
    embed_queue_size: int = Field(default=64, ge=1, le=100_000)
    embed_batch_timeout_s: float = Field(default=10.0, gt=0, le=600)

    # Observability
    metrics_port: int = Field(default=9400, ge=0, le=65535, description="0 disables the endpoint")

    # ANN index (visual search)
    index_dir: Path = Field(default=Path("index"),
                            description="ANN index snapshots, one folder per embedding model version")
    index_kind: IndexKindName = Field(
        default="auto", description="auto: exact up to index_flat_max pins, then IVF-SQ8")
    index_flat_max: int = Field(default=20_000, ge=0, le=10_000_000,
                                description="auto: largest collection searched exactly")
    index_nprobe: int = Field(default=32, ge=1, le=4096,
                              description="IVF lists scanned per query (recall against latency)")

    feed_refresh_interval_s: float = Field(default=1.0, gt=0, le=3600,
                                           description="at most one feed recompute per user per interval")
    graph_batch_wait_ms: float = Field(default=0.0, ge=0, le=10_000,
                                       description="once an idle interaction stage gets a record, how long "
                                                   "it waits for more before the batch starts (0: it "
                                                   "takes what has queued; under load batches grow anyway)")
    feed_rerank_share: float = Field(default=0.5, gt=0, le=1,
                                     description="largest share of the time full re-ranks may take: after "
                                                 "each feed they pause for the rest, so interaction batches "
                                                 "and live patches keep the interpreter (1: no pause)")
    feed_rerank_share_behind: float = Field(
        default=0.1, gt=0, le=1,
        description="the re-ranks' largest share while the interaction stage is behind (a batch's "
                    "oldest record waited more than feed_rerank_behind_ms): live patches first")
    feed_rerank_behind_ms: float = Field(default=100.0, ge=0, le=60_000,
                                         description="how long a batch's oldest record may wait before "
                                                     "the stage counts as behind")
    feed_refresh_threads: int = Field(default=1, ge=1, le=64,
                                      description="feed refreshes computed at the same time")
    feed_graph_from_cache: bool = Field(default=True,
                                        description="feeds read the graph rows the graph stage holds in "
                                                    "memory, HBase only for the others (false: HBase always)")
    feed_live_related: int = Field(default=10, ge=0, le=200,
                                   description="pins lifted per engagement by a live feed patch "
                                               "(0: feeds change only at the full refresh)")
    feed_live_announce_interval_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="at most one announcement of a live-patched feed on feeds.updated.v1 per user "
                    "per interval (each is the whole feed; full re-ranks are announced apart)")
    feed_live_process: bool = Field(
        default=True,
        description="live patches planned and applied by a process of their own, beside the "
                    "interaction stage (false: by the stage itself, after each batch)")
    feed_live_rows_ttl_s: float = Field(default=300.0, gt=0, le=86_400,
                                        description="how long the live patch process keeps a graph "
                                                    "row before reading it again (the graph stage "
                                                    "pushes its writes meanwhile)")
    feed_live_related_reuse_ms: int = Field(default=2_000, ge=0, le=600_000,
                                            description="how long the live patch process reuses a "
                                                        "pin's related pins after computing them, "
                                                        "though the graph stage pushed a newer row "
                                                        "(0: only while the row is unchanged)")
    feed_live_rows_max_cells: int = Field(default=500_000, ge=1_000, le=50_000_000,
                                          description="graph cells the live patch process holds")

    # Visual search and the worker's web server
    search_shortlist: int = Field(default=1000, ge=1, le=10_000,
                                  description="ANN candidates taken before threshold and re-rank")
    search_min_cosine: float = Field(default=0.5, ge=-1.0, le=1.0,
                                     description="candidates below this cosine are dropped")
    search_embed_timeout_s: float = Field(default=1.0, gt=0, le=60,
                                          description="feature extraction deadline; then the fallback")
    search_max_upload_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    web_host: str = Field(default="127.0.0.1", description="worker web server address")
    web_port: int = Field(default=6066, ge=1, le=65535, description="worker web server port")

    # Pin graph: edge weights per action, time decay, co-engagement and bounded state
    graph_weight_impression: float = Field(default=0.0, ge=-100, le=100,
                                           description="user->pin weight of an impression (0: no edge)")
    graph_weight_click: float = Field(default=1.0, ge=-100, le=100)
    graph_weight_closeup: float = Field(default=2.0, ge=-100, le=100)
    graph_weight_save: float = Field(default=4.0, ge=-100, le=100)
    graph_weight_hide: float = Field(default=-8.0, ge=-100, le=100,
                                     description="negative: a net-negative user->pin edge means hidden")
    graph_weight_board: float = Field(default=1.0, ge=0, le=100,
                                      description="pin<->board weight of a save or a pin creation")
    graph_weight_coengagement: float = Field(default=1.0, ge=0, le=100,
                                             description="pin<->pin weight per session engaging both")
    graph_half_life_s: float = Field(default=7 * 86_400.0, gt=0, le=3650 * 86_400,
                                     description="every edge weight halves after this long")
    graph_session_max_pins: int = Field(default=20, ge=2, le=200,
                                        description="a session's first N engaged pins co-engage")
    graph_cache_max_cells: int = Field(default=500_000, ge=1_000, le=100_000_000,
                                       description="graph rows cached in memory, counted in cells")
    graph_dedup_ids_per_partition: int = Field(default=100_000, ge=0, le=10_000_000,
                                               description="recent event ids remembered per partition")

    # Home feed: candidates, ranking, Redis cache, trending
    feed_size: int = Field(default=200, ge=1, le=1000, description="pins kept per home feed")
    feed_ttl_s: int = Field(default=900, ge=1, le=86_400, description="life of a cached feed in Redis")
    feed_prefs_ttl_s: int = Field(default=7 * 86_400, ge=60, le=90 * 86_400,
                                  description="life of the cached preferences (graph-down fallback)")
    feed_max_candidates: int = Field(default=10_000, ge=10, le=100_000,
                                     description="2-hop candidates kept for ranking")
    feed_max_query_pins: int = Field(default=100, ge=1, le=10_000,
                                     description="heaviest engaged pins the walks start from")
    feed_max_boards: int = Field(default=1000, ge=1, le=100_000,
                                 description="boards read around the query pins, the likeliest first")
    feed_walk_steps: int = Field(default=20_000, ge=100, le=10_000_000,
                                 description="random-walk step budget per feed")
    feed_walk_restart: float = Field(default=0.5, gt=0, lt=1, description="restart probability per step")
    feed_walk_high_visits: int = Field(default=4, ge=1, le=1000,
                                       description="early stop: visits that make a pin well visited")
    feed_walk_high_pins: int = Field(default=50, ge=1, le=1_000_000,
                                     description="early stop: well-visited pins per query pin")
    feed_embedding_weight: float = Field(default=0.1, ge=0, le=1,
                                         description="share of the embedding score in the ranking")
    feed_embedding_shortlist: int = Field(default=2000, ge=1, le=100_000,
                                          description="best pins by walks whose embeddings are scored")
    feed_ranker_deadline_ms: float = Field(default=100.0, gt=0, le=10_000,
                                           description="ranking deadline; then co-engagement scores")
    feed_seed: int = Field(default=0, description="seed of the random walks (same seed, same feed)")
    trending_half_life_s: float = Field(default=6 * 3600.0, gt=0, le=90 * 86_400,
                                        description="half-life of trending popularity")
    trending_max_pins: int = Field(default=10_000, ge=10, le=10_000_000,
                                   description="pins kept in the trending set")

    # Reconciler: re-drives failed side effects from ops.reconciliation.v1
    reconcile_group_id: str = Field(default="pinstream-reconciler",
                                    description="consumer group of the reconciler (after topic_prefix)")
    reconcile_max_attempts: int = Field(default=8, ge=1, le=1000,
                                        description="re-drives of one record before it is dead-lettered")
    reconcile_backoff_base_s: float = Field(default=1.0, gt=0, le=3600,
                                            description="first retry waits up to this long (full jitter)")
    reconcile_backoff_cap_s: float = Field(default=300.0, gt=0, le=86_400,
                                           description="no retry waits longer than this")
    reconcile_breaker_failures: int = Field(
        default=5, ge=1, le=10_000, description="consecutive failures that open a dependency's breaker")
    reconcile_breaker_open_s: float = Field(
        default=30.0, gt=0, le=3600, description="an open breaker waits this long, then lets a probe through")
    reconcile_max_buffered: int = Field(default=1000, ge=1, le=1_000_000,
                                        description="records held per partition before it is paused")

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers_not_empty(cls, value: str) -> str:
        hosts = [h.strip() for h in value.split(",") if h.strip()]
        if not hosts or any(":" not in h for h in hosts):
            raise ValueError("expected host:port[,host:port...]")
        return ",".join(hosts)

    @model_validator(mode="after")
    def _sasl_complete(self) -> Settings:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol={self.security_protocol} needs sasl_mechanism")
        if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(f"sasl_mechanism={self.sasl_mechanism} needs sasl_username/password")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments win, then the environment; the TOML file is passed as init args.
        return (init_settings, env_settings)

    # --- client configuration, built at the edge -------------------------------------------

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka properties shared by producers, consumers and the admin client."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        optional_paths = {
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        conf.update({k: str(v) for k, v in optional_paths.items() if v is not None})
        if self.ssl_key_password:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return conf

    def kafka_producer(self, **overrides: Any) -> dict[str, Any]:
        conf = self.kafka_common() | {
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": self.producer_compression,
            "linger.ms": self.producer_linger_ms,
            "queue.buffering.max.messages": self.producer_queue_max_messages,
            # Java clients and faust (aiokafka) hash keys with murmur2: the same key must land
            # on the same partition whoever produces it.
            "partitioner": "murmur2_random",
        }
        return conf | overrides

    def kafka_consumer(self, group_id: str, **overrides: Any) -> dict[str, Any]:
        conf = self.kafka_common() | {
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
        if self.consumer_fetch_wait_ms:
            conf |= {"fetch.wait.max.ms": self.consumer_fetch_wait_ms, "fetch.min.bytes": FETCH_MIN_BYTES}
        return conf | overrides

    @property
    def worker_group_id(self) -> str:
        """The worker's faust consumer group (its app id): pin creations for the embed stage."""
        return f"{self.topic_prefix}pinstream-worker"

    @property
    def graph_group_id(self) -> str:
        """The interaction stage's consumer group: interactions and pin creations for the graph."""
        return f"{self.topic_prefix}pinstream-graph"

    @property
    def live_group_id(self) -> str:
        """The live patch process's consumer group: interactions, from the newest on first start."""
        return f"{self.topic_prefix}pinstream-live"

    def topic(self, name: str) -> str:
        """The physical topic name for a catalogue name (applies `topic_prefix`)."""
        return f"{self.topic_prefix}{name}"

    def for_child(self) -> dict[str, Any]:
        """All settings as JSON-ready data, secrets included: only for a process of our own,
        over a private pipe (the live patch process). Never log it."""
        out = self.model_dump(mode="json")  # secrets come out masked: put them back
        for name in out:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                out[name] = value.get_secret_value()
        return out

    def redacted(self) -> dict[str, Any]:
        """All settings as plain data with secrets masked: safe to print or log."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                out[name] = "**********"
            elif isinstance(value, Path):
                out[name] = str(value)
            else:
                out[name] = value
        return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist; fix {CONFIG_FILE_ENV}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    section = data.get("pinstream", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [pinstream] must be a table")
    return section


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings: overrides > `PINSTREAM_*` env > TOML file (`PINSTREAM_CONFIG`) > defaults.

    Raises ConfigError with every invalid or unknown key named.
    """
    env_file = os.environ.get(CONFIG_FILE_ENV)
    path = config_file or (Path(env_file) if env_file else None)
    file_values = _read_toml(path) if path else {}
    env_keys = {
        k[len("PINSTREAM_") :].lower()
        for k in os.environ
        if k.startswith("PINSTREAM_") and k != CONFIG_FILE_ENV
    }
    unknown = sorted(env_keys - set(Settings.model_fields))
    if unknown:
        raise ConfigError(
            "unknown settings in the environment: "
            + ", ".join(f"PINSTREAM_{k.upper()}" for k in unknown)
            + "; see `pinstream config --help` for the valid names"
        )
    # The environment overrides the file: drop file keys that the environment sets.
    merged = {k: v for k, v in file_values.items() if k not in env_keys} | overrides
    try:
        return Settings(**merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(settings)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded once."""
    return load_settings()
