"""The local blob store: content addressing, key validation, no path traversal, bounded reads."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from streams.blobs import BlobError, BlobStore, is_blob_key


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")  # the folder is created on first put
    key = store.put(b"image bytes")
    assert key == hashlib.sha256(b"image bytes").hexdigest() + ".jpg"
    assert store.put(b"image bytes") == key
    assert store.get(key) == b"image bytes"
    assert store.exists(key)
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == [key]  # no temporary left behind


def test_suffix_is_validated(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    assert store.put(b"x", suffix="").endswith(hashlib.sha256(b"x").hexdigest())
    assert store.put(b"x", suffix=".png").endswith(".png")
    for bad in ("/x", "png", "./../a", ".a/b"):
        with pytest.raises(ValueError):
            store.put(b"x", suffix=bad)


@pytest.mark.parametrize("key", ["../etc/passwd", "..", ".", ".hidden", "a/b", "/abs", "a\\b",
                                 "", "a b", "x" * 256, "caf\u00e9.jpg", "a\x00b"])
def test_invalid_keys_are_refused_before_touching_the_disk(tmp_path: Path, key: str) -> None:
    store = BlobStore(tmp_path)
    assert not is_blob_key(key)
    assert not store.exists(key)
    with pytest.raises(BlobError) as caught:
        store.get(key)
    assert caught.value.reason == "invalid_blob_key"


def test_unknown_key(tmp_path: Path) -> None:
    with pytest.raises(BlobError) as caught:
        BlobStore(tmp_path).get("0" * 64 + ".jpg")
    assert caught.value.reason == "unknown_blob"


def test_symlink_in_the_folder_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not for you")
    root = tmp_path / "blobs"
    root.mkdir()
    os.symlink(secret, root / "link.jpg")
    with pytest.raises(BlobError) as caught:
        BlobStore(root).get("link.jpg")
    assert caught.value.reason == "unknown_blob"


def test_size_limit_on_get(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    key = store.put(b"a" * 1000)
    assert store.get(key, max_bytes=1000) == b"a" * 1000
    with pytest.raises(BlobError) as caught:
        store.get(key, max_bytes=999)
    assert caught.value.reason == "blob_too_large"


def test_directory_under_a_key_is_not_a_blob(tmp_path: Path) -> None:
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(BlobError) as caught:
        BlobStore(tmp_path).get("dir.jpg")
    assert caught.value.reason == "unknown_blob"
