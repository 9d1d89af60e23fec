"""The pictures a vision model sees: read by hash from the object store, decoded and bounded in size."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

from PIL import Image

import bus
from schemas.streams import IMAGES_OBJECTS

log = logging.getLogger(__name__)

# Pictures reach the processor at most this large (it resizes further): bounds a worker's memory.
MAX_PICTURE_SIDE = 2048


def open_images(blobs: dict[str, bytes]) -> dict[str, Any]:
    """Decode stored (already normalised) image bytes into RGB pictures; one that fails is left out."""
    pictures = {}
    for sha, data in blobs.items():
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.draft("RGB", (MAX_PICTURE_SIDE, MAX_PICTURE_SIDE))  # JPEG: decode at a smaller scale
                picture = image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            log.warning("image %s cannot be decoded, left out: %s", sha, exc)
            continue
        picture.thumbnail((MAX_PICTURE_SIDE, MAX_PICTURE_SIDE))
        pictures[sha] = picture
    return pictures


async def load_images(js: bus.JetStream, wanted: list[str], max_images: int) -> dict[str, Any]:
    """The newest `max_images` wanted images, read by hash from the object store (purged: left out)."""
    keep = wanted[-max_images:] if max_images > 0 else []
    blobs = await asyncio.gather(*(bus.get_object(js, IMAGES_OBJECTS.bucket, sha) for sha in keep))
    found = {sha: data for sha, data in zip(keep, blobs, strict=True) if data is not None}
    return await asyncio.to_thread(open_images, found)
