"""Pin images in: the image source of a PinCreated event (inline, blob or URL) and a safe decode.

Every failure is a ProcessingError(stage="embed") with a short `reason`; no Pillow, socket or
httpx error escapes, so a bad image becomes a dead-letter record, never a crashed worker.
"""

from __future__ import annotations

import io
import ipaddress
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from struct import error as struct_error  # what several Pillow plugins raise on short headers
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from streams.blobs import BlobError, BlobStore
from streams.errors import ProcessingError
from streams.events import PinCreated
from streams.settings import Settings

STAGE = "embed"
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
MAX_REDIRECTS = 3
# Signatures of the allowed formats: such bytes that Pillow cannot parse are corrupt, not foreign.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"RIFF", b"BM")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[IPAddress]]
AddressPolicy = Callable[[IPAddress], bool]

# warnings.catch_warnings swaps process-wide state: serialise our (microsecond) header parses
# so two decoding threads never restore each other's filters.
_WARNINGS_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """What decode_image accepts: encoded size, pixel count (from the header) and formats."""

    max_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 25_000_000
    formats: tuple[str, ...] = ALLOWED_FORMATS

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        return cls(max_bytes=settings.image_max_bytes, max_pixels=settings.image_max_pixels)


def _fail(reason: str, message: str) -> ProcessingError:
    return ProcessingError(message, stage=STAGE, reason=reason)


# --- decode -------------------------------------------------------------------------------


def decode_image(data: bytes, limits: ImageLimits, *, min_side: int | None = None) -> Image.Image:
    """Decode `data` into an upright RGB image under `limits`.

    The pixel count is checked from the header before any pixel is decoded. With `min_side`, a
    JPEG is decoded at the smallest DCT scale whose shorter side is still >= `min_side` (phone
    photos decode several times faster; the caller resizes to less than that anyway).
    """
    if not data:
        raise _fail("empty_image", "the image has zero bytes")
    if len(data) > limits.max_bytes:
        raise _fail("image_too_large", f"the image has {len(data)} bytes, over {limits.max_bytes}")
    image = _open_header(data, limits)
    width, height = image.size
    if width <= 0 or height <= 0:
        raise _fail("corrupt_image", f"the image header says {width}x{height} pixels")
    if width * height > limits.max_pixels:
        raise _fail("too_many_pixels",
                    f"{width}x{height} = {width * height} pixels, over {limits.max_pixels}")
    try:
        if image.format == "JPEG" and min_side is not None and min(width, height) > 2 * min_side:
            scale = min_side / min(width, height)
            image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
        image.load()  # GIF: the first frame only, as Image.open leaves it there
        upright = _upright(image)
        return _to_rgb(upright)
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct_error) as exc:
        raise _fail("corrupt_image", f"{image.format} image cannot be decoded: {exc}") from exc
    except Image.DecompressionBombError as exc:  # pragma: no cover - sizes were checked above
        raise _fail("too_many_pixels", str(exc)) from exc
    except MemoryError as exc:
        raise _fail("too_many_pixels", "out of memory while decoding") from exc


def _open_header(data: bytes, limits: ImageLimits) -> ImageFile.ImageFile:
    """Parse only the header, restricted to the allowed formats; tell a foreign format apart
    from bytes that are no image at all.
    """
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            # Pillow warns between its own limit and twice that; we refuse such sizes anyway,
            # so the warning becomes the error we translate below instead of noise on stderr.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                return Image.open(io.BytesIO(data), formats=list(limits.formats))
            except UnidentifiedImageError:
                foreign = _identify_any(data)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _fail("too_many_pixels", str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct_error) as exc:
        raise _fail("corrupt_image", f"the image header cannot be parsed: {exc}") from exc
    if data.startswith(_MAGIC):
        raise _fail("corrupt_image", "the header of an allowed format is broken or cut short")
    if foreign is not None:
        raise _fail("unsupported_format", f"{foreign} images are not accepted "
                    f"(allowed: {', '.join(limits.formats)})")
    raise _fail("not_an_image", "the bytes are not an image in any known format")


def _identify_any(data: bytes) -> str | None:
    """The format name when any Pillow plugin recognises the header (header only, no decode)."""
    try:
        with Image.open(io.BytesIO(data)) as other:
            return other.format or "unknown"
    except Exception:  # any failure here just means "not an image we know"
        return None


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError, struct_error):
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High-bit-depth greyscale: Pillow's direct RGB conversion clips; scale to 8 bits first.
        values = np.asarray(image.convert("F"), dtype=np.float32)
        lo, span = float(values.min()), float(np.ptp(values)) or 1.0
        image = Image.fromarray(((values - lo) * (255.0 / span)).astype(np.uint8), mode="L")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if has_alpha:
        # Transparent pins are shown on white: composite there, not on black (convert's default).
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


# --- image source -------------------------------------------------------------------------


