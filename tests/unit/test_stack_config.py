"""Configuration the local stack renders: Kafka properties, hbase-site.xml, cluster ids, poms."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from streams.stack import hbase, kafka
from streams.stack.jars import HBASE_JARS, KAFKA_JARS, pom_version
from streams.stack.render import render, write_if_changed
from streams.stack.tools import parse_java_major


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def test_server_properties_are_single_node_kraft_with_small_internal_topics(tmp_path: Path) -> None:
    props = _properties(kafka.server_properties(tmp_path / "data"))

    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,SASL_PLAINTEXT://127.0.0.1:9094"
    )
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9094"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["offsets.topic.num.partitions"] == "1"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_sasl_listener_takes_the_pinstream_user_from_its_jaas_config(tmp_path: Path) -> None:
    props = _properties(kafka.server_properties(tmp_path))
    jaas = props["listener.name.sasl_plaintext.plain.sasl.jaas.config"]

    assert jaas.startswith("org.apache.kafka.common.security.plain.PlainLoginModule required")
    assert 'user_pinstream="pinstream-secret"' in jaas
    assert jaas.endswith(";")
    assert props["listener.security.protocol.map"].endswith("SASL_PLAINTEXT:SASL_PLAINTEXT")


def test_new_cluster_id_is_22_urlsafe_chars_never_starting_with_dash() -> None:
    for _ in range(500):
        value = kafka.new_cluster_id()
        assert len(value) == 22
        assert not value.startswith("-")
        assert len(base64.urlsafe_b64decode(value + "==")) == 16


def test_cluster_id_is_created_once_and_kept(tmp_path: Path) -> None:
    first = kafka.cluster_id(tmp_path)

    assert kafka.cluster_id(tmp_path) == first
    assert (tmp_path / "cluster.id").read_text().strip() == first


def test_cluster_id_follows_formatted_storage(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.properties").write_text("version=1\ncluster.id=AbCdEfGhIjKlMnOpQrStUv\n")
    (tmp_path / "cluster.id").write_text("SomethingElseEntirely1\n")

    assert kafka.cluster_id(tmp_path) == "AbCdEfGhIjKlMnOpQrStUv"
    assert (tmp_path / "cluster.id").read_text().strip() == "AbCdEfGhIjKlMnOpQrStUv"


def test_hbase_site_is_standalone_with_every_folder_under_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "d&ta"  # a path with an XML special character must stay valid XML
    root = ET.fromstring(hbase.site_xml(data))
    conf = {p.findtext("name"): p.findtext("value") for p in root.findall("property")}

    assert conf["hbase.cluster.distributed"] == "false"
    assert conf["hbase.rootdir"] == (data / "root").as_uri()
    assert conf["hbase.tmp.dir"] == str(data / "tmp")
    assert conf["hbase.zookeeper.property.dataDir"] == str(data / "zookeeper")
    assert conf["hbase.zookeeper.quorum"] == "127.0.0.1"
    assert conf["hbase.unsafe.stream.capability.enforce"] == "false"
    assert conf["hbase.master.info.port"] == "-1"
    assert conf["hbase.regionserver.info.port"] == "-1"
    assert conf["hbase.wal.provider"] == "filesystem"


def test_hbase_jvm_gets_the_jdk17_opens_of_bin_hbase() -> None:
    assert "--add-opens=java.base/java.nio=ALL-UNNAMED" in hbase.JDK17_OPTIONS
    assert "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED" in hbase.JDK17_OPTIONS
    assert "-Dorg.apache.hbase.thirdparty.io.netty.tryReflectionSetAccessible=true" in hbase.JDK17_OPTIONS


@pytest.mark.parametrize("name", ["kafka-log4j.properties", "hbase-log4j2.properties"])
def test_static_templates_render_without_values(name: str) -> None:
    assert "$" not in render(name)


def test_versions_are_read_from_the_poms() -> None:
    assert KAFKA_JARS.version.startswith("3.9.")
    assert HBASE_JARS.version.startswith("2.6.")
    assert HBASE_JARS.version.endswith("-hadoop3")


def test_pom_version_resolves_properties_and_rejects_unknown_artifacts() -> None:
    pom = """<project xmlns="http://maven.apache.org/POM/4.0.0">
      <properties><x.version>1.2.3</x.version></properties>
      <dependencies>
        <dependency><artifactId>a</artifactId><version>${x.version}</version></dependency>
        <dependency><artifactId>b</artifactId><version>4.5</version></dependency>
      </dependencies></project>"""

    assert pom_version(pom, "a") == "1.2.3"
    assert pom_version(pom, "b") == "4.5"
    with pytest.raises(ValueError, match="no dependency c"):
        pom_version(pom, "c")


def test_write_if_changed_reports_whether_it_wrote(tmp_path: Path) -> None:
    target = tmp_path / "conf" / "x.properties"

    assert write_if_changed(target, "a=1\n") is True
    assert write_if_changed(target, "a=1\n") is False
    assert write_if_changed(target, "a=2\n") is True
    assert target.read_text() == "a=2\n"


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_402"', 8),
        ("no java here", None),
    ],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert parse_java_major(output) == major
