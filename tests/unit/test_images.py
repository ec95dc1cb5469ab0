"""Image source and safe decode: every bad image becomes a ProcessingError with a reason, fast and
bounded; URL fetching refuses internal addresses (only 127.0.0.1 is ever contacted).
"""

from __future__ import annotations

import io
import ipaddress
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from processors.images import (
    ImageLimits,
    decode_image,
    fetch_image_url,
    is_public_address,
    load_image_bytes,
)
from streams.blobs import BlobStore
from streams.campaigns.strategies import png_with_size
from streams.errors import ProcessingError
from streams.events import PinCreated
from streams.settings import Settings

LIMITS = ImageLimits()


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def reason_of(data: bytes, limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(ProcessingError) as caught:
        decode_image(data, limits)
    assert caught.value.stage == "embed"
    return caught.value.reason


JPEG = encode(Image.new("RGB", (320, 200), (200, 30, 30)), "JPEG", quality=90)


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty_image"),
    (b"just some text, certainly no picture\n" * 10, "not_an_image"),
    (JPEG[: len(JPEG) // 2], "corrupt_image"),
    (JPEG[:30], "corrupt_image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt_image"),
    (encode(Image.new("RGB", (8, 8)), "TIFF"), "unsupported_format"),
    (png_with_size(30_000, 30_000), "too_many_pixels"),
    (png_with_size(10_000, 12_000), "too_many_pixels"),  # between Pillow's warning and error
    (png_with_size(6_000, 5_000), "too_many_pixels"),  # under Pillow's limits, over ours
])
def test_bad_images_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow warning may escape either
        assert reason_of(data) == reason


def test_oversized_payload_is_refused_before_parsing() -> None:
    assert reason_of(JPEG, ImageLimits(max_bytes=len(JPEG) - 1)) == "image_too_large"


def test_decompression_bomb_is_refused_fast_and_without_allocating() -> None:
    # A fresh interpreter: its peak RSS tells what the refusal cost, undisturbed by other tests.
    script = (
        "import resource, time\n"
        "from processors.images import ImageLimits, decode_image\n"
        "from streams.errors import ProcessingError\n"
        "from tests.unit.test_images import png_with_size\n"
        "data = png_with_size(30_000, 30_000)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "start = time.perf_counter()\n"
        "try:\n"
        "    decode_image(data, ImageLimits())\n"
        "except ProcessingError as exc:\n"
        "    assert exc.reason == 'too_many_pixels', exc.reason\n"
        "elapsed = time.perf_counter() - start\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "print(elapsed, grown)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[2])
    elapsed, grown_kib = done.stdout.split()
    assert float(elapsed) < 1.0
    assert int(grown_kib) < 100 * 1024


def test_mutated_images_never_raise_anything_but_processing_errors() -> None:
    rng = np.random.default_rng(7)
    seeds = [JPEG, encode(Image.new("RGB", (64, 48), (1, 2, 3)), "PNG"),
             encode(Image.new("RGB", (64, 48), (1, 2, 3)), "GIF"),
             encode(Image.new("RGB", (64, 48), (1, 2, 3)), "WEBP")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(300):
            data = bytearray(seeds[int(rng.integers(len(seeds)))])
            for _ in range(int(rng.integers(1, 8))):
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
            cut = int(rng.integers(1, len(data) + 1))
            try:
                image = decode_image(bytes(data[:cut]), LIMITS)
            except ProcessingError:
                continue
            assert image.mode == "RGB"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_allowed_formats_decode_to_rgb(fmt: str) -> None:
    image = decode_image(encode(Image.new("RGB", (30, 20), (10, 200, 30)), fmt), LIMITS)
    assert image.mode == "RGB" and image.size == (30, 20)


def test_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    image = decode_image(buffer.getvalue(), LIMITS)
    assert image.mode == "RGB" and image.getpixel((8, 8)) == (255, 0, 0)


def test_transparent_png_is_composited_on_white() -> None:
    image = decode_image(encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG"), LIMITS)
    assert image.getpixel((4, 4)) == (255, 255, 255)


def test_sixteen_bit_greyscale_png_is_scaled_not_clipped() -> None:
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (8, 1))
    image = decode_image(encode(Image.fromarray(ramp), "PNG"), LIMITS)
    right = image.getpixel((63, 0))
    assert image.getpixel((0, 0)) == (0, 0, 0)
    assert isinstance(right, tuple) and right[0] >= 250


def test_exif_orientation_is_applied() -> None:
    # Stored 40x20, left half red; orientation 6 = "rotate 90 degrees clockwise to display".
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    image = decode_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes()), LIMITS)
    assert image.size == (20, 40)
    top = image.getpixel((10, 5))
    bottom = image.getpixel((10, 35))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 200 > bottom[0]  # the stored left side is now on top


def test_large_jpeg_is_decoded_at_a_reduced_scale_when_asked() -> None:
    big = encode(Image.new("RGB", (2400, 1600), (90, 90, 90)), "JPEG")
    assert decode_image(big, LIMITS).size == (2400, 1600)
    reduced = decode_image(big, LIMITS, min_side=256)
    assert min(reduced.size) >= 256 and reduced.size[0] < 2400


