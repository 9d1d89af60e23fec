"""Run the image store: a NATS micro service `images` that normalises, stores and fetches images.

`images.upload` takes the raw upload (its declared media type and uploader in headers) so the
bytes cross the bus once; `images.fetch` takes a URL. Both answer ImageInfo, or an error whose
code names the refusal (too_large, bad_format, forbidden_address, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import timedelta

import msgspec

import bus
from bus import Bus, ServiceError
from schemas.api import ImageInfo
from schemas.ids import is_valid_id
from schemas.image import ImageStored
from schemas.queries import FetchImage, ReleasedImages, ReleaseImages
from schemas.streams import IMAGE_SERVICE, MEDIA_TYPE_HEADER, UPLOADER_HEADER
from services.image_store.collect import collect_images
from services.image_store.errors import ImageRejected
from services.image_store.fetch import Resolve, fetch_image, system_resolve
from services.image_store.settings import ImageStoreSettings
from services.image_store.store import store_image

log = logging.getLogger(__name__)
VERSION = "0.1.0"
_fetch_decoder = msgspec.json.Decoder(FetchImage)
_release_decoder = msgspec.json.Decoder(ReleaseImages)


def image_url(sha256: str) -> str:
    """Where the API serves an image."""
    return f"/v1/images/{sha256}"


def _info(event: ImageStored, is_new: bool) -> bytes:
    info = ImageInfo(
        sha256=event.sha256,
        media_type=event.media_type,
        width=event.width,
        height=event.height,
        size=event.size,
        deduplicated=not is_new,
        url=image_url(event.sha256),
    )
    return msgspec.json.encode(info)


def _uploader(value: str | None) -> str:
    if not value or not is_valid_id(value):
        raise ServiceError("bad_request", f"{UPLOADER_HEADER} must name the uploading user")
    return value


class ImageService:
    """The endpoints of the image store, bound to one bus connection and its settings."""

    def __init__(self, nbus: Bus, settings: ImageStoreSettings, resolve: Resolve = system_resolve) -> None:
        self.bus = nbus
        self.settings = settings
        self.resolve = resolve

    async def upload(self, data: bytes, headers: Mapping[str, str]) -> bytes:
        """Normalise and store uploaded bytes."""
        uploader = _uploader(headers.get(UPLOADER_HEADER))
        return await self._store(data, headers.get(MEDIA_TYPE_HEADER) or None, uploader)

    async def fetch(self, data: bytes) -> bytes:
        """Fetch a URL within the fetch policy, then store it like an upload."""
        request = _fetch_decoder.decode(data)
        uploader = _uploader(request.uploaded_by)
        try:
            body, content_type = await fetch_image(request.url, self.settings.fetch, self.resolve)
        except ImageRejected as exc:
            raise ServiceError(exc.code, exc.message) from None
        # A server's Content-Type is not the user's claim: the bytes decide, so it is not checked.
        del content_type
        return await self._store(body, None, uploader)

    async def release(self, data: bytes) -> bytes:
        """Purge those of the released images (an erasure dropped a reference) that nothing references."""
        request = _release_decoder.decode(data)
        report = await collect_images(
            self.bus, by="erasure", grace=timedelta(0), only=set(request.hashes), release=True
        )
        return msgspec.json.encode(ReleasedImages(purged=report.purged))

    async def _store(self, data: bytes, declared_type: str | None, uploader: str) -> bytes:
        try:
            event, is_new = await store_image(self.bus, data, declared_type, uploader, self.settings.limits)
        except ImageRejected as exc:
            raise ServiceError(exc.code, exc.message) from None
        log.info("stored image %s for %s (new: %s)", event.sha256, uploader, is_new)
        return _info(event, is_new)


async def run_image_store(
    settings: ImageStoreSettings, nbus: Bus, stop: asyncio.Event, resolve: Resolve = system_resolve
) -> None:
    """Serve `images.upload` and `images.fetch` until stop is set (replicas share requests)."""
    images = ImageService(nbus, settings, resolve)
    service = await bus.serve(
        nbus.nc,
        IMAGE_SERVICE,
        VERSION,
        {"fetch": images.fetch, "release": images.release},
        description="chatbus image store: normalise, content-address, fetch URLs safely",
        raw_endpoints={"upload": images.upload},
        concurrency=settings.concurrency,
    )
    log.info("image store serving (%d at once)", settings.concurrency)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(bus.BusError):  # the connection is gone: nothing more arrives
            await service.stop()
