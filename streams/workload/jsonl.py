"""Writing the workload: JSON lines, a content-addressed image folder, the ground-truth file.

Files are written under a temporary name and renamed into place: a failed run leaves no half file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

# The image folder is the core blob store; re-exported for the generator.
from streams.blobs import BlobStore as BlobStore
from streams.workload.population import World


def dumps_line(record: Mapping[str, Any]) -> str:
    """One compact JSON line (field order kept), newline-terminated."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"


@contextmanager
def atomic_text(path: Path) -> Iterator[TextIO]:
    """A text file that appears at `path` only once the block completes without error."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def truth_document(world: World) -> dict[str, Any]:
    """The planted structure that evaluation compares against (never part of the events)."""
    return {
        "seed": world.seed,
        "clusters": [
            {
                "cluster": c.cluster_id,
                "name": c.name,
                "theme": {
                    "kind": c.theme.kind,
                    "source": c.theme.source,
                    "palette": [list(rgb) for rgb in c.theme.palette],
                    "tint": c.theme.tint,
                },
                "pins": len(world.cluster_pins[c.cluster_id]),
            }
            for c in world.clusters
        ],
        "pins": {
            p.pin_id: {"cluster": p.cluster_id, "popularity_rank": p.popularity_rank}
            for p in world.pins
        },
        "users": {
            u.user_id: {
                "clusters": [i.cluster_id for i in u.interests],
                "weights": [i.weight for i in u.interests],
                "boards": list(u.board_ids),
                "activity": u.activity,
            }
            for u in world.users
        },
        "boards": {
            b.board_id: {"user_id": b.user_id, "cluster": b.cluster_id, "title": b.title}
            for b in world.boards
        },
    }


def write_truth(world: World, path: Path) -> None:
    with atomic_text(path) as handle:
        json.dump(truth_document(world), handle, separators=(",", ":"))
        handle.write("\n")