# --- image source -------------------------------------------------------------------------


def pin(**image: object) -> PinCreated:
    return PinCreated(pin_id="p1", user_id="u1", board_id="b1", title="t", description="",
                      **image)  # type: ignore[arg-type]


def test_inline_blob_and_missing_sources(tmp_path: Path) -> None:
    settings = Settings(max_inline_image_bytes=2048, image_max_bytes=4096)
    store = BlobStore(tmp_path)
    assert load_image_bytes(pin(image_bytes=b"x" * 2048), store, settings) == b"x" * 2048
    key = store.put(b"y" * 100)
    assert load_image_bytes(pin(image_ref=key), store, settings) == b"y" * 100
    cases = {
        "image_too_large": pin(image_bytes=b"x" * 2049),
        "unknown_blob": pin(image_ref="0" * 64 + ".jpg"),
        "invalid_blob_key": pin(image_ref="../secrets.jpg"),
        "url_fetch_disabled": pin(image_url="https://example.com/a.jpg"),
        "no_image": pin(),
    }
    big = store.put(b"z" * 5000)
    cases["image_too_large "] = pin(image_ref=big)
    for reason, event in cases.items():
        with pytest.raises(ProcessingError) as caught:
            load_image_bytes(event, store, settings)
        assert caught.value.reason == reason.strip(), reason


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/a.jpg", "http://127.0.0.1:9092/a.jpg", "https://10.1.2.3/a.jpg",
    "http://192.168.0.10/a.jpg", "http://172.16.5.4/a.jpg", "http://169.254.169.254/latest/",
    "http://[::1]/a.jpg", "http://[fe80::1]/a.jpg", "http://[::ffff:127.0.0.1]/a.jpg",
    "http://[fd00::1]/a.jpg", "http://0.0.0.0/a.jpg", "http://224.0.0.1/a.jpg",
    "http://100.64.0.1/a.jpg", "http://localhost/a.jpg", "http://localhost:8080/a.jpg",
    "file:///etc/passwd", "ftp://example.com/a.jpg", "http://user:pw@example.com/a.jpg",
])
def test_url_to_internal_or_odd_targets_is_refused(url: str, tmp_path: Path) -> None:
    settings = Settings(image_url_fetch_enabled=True)
    with pytest.raises(ProcessingError) as caught:
        load_image_bytes(pin(image_url=url), BlobStore(tmp_path), settings)
    assert caught.value.reason == "url_refused", caught.value


def test_public_address_policy() -> None:
    public = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"]
    internal = ["127.0.0.1", "10.0.0.1", "169.254.1.1", "::1", "fc00::1", "::ffff:10.0.0.1",
                "2002:7f00:1::1", "240.0.0.1", "255.255.255.255", "::"]
    assert all(is_public_address(ipaddress.ip_address(a)) for a in public)
    assert not any(is_public_address(ipaddress.ip_address(a)) for a in internal)


# A local server stands in for "the internet": the tests allow exactly 127.0.0.1 and nothing else.
ONLY_LOCAL = {ipaddress.ip_address("127.0.0.1")}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        port = self.server.server_port  # type: ignore[attr-defined]
        routes = {
            "/ok": (200, {"Content-Type": "image/jpeg"}, JPEG),
            "/big": (200, {}, b"b" * 5000),
            "/missing": (404, {}, b"no"),
            "/to-other-loopback": (302, {"Location": f"http://127.0.0.2:{port}/ok"}, b""),
            "/to-ipv6-loopback": (302, {"Location": f"http://[::1]:{port}/ok"}, b""),
            "/to-ok": (302, {"Location": "/ok"}, b""),
            "/loop": (302, {"Location": "/loop"}, b""),
        }
        if self.path == "/chunked-big":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(10):
                self.wfile.write(b"3e8\r\n" + b"c" * 1000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"s")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:  # the client gave up, as it should
                pass
            return
        status, headers, body = routes[self.path]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def fetch(url: str, max_bytes: int = 4096, timeout_s: float = 2.0) -> bytes:
    return fetch_image_url(url, max_bytes=max_bytes, timeout_s=timeout_s,
                           allow=lambda address: address in ONLY_LOCAL)


def test_fetch_follows_a_vetted_redirect(server: str) -> None:
    assert fetch(f"{server}/ok", max_bytes=len(JPEG)) == JPEG
    assert fetch(f"{server}/to-ok", max_bytes=len(JPEG)) == JPEG


@pytest.mark.parametrize(("path", "reason"), [
    ("/big", "image_too_large"),
    ("/chunked-big", "image_too_large"),
    ("/missing", "url_fetch_failed"),
    ("/to-other-loopback", "url_refused"),
    ("/to-ipv6-loopback", "url_refused"),
    ("/loop", "url_refused"),
    ("/slow", "url_timeout"),
])
def test_fetch_limits(server: str, path: str, reason: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ProcessingError) as caught:
        fetch(f"{server}{path}", timeout_s=0.5)
    assert caught.value.reason == reason, caught.value
    assert time.perf_counter() - started < 2.0
