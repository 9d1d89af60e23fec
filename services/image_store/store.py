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
    """The `image.stored` event of this upload, and whether it is new to this uploader.

    The hash is always computed here, from the normalised bytes; a client's claim is never used.
    The same picture uploaded again is stored once; each uploader gets one `image.stored` event.
    Whether *someone else* stored it is never said (that would tell who has which picture).
    """
    image = await asyncio.to_thread(normalize, data, declared_type, limits or ImageLimits())
    bucket = IMAGES_OBJECTS.bucket
    if await bus.object_size(nbus.js, bucket, image.sha256) is None:
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
    # One stored event per image and uploader (expected sequence 0 on its subject): a repeat appends
    # nothing. The dedup id is the event's own: a fixed one would outlive a purge of the subject and
    # swallow the upload that brings the image back.
    try:
        await bus.append_event(nbus.js, event, expected_subject_seq=0)
    except bus.ConcurrencyConflict:
        return event, False
    if await bus.object_size(nbus.js, bucket, image.sha256) is None:  # a collector purged it meanwhile
        await bus.put_object(nbus.js, bucket, image.sha256, image.data)
    return event, True
