"""Redis of the local stack: Debian's redis-server, or one already running.

Append-only file on, fsync every second: cached feeds and the marks of refreshes still owed
survive a restart (the fault campaign stops Redis), losing at most the last second on a crash."""

from __future__ import annotations

import redis as redis_client

from streams.errors import StackError
from streams.stack.model import Launch, Layout, Progress, ServiceSpec
from streams.stack.tools import require_tool

NAME = "redis"
PORT = 6379
URL = f"redis://127.0.0.1:{PORT}/0"


def command(redis_server: str, data_dir: str, port: int = PORT) -> tuple[str, ...]:
    return (
        redis_server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--daemonize",
        "no",
        "--dir",
        data_dir,
    )


def prepare(layout: Layout, progress: Progress) -> Launch:
    redis_server = require_tool("redis-server")
    data_dir = layout.data_dir(NAME)
    data_dir.mkdir(parents=True, exist_ok=True)
    return Launch(argv=command(redis_server, str(data_dir.resolve())), cwd=layout.service_dir(NAME))


def probe(url: str = URL) -> str:
    """PING, and the server's version for the detail."""
    client = redis_client.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
        version = client.info("server").get("redis_version", "?")
    except redis_client.RedisError as exc:
        raise StackError(f"no PING answer from {url}: {exc}", service=NAME) from exc
    finally:
        client.close()
    return f"PING ok, redis {version}"


SPEC = ServiceSpec(
    name=NAME,
    title="Redis",
    ports=(PORT,),
    marker="redis-server",
    prepare=prepare,
    probe=probe,
    ready_timeout=20.0,
    stop_timeout=10.0,
    reuse_external=True,
)
