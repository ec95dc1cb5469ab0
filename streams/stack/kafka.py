"""Kafka of the local stack: one KRaft node (broker and controller) from Maven Central jars."""

from __future__ import annotations

import base64
import logging
import secrets
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.errors import StackError
from streams.stack.jars import KAFKA_JARS, classpath, resolve
from streams.stack.model import Launch, Layout, Progress, ServiceSpec
from streams.stack.render import render, write_if_changed
from streams.stack.tools import require_java

NAME = "kafka"
PLAINTEXT_PORT = 9092
CONTROLLER_PORT = 9093
SASL_PORT = 9094
SASL_USERNAME = "pinstream"
SASL_PASSWORD = "pinstream-secret"  # a local test credential, the same in docker-compose
BOOTSTRAP = f"127.0.0.1:{PLAINTEXT_PORT}"
SASL_BOOTSTRAP = f"127.0.0.1:{SASL_PORT}"

JVM_OPTIONS = (
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

# librdkafka reports refused connections while the broker starts: keep them out of the terminal.
_probe_log = logging.getLogger("streams.stack.kafka.probe")


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding (22 chars), never starting with '-'."""
    while True:
        text = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def _formatted_cluster_id(data_dir: Path) -> str | None:
    meta = data_dir / "meta.properties"
    if not meta.is_file():
        return None
    for line in meta.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip()
    return None


def cluster_id(service_dir: Path) -> str:
    """The cluster id kept in `cluster.id`: the formatted storage's id, else created once."""
    id_file = service_dir / "cluster.id"
    formatted = _formatted_cluster_id(service_dir / "data")
    if formatted:
        write_if_changed(id_file, formatted + "\n")
        return formatted
    kept = id_file.read_text().strip() if id_file.is_file() else ""
    if kept:
        return kept
    value = new_cluster_id()
    write_if_changed(id_file, value + "\n")
    return value


def server_properties(data_dir: Path) -> str:
    return render(
        "kafka-server.properties",
        plaintext_port=str(PLAINTEXT_PORT),
        controller_port=str(CONTROLLER_PORT),
        sasl_port=str(SASL_PORT),
        sasl_username=SASL_USERNAME,
        sasl_password=SASL_PASSWORD,
        log_dirs=str(data_dir),
    )


def _java_base(java: str, lib_dir: Path, log4j: Path) -> list[str]:
    return [
        java,
        *JVM_OPTIONS,
        f"-Dlog4j.configuration=file:{log4j}",
        "-cp",
        classpath(lib_dir),
    ]


def _format_storage(base: list[str], properties: Path, cid: str, progress: Progress) -> None:
    progress(f"kafka: formatting storage (cluster id {cid})")
    argv = [
        *base,
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cid,
        "-c",
        str(properties),
        "--ignore-formatted",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise StackError("kafka storage format failed", service=NAME, log_tail=tail)


def prepare(layout: Layout, progress: Progress) -> Launch:
    java = require_java()
    lib_dir = resolve(KAFKA_JARS, layout, progress)
    service_dir = layout.service_dir(NAME)
    data_dir = layout.data_dir(NAME)
    data_dir.mkdir(parents=True, exist_ok=True)
    properties = service_dir / "server.properties"
    log4j = service_dir / "log4j.properties"
    write_if_changed(properties, server_properties(data_dir.resolve()))
    write_if_changed(log4j, render("kafka-log4j.properties"))
    base = _java_base(java, lib_dir.resolve(), log4j.resolve())
    cid = cluster_id(service_dir)
    if _formatted_cluster_id(data_dir) is None:
        _format_storage(base, properties.resolve(), cid, progress)
    return Launch(argv=(*base, "kafka.Kafka", str(properties.resolve())), cwd=service_dir)


def probe(conf: Mapping[str, Any] | None = None) -> str:
    """A metadata round trip with the admin client; `conf` defaults to the stack's listener."""
    client_conf: dict[str, Any] = {"bootstrap.servers": BOOTSTRAP, **(conf or {})}
    client_conf |= {"socket.timeout.ms": 3000, "logger": _probe_log}
    try:
        metadata = AdminClient(client_conf).list_topics(timeout=3)
    except KafkaException as exc:
        raise StackError(
            f"no metadata from {client_conf['bootstrap.servers']}: {exc.args[0]}", service=NAME
        ) from exc
    if not metadata.brokers:
        raise StackError("metadata lists no broker", service=NAME)
    return (
        f"metadata ok: cluster {metadata.cluster_id}, {len(metadata.brokers)} broker(s), "
        f"{len(metadata.topics)} topic(s)"
    )


SPEC = ServiceSpec(
    name=NAME,
    title=f"Kafka {KAFKA_JARS.version} (KRaft)",
    ports=(PLAINTEXT_PORT, CONTROLLER_PORT, SASL_PORT),
    marker="kafka.Kafka",
    prepare=prepare,
    probe=probe,
    ready_timeout=120.0,
    stop_timeout=30.0,
)