def load_image_bytes(event: PinCreated, blobs: BlobStore, settings: Settings,
                     *, client: httpx.Client | None = None) -> bytes:
    """The encoded image of a pin: inline bytes, a blob, or (when enabled) its URL. Blocking:
    call it from a worker thread.
    """
    if event.image_bytes is not None:
        if len(event.image_bytes) > settings.max_inline_image_bytes:
            raise _fail("image_too_large", f"inline image has {len(event.image_bytes)} bytes, "
                        f"over {settings.max_inline_image_bytes}")
        return event.image_bytes
    if event.image_ref is not None:
        try:
            return blobs.get(event.image_ref, max_bytes=settings.image_max_bytes)
        except BlobError as exc:
            reason = "image_too_large" if exc.reason == "blob_too_large" else exc.reason
            raise _fail(reason, str(exc)) from exc
    if event.image_url is not None:
        if not settings.image_url_fetch_enabled:
            raise _fail("url_fetch_disabled", "the pin has only an image_url and URL fetching "
                        "is disabled (image_url_fetch_enabled)")
        return fetch_image_url(event.image_url, max_bytes=settings.image_max_bytes,
                               timeout_s=settings.image_url_timeout_s, client=client)
    raise _fail("no_image", "the pin has no image_bytes, image_ref or image_url")


# --- URL fetching -------------------------------------------------------------------------


def is_public_address(address: IPAddress) -> bool:
    """True for globally routable unicast addresses; loopback, private, link-local, multicast,
    reserved, unspecified, shared (CGNAT) and IPv4-mapped forms of those are refused.
    """
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return is_public_address(mapped)
        if address.teredo is not None:
            return False
    return address.is_global and not address.is_multicast and not address.is_reserved


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (literal addresses resolve to themselves)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def fetch_image_url(url: str, *, max_bytes: int, timeout_s: float,
                    client: httpx.Client | None = None, resolver: Resolver = resolve_host,
                    allow: AddressPolicy = is_public_address) -> bytes:
    """GET an image over http(s) with a byte cap and a total deadline, connecting only to
    addresses that `allow` accepts (checked after DNS resolution and on every redirect).
    """
    deadline = time.monotonic() + timeout_s
    own = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False,
                                  trust_env=False)  # an env proxy would bypass the address check
    try:
        for _ in range(MAX_REDIRECTS + 1):
            target, host_header, sni = _pinned_target(url, resolver, allow)
            extensions: dict[str, Any] = {"sni_hostname": sni} if sni else {}
            request = http.build_request("GET", target, headers={"Host": host_header},
                                         extensions=extensions)
            response = http.send(request, stream=True)
            try:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise _fail("url_fetch_failed", f"GET {_short(url)}: HTTP {response.status_code}")
                return _read_capped(response, url, max_bytes, deadline)
            finally:
                response.close()
        raise _fail("url_refused", f"GET {_short(url)}: more than {MAX_REDIRECTS} redirects")
    except httpx.TimeoutException as exc:
        raise _fail("url_timeout", f"GET {_short(url)}: timed out after {timeout_s} s") from exc
    except httpx.HTTPError as exc:
        raise _fail("url_fetch_failed", f"GET {_short(url)}: {exc.__class__.__name__}: {exc}") from exc
    finally:
        if own:
            http.close()


def _pinned_target(url: str, resolver: Resolver, allow: AddressPolicy) -> tuple[str, str, str | None]:
    """Check `url` and pin it to a vetted address: (URL with the IP, Host header, TLS server name).

    Connecting to the address we checked, rather than the name, defeats DNS rebinding.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise _fail("url_refused", f"{_short(url)}: only http and https URLs are fetched")
    host = parts.hostname
    if not host or parts.username or parts.password:
        raise _fail("url_refused", f"{_short(url)}: no host, or credentials in the URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise _fail("url_refused", f"{_short(url)}: bad port") from exc
    try:
        addresses = resolver(host, port)
    except (OSError, ValueError, UnicodeError) as exc:
        raise _fail("url_fetch_failed", f"{host}: cannot be resolved: {exc}") from exc
    refused = [a for a in addresses if not allow(a)]
    if not addresses or refused:
        # Refuse when any answer is internal: a mixed answer is a rebinding attempt.
        raise _fail("url_refused", f"{host} resolves to a non-public address "
                    f"({', '.join(str(a) for a in refused) or 'none'})")
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{port}"
    target = parts._replace(netloc=netloc).geturl()
    default_port = (parts.scheme == "https" and port == 443) or (parts.scheme == "http" and port == 80)
    named = f"[{host}]" if ":" in host else host  # urlsplit strips an IPv6 literal's brackets
    host_header = named if default_port else f"{named}:{port}"
    sni = host if parts.scheme == "https" and not _is_ip_literal(host) else None
    return target, host_header, sni


def _read_capped(response: httpx.Response, url: str, max_bytes: int, deadline: float) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _fail("image_too_large", f"GET {_short(url)}: {declared} bytes, over {max_bytes}")
    parts: list[bytes] = []
    received = 0
    for chunk in response.iter_bytes():
        received += len(chunk)
        if received > max_bytes:
            raise _fail("image_too_large", f"GET {_short(url)}: over {max_bytes} bytes")
        if time.monotonic() > deadline:  # a server dripping bytes must not hold us forever
            raise _fail("url_timeout", f"GET {_short(url)}: body not complete before the deadline")
        parts.append(chunk)
    return b"".join(parts)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _short(url: str) -> str:
    return url if len(url) <= 120 else url[:117] + "..."
