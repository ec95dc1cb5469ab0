"""The programs the local stack needs (java, mvn, redis-server), each found or named with its fix."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import lru_cache

from streams.errors import ConfigError

JAVA_MIN_MAJOR = 17

INSTALL_HINTS: dict[str, str] = {
    "java": "install OpenJDK 17: apt-get install -y openjdk-17-jre-headless",
    "mvn": "install Maven: apt-get install -y maven",
    "redis-server": "install Redis: apt-get update && apt-get install -y redis-server",
}


def require_tool(name: str) -> str:
    """The absolute path of `name` on PATH, or ConfigError naming how to install it."""
    path = shutil.which(name)
    if path is None:
        hint = INSTALL_HINTS.get(name, f"install {name}")
        raise ConfigError(f"`{name}` is not on PATH; {hint}")
    return path


def parse_java_major(version_output: str) -> int | None:
    """The major version from `java -version` output: '17.0.15' -> 17, '1.8.0_402' -> 8."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


@lru_cache(maxsize=1)
def require_java() -> str:
    """A java of version 17 or later, or ConfigError with the fix."""
    java = require_tool("java")
    result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    major = parse_java_major(result.stderr + result.stdout)
    if major is None or major < JAVA_MIN_MAJOR:
        found = (result.stderr or result.stdout).splitlines()[:1]
        raise ConfigError(
            f"the stack needs Java {JAVA_MIN_MAJOR}+, found {found[0] if found else 'unknown'}; "
            + INSTALL_HINTS["java"]
        )
    return java
