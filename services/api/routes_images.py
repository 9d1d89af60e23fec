"""Image routes: upload, fetch by URL (both through the image store service), read by hash."""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp import web

import bus
from identity.accounts import Principal
from schemas.api import ImageFromUrlRequest, ImageInfo
from schemas.image import ImageStored, is_sha256
from schemas.queries import FetchImage
from schemas.streams import IMAGE, IMAGE_SERVICE, IMAGES_OBJECTS, MEDIA_TYPE_HEADER, UPLOADER_HEADER
from schemas.subjects import image_stored, service_endpoint
from services.api.auth import principal_of
from services.api.errors import ApiError, json_response, unavailable
from services.api.inputs import read_body
from services.api.keys import BUS, SETTINGS

# Normalising a 24-megapixel image takes a second or two on a small CPU; a URL fetch adds its own 10 s bound.
IMAGE_SERVICE_TIMEOUT = 30.0
# Room the upload's headers need within one NATS message.
HEADER_ROOM = 64 * 1024
# An image's bytes never change (its name is their hash): caches may keep it, privately, for a year.
IMMUTABLE = "private, max-age=31536000, immutable"

_stored_decoder = msgspec.json.Decoder(ImageStored)

# The image store's refusal codes and the HTTP status each becomes.
_REFUSALS = {
    "too_large": 413,
    "too_many_pixels": 413,
    "bad_format": 415,
    "type_mismatch": 415,
    "corrupt": 422,
    "bad_url": 422,
    "unresolvable": 422,
    "forbidden_address": 422,
    "http_error": 422,
    "too_many_redirects": 422,
    "fetch_timeout": 422,
    "fetch_failed": 422,
    "bad_request": 400,
}


async def _call_store(request: web.Request, endpoint: str, data: bytes, headers: dict[str, str]) -> ImageInfo:
    subject = service_endpoint(IMAGE_SERVICE, endpoint)
    try:
        return await bus.call_raw(
            request.app[BUS].nc, subject, data, ImageInfo, headers=headers, timeout=IMAGE_SERVICE_TIMEOUT
        )
    except bus.ServiceError as exc:
        if exc.code in _REFUSALS:
            raise ApiError(_REFUSALS[exc.code], exc.code, exc.message) from None
        if exc.code in ("unavailable", "timeout"):
            raise unavailable(f"the image store is not answering ({exc.code})", retry_after=2) from None
        raise ApiError(502, "image_store_error", f"the image store failed: {exc.message}") from None


async def _read_upload(request: web.Request, limit: int, seconds: float) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` (never read whole),
    and with 408 when it has not all arrived within `seconds`."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too_large", f"the body is {request.content_length} bytes; the limit is {limit}")
    body = bytearray()
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.content.iter_chunked(64 * 1024):
                body.extend(chunk)
                if len(body) > limit:
                    raise ApiError(413, "too_large", f"the body is over the limit of {limit} bytes")
    except TimeoutError:
        raise ApiError(408, "timeout", f"the body did not arrive within {seconds:g} s") from None
    return bytes(body)


def _declared_type(request: web.Request) -> str:
    content_type = request.content_type  # aiohttp: application/octet-stream when absent
    if content_type == "application/octet-stream":
        return ""  # unknown: the bytes decide
    if not content_type.startswith("image/"):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the image bytes as the body with their Content-Type (image/png, image/jpeg, "
            "image/webp, image/gif); to have the server fetch a URL, use POST /v1/images/from-url",
        )
    return content_type


async def upload_image(request: web.Request) -> web.StreamResponse:
    """Store the uploaded image once by the hash of its normalised bytes (201)."""
    declared = _declared_type(request)
    settings = request.app[SETTINGS]
    data = await _read_upload(request, image_limit(request), settings.upload_seconds)
    if not data:
        raise ApiError(400, "empty_body", "the body is empty: send the image bytes")
    info = await store_image(request, data, declared)
    return json_response(info, status=201, headers={"Location": info.url})


def image_limit(request: web.Request) -> int:
    """The largest image the API takes: the setting, within one NATS message."""
    return min(request.app[SETTINGS].max_image_bytes, request.app[BUS].nc.max_payload - HEADER_ROOM)


async def store_image(request: web.Request, data: bytes, declared: str) -> ImageInfo:
    """Have the image store normalise and keep these bytes for the caller ("" declared: the bytes decide)."""
    headers = {UPLOADER_HEADER: principal_of(request).user_id, MEDIA_TYPE_HEADER: declared}
    return await _call_store(request, "upload", data, headers)


async def fetch_image(request: web.Request, url: str) -> ImageInfo:
    """Have the image store fetch a public image URL (SSRF rules apply) and keep it for the caller."""
    question = msgspec.json.encode(FetchImage(url=url, uploaded_by=principal_of(request).user_id))
    return await _call_store(request, "fetch", question, {})


async def image_from_url(request: web.Request) -> web.StreamResponse:
    """Have the image store fetch a public image URL and store it like an upload (201)."""
    body = await read_body(request, ImageFromUrlRequest)
    info = await fetch_image(request, body.url)
    return json_response(info, status=201, headers={"Location": info.url})


async def visible_image(js: bus.JetStream, principal: Principal, sha256: str) -> ImageStored | None:
    """The caller's stored event of this image (admins: anyone's), read from the log; None if none."""
    uploader = "*" if principal.is_admin else principal.user_id
    stored = await bus.last_msg(js, IMAGE.name, image_stored(sha256, uploader))
    if stored is None:
        return None
    try:
        return _stored_decoder.decode(stored.data)
    except msgspec.DecodeError:
        return None


async def unseen_images(js: bus.JetStream, principal: Principal, hashes: list[str]) -> list[str]:
    """Those of `hashes` the caller may not attach (they did not store them)."""
    mine = await asyncio.gather(
        *(bus.last_msg(js, IMAGE.name, image_stored(h, principal.user_id)) for h in hashes)
    )
    return [h for h, stored in zip(hashes, mine, strict=True) if stored is None]


def _not_found(sha256: str) -> ApiError:
    return ApiError(404, "not_found", f"no image {sha256}")


async def get_image(request: web.Request) -> web.StreamResponse:
    """The image's bytes for a caller who may see it; 404 for everyone else, existing or not."""
    sha256 = request.match_info["sha256"]
    if not is_sha256(sha256):
        raise ApiError(400, "bad_id", "sha256 must be 64 lowercase hex digits")
    js = request.app[BUS].js
    image = await visible_image(js, principal_of(request), sha256)
    if image is None:
        raise _not_found(sha256)
    etag = f'"{sha256}"'
    headers = {
        "ETag": etag,
        "Cache-Control": IMMUTABLE,
        "X-Content-Type-Options": "nosniff",
        # Opened directly, the bytes can run nothing and other sites cannot embed them.
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    data = await bus.get_object(js, IMAGES_OBJECTS.bucket, sha256)
    if data is None:  # purged after the check
        raise _not_found(sha256)
    return web.Response(body=data, headers={**headers, "Content-Type": image.media_type})
