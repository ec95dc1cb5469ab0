"""Background processes of the local stack: pid files, start, stop, log tails and port owners.

Linux only: port owners and command lines are read from /proc.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from streams.stack.model import Launch

START_MARKER = "==== pinstream stack: starting"
LOG_ROTATE_BYTES = 20 * 1024 * 1024

# Children started by this interpreter, kept so that they are reaped (no zombies) when stopped.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class PortOwner:
    """The process listening on a TCP port, as far as /proc tells."""

    pid: int | None
    command: str

    def describe(self) -> str:
        if self.pid is None:
            return "an unknown process"
        return f"pid {self.pid} ({self.command})"


# --- pid files ------------------------------------------------------------------------------


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def write_pid(pid_file: Path, pid: int) -> None:
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = pid_file.with_suffix(".pid.tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pid_file)


def remove_pid(pid_file: Path) -> None:
    pid_file.unlink(missing_ok=True)


# --- liveness -------------------------------------------------------------------------------


def command_args(pid: int) -> list[str]:
    """The argv of `pid`; empty when the process is gone (or still inside exec)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def command_line(pid: int) -> str:
    """The command line of `pid`, space separated; empty when the process is gone."""
    return " ".join(command_args(pid))


def short_command(argv: list[str]) -> str:
    """A command line a person can read: a JVM as `java <main class> <args>`, without its flags."""
    if argv and argv[0].endswith("java"):
        for flag in ("-cp", "-classpath", "--class-path", "-jar"):
            if flag in argv[:-1]:
                rest = argv[argv.index(flag) + 2 :]
                if flag == "-jar":
                    rest = argv[argv.index(flag) :]
                return " ".join(["java", *rest])
    return " ".join(argv)


def is_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone; our own children are reaped)."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"  # the state letter comes first


def process_age_s(pid: int) -> float | None:
    """Seconds since `pid` started (from /proc), or None when it is gone or /proc cannot tell."""
    fields = _stat_fields(pid)
    try:
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError):
        return None
    if fields is None:
        return None
    # Field 22 of stat (the 20th after the name and state): start time in clock ticks since boot.
    return max(0.0, uptime_s - int(fields[19]) / os.sysconf("SC_CLK_TCK"))


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds `pid` has used so far, every thread, user and system (from /proc), or None
    when it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # Fields 14 and 15 of stat (the 12th and 13th after the name and state): utime, stime in ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the parenthesised command name (which may hold
    spaces), starting with the state letter; None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()


def owned_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in `pid_file` if that process is alive and is ours (its command line has `marker`)."""
    pid = read_pid(pid_file)
    if pid is None or not is_alive(pid):
        return None
    return pid if marker in command_line(pid) else None


# --- start and stop -------------------------------------------------------------------------


def spawn(launch: Launch, log_file: Path, pid_file: Path) -> int:
    """Start `launch` in its own session, stdout and stderr appended to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    if log_file.exists() and log_file.stat().st_size > LOG_ROTATE_BYTES:
        log_file.replace(log_file.with_suffix(".log.1"))
    env = dict(os.environ) | dict(launch.env)
    with log_file.open("ab") as log:
        stamp = datetime.now().isoformat(timespec="seconds")
        log.write(f"\n{START_MARKER} {stamp}: {' '.join(launch.argv)}\n".encode())
        log.flush()
        child = subprocess.Popen(
            launch.argv,
            cwd=launch.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[child.pid] = child
    # /proc/<pid>/cmdline reads empty until exec has finished; `owned_pid` needs it.
    deadline = time.monotonic() + 5.0
    while not command_line(child.pid) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    write_pid(pid_file, child.pid)
    return child.pid


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal the process group that `spawn` created, or the process alone if it has none."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, wait up to `timeout` seconds, then SIGKILL. Returns True if it ended by SIGTERM."""
    _signal(pid, signal.SIGTERM)
    if wait_gone(pid, timeout):
        return True
    _signal(pid, signal.SIGKILL)
    wait_gone(pid, 10.0)
    return False


# --- logs -----------------------------------------------------------------------------------


def log_tail(log_file: Path, lines: int = 40) -> str:
    """The last `lines` lines written since the most recent start marker."""
    try:
        with log_file.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    marker_at = text.rfind(START_MARKER)
    if marker_at >= 0:
        text = text[marker_at:]
    return "\n".join(text.splitlines()[-lines:])


# --- ports ----------------------------------------------------------------------------------


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(inode)
    return inodes


def port_owner(port: int) -> PortOwner | None:
    """Who listens on TCP `port` (any address), or None if nobody does."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in targets:
                    pid = int(proc.name)
                    return PortOwner(pid=pid, command=short_command(command_args(pid))[:160])
            except OSError:
                continue
    return PortOwner(pid=None, command="")
