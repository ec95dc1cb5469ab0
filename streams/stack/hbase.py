"""HBase of the local stack: a standalone HMaster (in-process ZooKeeper and region server) and
the Thrift1 gateway that happybase speaks, in two JVMs so that each can be stopped alone."""

from __future__ import annotations

import socket
from pathlib import Path
from xml.sax.saxutils import escape

import happybase
from thriftpy2.thrift import TException

from streams.errors import ConfigError, StackError
from streams.stack.jars import HBASE_JARS, classpath, resolve
from streams.stack.model import Launch, Layout, Progress, ServiceSpec
from streams.stack.process import port_open
from streams.stack.render import render, write_if_changed
from streams.stack.tools import require_java

MASTER = "hbase"
THRIFT = "thrift"
HOST = "127.0.0.1"
THRIFT_PORT = 9090
MASTER_PORT = 16000
REGIONSERVER_PORT = 16020
ZOOKEEPER_PORT = 2181

# What bin/hbase passes on JDK 17: HBase's netty and Hadoop reach into JDK internals.
JDK17_OPTIONS = (
    "-Dorg.apache.hbase.thirdparty.io.netty.tryReflectionSetAccessible=true",
    "--add-modules",
    "jdk.unsupported",
    *(
        f"--add-opens=java.base/{package}=ALL-UNNAMED"
        for package in (
            "java.io",
            "java.nio",
            "sun.nio.ch",
            "java.lang",
            "jdk.internal.ref",
            "java.lang.reflect",
            "java.util",
            "java.util.concurrent",
        )
    ),
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
    "--add-exports=java.base/sun.net.dns=ALL-UNNAMED",
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED",
)
COMMON_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.net.preferIPv4Stack=true",
    "-Djava.awt.headless=true",
)
MASTER_HEAP = "-Xmx768m"
THRIFT_HEAP = "-Xmx256m"


def site_xml(data_dir: Path) -> str:
    """hbase-site.xml for a standalone master whose files all live under `data_dir`."""
    return render(
        "hbase-site.xml",
        rootdir=escape((data_dir / "root").as_uri()),
        tmpdir=escape(str(data_dir / "tmp")),
        zkdir=escape(str(data_dir / "zookeeper")),
        zk_port=str(ZOOKEEPER_PORT),
        master_port=str(MASTER_PORT),
        regionserver_port=str(REGIONSERVER_PORT),
    )


def check_hostname_resolves() -> str:
    """The region server advertises the host name: it must resolve, or clients cannot reach it."""
    name = socket.gethostname()
    try:
        socket.gethostbyname(name)
    except OSError as exc:
        raise ConfigError(
            f"the host name {name!r} does not resolve, and HBase's region server advertises it; "
            f"add a line `127.0.1.1 {name}` to /etc/hosts"
        ) from exc
    return name


def _conf_dir(layout: Layout) -> Path:
    """hbase-site.xml and the log4j2 config, shared by the master and the Thrift server."""
    conf = layout.service_dir(MASTER) / "conf"
    data_dir = layout.data_dir(MASTER).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    write_if_changed(conf / "hbase-site.xml", site_xml(data_dir))
    write_if_changed(conf / "log4j2.properties", render("hbase-log4j2.properties"))
    return conf.resolve()


def _launch(layout: Layout, progress: Progress, service: str, heap: str, main: tuple[str, ...]) -> Launch:
    java = require_java()
    check_hostname_resolves()
    lib_dir = resolve(HBASE_JARS, layout, progress).resolve()
    conf = _conf_dir(layout)
    service_dir = layout.service_dir(service)
    service_dir.mkdir(parents=True, exist_ok=True)
    argv = (
        java,
        heap,
        *COMMON_OPTIONS,
        *JDK17_OPTIONS,
        f"-Dlog4j2.configurationFile=file:{conf / 'log4j2.properties'}",
        "-cp",
        f"{conf}:{classpath(lib_dir)}",
        *main,
    )
    return Launch(argv=argv, cwd=service_dir)


def prepare_master(layout: Layout, progress: Progress) -> Launch:
    return _launch(layout, progress, MASTER, MASTER_HEAP, ("org.apache.hadoop.hbase.master.HMaster", "start"))


def prepare_thrift(layout: Layout, progress: Progress) -> Launch:
    main = ("org.apache.hadoop.hbase.thrift.ThriftServer", "-p", str(THRIFT_PORT), "start")
    return _launch(layout, progress, THRIFT, THRIFT_HEAP, main)


def probe_thrift(host: str = HOST, port: int = THRIFT_PORT) -> str:
    """List tables and read hbase:namespace through Thrift1 (buffered transport, binary protocol).

    The Thrift port opens long before the master has assigned its system regions; reading the
    namespace table proves that a table can be created right away.
    """
    connection = happybase.Connection(host, port, timeout=5000, autoconnect=False)
    try:
        connection.open()
        tables = connection.tables()
        namespaces = list(connection.table("hbase:namespace").scan(limit=1))
    except (TException, OSError) as exc:
        raise StackError(f"no Thrift round trip with {host}:{port}: {exc!r}", service=THRIFT) from exc
    finally:
        connection.close()
    if not namespaces:
        raise StackError("hbase:namespace is still empty: the master is initialising", service=MASTER)
    return f"thrift round trip ok: {len(tables)} table(s)"


def _zookeeper_answers(port: int = ZOOKEEPER_PORT) -> str:
    """ZooKeeper's `srvr` four-letter command: its first line names the version."""
    with socket.create_connection((HOST, port), timeout=2) as conn:
        conn.sendall(b"srvr")
        answer = conn.recv(4096).decode(errors="replace")
    if not answer.startswith("Zookeeper version"):
        raise StackError(f"ZooKeeper on {port} gave no srvr answer", service=MASTER)
    return answer.splitlines()[0]


def probe_master() -> str:
    """Through Thrift when it runs; otherwise ZooKeeper's answer and the master's RPC port."""
    if port_open(THRIFT_PORT):
        return probe_thrift()
    try:
        _zookeeper_answers()
    except OSError as exc:
        raise StackError(f"in-process ZooKeeper does not answer: {exc}", service=MASTER) from exc
    for port in (MASTER_PORT, REGIONSERVER_PORT):
        if not port_open(port):
            raise StackError(f"port {port} is not open yet", service=MASTER)
    return "zookeeper answers, master and region server ports open (thrift down: no table check)"


MASTER_SPEC = ServiceSpec(
    name=MASTER,
    title=f"HBase {HBASE_JARS.version} master",
    ports=(MASTER_PORT, REGIONSERVER_PORT, ZOOKEEPER_PORT),
    marker="org.apache.hadoop.hbase.master.HMaster",
    prepare=prepare_master,
    probe=probe_master,
    ready_timeout=180.0,
    stop_timeout=60.0,
)

THRIFT_SPEC = ServiceSpec(
    name=THRIFT,
    title="HBase Thrift1 server",
    ports=(THRIFT_PORT,),
    marker="org.apache.hadoop.hbase.thrift.ThriftServer",
    prepare=prepare_thrift,
    probe=probe_thrift,
    ready_timeout=180.0,
    stop_timeout=20.0,
    requires=(MASTER,),
)
