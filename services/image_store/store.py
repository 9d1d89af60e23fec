"""Store an image once, by content: normalise, put the bytes under their sha256, append `image.stored`."""

from __future__ import annotations

import asyncio

import bus
import schemas
from bus import Bus
from schemas.ids import new_id
from schemas.image import ImageStored
from schemas.streams import IMAGES_OBJECTS
from services.image_store.normalize import ImageLimits, normalize


async def store_image(
    nbus: Bus, data: bytes, declared_type: str | None, uploaded_by: str, limits: ImageLimits | None = None
) -> tuple[ImageStored, bool]:
    """The `image.stored` event of this upload, and whether its bytes were new to the store.

    The hash is always computed here, from the normalised bytes; a client's claim is never used.
    The same picture uploaded again is stored once; each uploader gets one `image.stored` event.
    """
    image = await asyncio.to_thread(normalize, data, declared_type, limits or ImageLimits())
    bucket = IMAGES_OBJECTS.bucket
    is_new = await bus.object_size(nbus.js, bucket, image.sha256) is None
    if is_new:
        await bus.put_object(nbus.js, bucket, image.sha256, image.data)
    event = ImageStored(
        event_id=new_id("e"),
        at=schemas.now(),
        sha256=image.sha256,
        media_type=image.media_type,
        width=image.width,
        height=image.height,
        size=len(image.data),
        uploaded_by=uploaded_by,
    )
    try:  # one stored event per image and uploader, ever: a repeat upload appends nothing
        await bus.append_event(
            nbus.js, event, msg_id=f"image.{image.sha256}.{uploaded_by}", expected_subject_seq=0
        )
    except bus.ConcurrencyConflict:
        pass
    return event, is_new
