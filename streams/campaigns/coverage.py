"""Coverage-guided fuzzing (atheris, libFuzzer) of the byte-reading targets of the bad-input
campaign: the codec, the image loader, the JSONL reader and the dead-letter routing. Run one
target per process: `python -m streams.campaigns.coverage TARGET -max_total_time=S` (what
`pinstream fuzz --engine atheris` does). A crash is an uncaught exception: libFuzzer stops and
writes the input to `crash-*` in the working directory."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BYTE_TARGETS = ("codec", "images", "jsonl", "routing")


def _ignore(outcome: str) -> None:
    """An outcome (accepted or rejected with a reason) is fine; only exceptions are crashes."""


def _harness(name: str) -> Callable[[bytes], None]:
    from processors.images import ImageLimits
    from streams.campaigns.fuzz import Codecs, Crash, image_target, jsonl_target, routing_target
    from streams.deadletter import RawRecord
    from streams.settings import load_settings

    settings = load_settings(metrics_port=0)
    codecs = Codecs()
    if name == "codec":
        return lambda data: _ignore(codecs.both(data))
    if name == "images":
        check = image_target(ImageLimits.from_settings(settings)).check
        return lambda data: _ignore(check(data))
    if name == "jsonl":
        lines = jsonl_target(settings).check

        def read(data: bytes) -> None:
            text = data.decode("utf-8", errors="replace").replace("\r", "")
            lines(text.split("\n"))

        return read
    if name == "routing":
        route = routing_target(settings, codecs).check
        return lambda data: _ignore(route(RawRecord("t", 0, 0, None, data, (), None)))
    raise Crash(f"no target {name!r}; one of {', '.join(BYTE_TARGETS)}")


@dataclass(frozen=True, slots=True)
class CoverageRun:
    target: str
    runs: int
    crashed: bool
    coverage: int  # libFuzzer's covered edges at the end
    crash_files: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"target": self.target, "runs": self.runs, "crashed": self.crashed,
                "coverage": self.coverage, "crash_files": list(self.crash_files)}


def run_coverage(seconds: float, progress: Callable[[str], None],
                 crash_dir: Path) -> list[CoverageRun]:
    """Each byte target in its own atheris process for an equal share of `seconds`; crashing
    inputs are kept in `crash_dir`."""
    share = max(1, int(seconds / len(BYTE_TARGETS)))
    crash_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for target in BYTE_TARGETS:
        before = set(crash_dir.iterdir())
        done = subprocess.run(
            [sys.executable, "-m", "streams.campaigns.coverage", target, f"-max_total_time={share}",
             "-timeout=10", "-rss_limit_mb=4096",
             f"-artifact_prefix={crash_dir}/{target}-", "-print_final_stats=0"],
            capture_output=True, text=True, timeout=share + 300)
        log = done.stdout + done.stderr
        runs = re.findall(r"Done (\d+) runs", log)
        cover = re.findall(r"cov: (\d+)", log)
        crashes = tuple(sorted(p.name for p in set(crash_dir.iterdir()) - before))
        result = CoverageRun(target, int(runs[-1]) if runs else 0, done.returncode != 0,
                             int(cover[-1]) if cover else 0, crashes)
        progress(f"atheris {target}: {result.runs} runs, coverage {result.coverage}, "
                 f"{'CRASHED' if result.crashed else 'no crash'}")
        results.append(result)
    return results


def main(argv: list[str]) -> None:
    import atheris

    if len(argv) < 2 or argv[1] not in BYTE_TARGETS:
        sys.exit(f"usage: python -m streams.campaigns.coverage {{{','.join(BYTE_TARGETS)}}} "
                 "[libFuzzer flags]")
    # Our code and the Python parts of what it reads with (Pillow's plugins); fastavro is compiled.
    with atheris.instrument_imports(include=["streams", "processors", "sinks", "PIL"]):
        harness = _harness(argv[1])
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, line_buffering=True)
    atheris.Setup([argv[0], *argv[2:]], harness)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
