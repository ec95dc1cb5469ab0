"""Runtime jars from Maven Central: `mvn dependency:copy-dependencies` on the poms in `poms/`.

Maven's own repository (~/.m2) is the download cache; each jar set is copied once into
`<stack_dir>/lib/<name>` and copied again only when its pom changes.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from streams.errors import StackError
from streams.stack.model import Layout, Progress
from streams.stack.tools import require_tool

POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
STAMP_NAME = ".pom.sha256"


@dataclass(frozen=True)
class JarSet:
    """One pom's runtime classpath: `product` names the artifact whose version we report."""

    name: str
    pom: str
    product: str
    artifact_id: str
    download_mb: int

    def pom_text(self) -> str:
        return resources.files("streams.stack").joinpath("poms", self.pom).read_text()

    @property
    def version(self) -> str:
        return pom_version(self.pom_text(), self.artifact_id)


KAFKA_JARS = JarSet("kafka", "kafka.xml", "Kafka", "kafka_2.13", download_mb=46)
HBASE_JARS = JarSet("hbase", "hbase.xml", "HBase", "hbase-server", download_mb=117)


def pom_version(pom_text: str, artifact_id: str) -> str:
    """The version of dependency `artifact_id` in a pom, with `${property}` resolved."""
    root = ET.fromstring(pom_text)
    properties = {
        child.tag.split("}", 1)[-1]: (child.text or "").strip()
        for child in root.findall("m:properties/*", POM_NS)
    }
    for dep in root.findall("m:dependencies/m:dependency", POM_NS):
        if dep.findtext("m:artifactId", default="", namespaces=POM_NS) == artifact_id:
            version = dep.findtext("m:version", default="", namespaces=POM_NS).strip()
            if version.startswith("${") and version.endswith("}"):
                version = properties.get(version[2:-1], version)
            return version
    raise ValueError(f"no dependency {artifact_id} in the pom")


def classpath(lib_dir: Path) -> str:
    """A JVM class path with every jar of `lib_dir` (the JVM expands `dir/*`)."""
    return str(lib_dir / "*")


def resolve(jar_set: JarSet, layout: Layout, progress: Progress) -> Path:
    """Copy the jar set into `<stack_dir>/lib/<name>` unless it is there for the same pom."""
    pom_text = jar_set.pom_text()
    digest = hashlib.sha256(pom_text.encode()).hexdigest()
    target = layout.lib_dir(jar_set.name)
    stamp = target / STAMP_NAME
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return target

    mvn = require_tool("mvn")
    progress(
        f"resolving {jar_set.product} {jar_set.version} jars with mvn "
        f"(first run downloads ~{jar_set.download_mb} MB into ~/.m2)..."
    )
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    pom_path = staging / "pom.xml"
    pom_path.write_text(pom_text)
    result = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom_path),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise StackError(
            f"mvn could not resolve the {jar_set.product} jars; check that Maven Central is "
            "reachable (proxy and mirrors in ~/.m2/settings.xml)",
            service=jar_set.name,
            log_tail=tail,
        )
    pom_path.unlink()
    shutil.rmtree(staging / "target", ignore_errors=True)
    jars = list(staging.glob("*.jar"))
    size_mb = sum(jar.stat().st_size for jar in jars) / 1e6
    (staging / STAMP_NAME).write_text(digest + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.replace(target)
    progress(f"{jar_set.product}: {len(jars)} jars ({size_mb:.0f} MB) in {target}")
    return target
