"""The worker's HTTP views: `POST /search/visual` (an image upload) and `GET /healthz`.

Uploads are validated before any work: type (an image/* or octet-stream body, or a multipart
field `image`), size (streamed with a cap, never read whole first), and query parameters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from aiohttp import BodyPartReader
from aiohttp import web as aioweb

from streams.errors import ProcessingError

MAX_K = 1000
_CHUNK = 64 * 1024


class UploadError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


async def read_capped(next_chunk: Callable[[int], Awaitable[bytes]], cap: int) -> bytes:
    """Read a body chunk by chunk, refusing (413) as soon as it passes `cap` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await next_chunk(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > cap:
            raise UploadError(413, "upload_too_large", f"upload larger than {cap} bytes")
        chunks.append(chunk)


async def read_image_upload(request: aioweb.Request, cap: int) -> bytes:
    content_type = request.content_type or ""
    declared = request.content_length
    if declared is not None and declared > cap:
        raise UploadError(413, "upload_too_large", f"upload of {declared} bytes over {cap}")
    if content_type.startswith("multipart/"):
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                raise UploadError(400, "missing_image", "multipart upload without an 'image' field")
            if isinstance(part, BodyPartReader) and part.name == "image":
                data = await read_capped(part.read_chunk, cap)
                break
    elif content_type.startswith("image/") or content_type == "application/octet-stream":
        data = await read_capped(request.content.read, cap)
    else:
        raise UploadError(415, "unsupported_media_type",
                          "send the image as an image/* or application/octet-stream body, or as "
                          "the 'image' field of multipart/form-data")
    if not data:
        raise UploadError(400, "empty_image", "the upload is empty")
    return data


def parse_k(raw: str | None) -> int:
    try:
        k = int(raw) if raw is not None else 20
    except ValueError:
        raise UploadError(400, "bad_parameter", f"k={raw!r} is not an integer") from None
    if not 1 <= k <= MAX_K:
        raise UploadError(400, "bad_parameter", f"k must be within 1..{MAX_K}")
    return k


def _error(status: int, reason: str, message: str) -> aioweb.Response:
    return aioweb.json_response({"error": reason, "message": message}, status=status)


def register_views(app: faust.App, current: Callable[[], Any]) -> None:
    """`current()` gives the worker runtime, or None while it starts."""
    @app.page("/search/visual")
    class VisualSearchView(faust.web.View):
        async def post(self, request: Any) -> Any:
            runtime = current()
            if runtime is None:
                return _error(503, "starting", "the worker is still starting")
            try:
                k = parse_k(request.query.get("k"))
                image = await read_image_upload(request, runtime.settings.search_max_upload_bytes)
                response = await runtime.search.search(
                    image, k=k, user_id=request.query.get("user") or None,
                    text=request.query.get("text") or None)
            except UploadError as exc:
                return _error(exc.status, exc.reason, str(exc))
            except ProcessingError as exc:
                return _error(422, exc.reason or "bad_image", str(exc))
            return aioweb.json_response(response.to_json())

    @app.page("/feed/{user}")
    class FeedView(faust.web.View):
        async def get(self, request: Any, user: str) -> Any:
            runtime = current()
            if runtime is None:
                return _error(503, "starting", "the worker is still starting")
            try:
                count = parse_k(request.query.get("count") or "200")
                offset = int(request.query.get("offset") or 0)
            except (UploadError, ValueError) as exc:
                return _error(400, "bad_parameter", str(exc))
            if offset < 0:
                return _error(400, "bad_parameter", "offset must be >= 0")
            result = await asyncio.to_thread(runtime.interactions.read_feed, user, offset=offset,
                                             count=count)
            return aioweb.json_response({
                "user_id": result.user_id, "model": result.model, "from_cache": result.from_cache,
                "fallbacks": [str(f) for f in result.fallbacks],
                "items": [{"pin_id": i.pin_id, "score": round(i.score, 6), "reason": i.reason}
                          for i in result.items],
            })

    @app.page("/healthz")
    class HealthView(faust.web.View):
        async def get(self, request: Any) -> Any:
            runtime = current()
            if runtime is None:
                return aioweb.json_response({"ready": False}, status=503)
            health = runtime.health()  # ready: the ANN index loaded, the live patch process joined
            return aioweb.json_response(health, status=200 if health["ready"] else 503)
