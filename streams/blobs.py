"""The local blob store: pin images in one folder, named by the sha256 of their bytes.

Keys are plain file names (`[A-Za-z0-9][A-Za-z0-9._-]*`), so a key can never leave the folder;
reads are bounded so a planted huge file cannot exhaust memory.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from streams.errors import PinstreamError

# The same rule the JSONL reader applies to `image_ref`: a first character that is not a dot
# rules out "." / ".." and our own hidden temporary files.
BLOB_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_SUFFIX = re.compile(r"^(\.[A-Za-z0-9]{1,16})?$")


class BlobError(PinstreamError):
    """A blob key is invalid, unknown or too large; ``reason`` is a short machine-readable code:
    ``invalid_blob_key``, ``unknown_blob`` or ``blob_too_large``.
    """

    def __init__(self, message: str, *, key: str, reason: str) -> None:
        super().__init__(message)
        self.key = key
        self.reason = reason


def is_blob_key(key: str) -> bool:
    """True when `key` is a valid blob key (a plain file name, no path)."""
    return bool(BLOB_KEY.match(key))


@dataclass(frozen=True)
class BlobStore:
    """A folder of blobs named `<sha256 hex><suffix>`: equal content is stored once."""

    root: Path

    def put(self, data: bytes, suffix: str = ".jpg") -> str:
        """Store `data` (atomically: never a half file under its key) and return its key."""
        if not _SUFFIX.match(suffix):
            raise ValueError(f"blob suffix {suffix!r} must be empty or a dot and 1-16 letters/digits")
        key = hashlib.sha256(data).hexdigest() + suffix
        target = self.root / key
        if target.exists():
            return key
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".blob.", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """The bytes stored under `key`; BlobError when the key is invalid, unknown, or the blob
        is larger than `max_bytes`.
        """
        path = self._path(key)
        try:
            # O_NOFOLLOW: a symlink planted in the folder must not lead reads elsewhere.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError as exc:
            raise BlobError(f"no blob {key!r}", key=key, reason="unknown_blob") from exc
        except OSError as exc:  # ELOOP (a symlink), EISDIR, EACCES: not a blob we serve
            raise BlobError(f"blob {key!r} cannot be read: {exc.strerror}", key=key,
                            reason="unknown_blob") from exc
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)
            raise BlobError(f"blob {key!r} is not a regular file", key=key, reason="unknown_blob")
        with os.fdopen(fd, "rb") as handle:
            size = status.st_size
            if max_bytes is not None and size > max_bytes:
                raise BlobError(f"blob {key!r} has {size} bytes, over the limit of {max_bytes}",
                                key=key, reason="blob_too_large")
            # Read at most one byte past the limit: a file that grew since fstat is caught too.
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
        if max_bytes is not None and len(data) > max_bytes:
            raise BlobError(f"blob {key!r} is over the limit of {max_bytes} bytes", key=key,
                            reason="blob_too_large")
        return data

    def exists(self, key: str) -> bool:
        """True when a blob is stored under `key` (an invalid key is never stored)."""
        return is_blob_key(key) and (self.root / key).is_file()

    def _path(self, key: str) -> Path:
        if not is_blob_key(key):
            raise BlobError(f"{key[:80]!r} is not a blob key ([A-Za-z0-9._-], no paths)",
                            key=key, reason="invalid_blob_key")
        return self.root / key

