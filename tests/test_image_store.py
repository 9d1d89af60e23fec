"""Images are stored once, by the hash of their normalised bytes, in the real JetStream object store."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

import bus
import schemas
from bus import Bus
from schemas.image import ImageStored
from services.image_store.errors import ImageRejected
from services.image_store.store import store_image


def _jpeg(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    Image.new("RGB", (64, 48), color).save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


async def test_the_same_picture_is_stored_once_and_named_by_its_normalised_hash(nbus: Bus) -> None:
    upload = _jpeg((200, 30, 30))
    first, first_new = await store_image(nbus, upload, "image/jpeg", "ann")
    again, again_new = await store_image(nbus, upload, "image/jpeg", "ann")
    by_bob, bob_new = await store_image(nbus, upload, None, "bob")
    assert first_new and not again_new and bob_new  # new to bob: whether ann had it is not his to know
    assert first.sha256 == again.sha256 == by_bob.sha256
    stored = await bus.get_object(nbus.js, "images", first.sha256)
    assert stored is not None and hashlib.sha256(stored).hexdigest() == first.sha256
    assert stored != upload and b"SecretCam" not in stored
    assert (first.media_type, first.width, first.height, first.size) == ("image/jpeg", 64, 48, len(stored))
    info = await nbus.js.stream_info("OBJ_images")
    assert info.state.messages == 2  # one chunk and one meta record: stored once
    events = [schemas.decode_event(m.data) for m in await bus.read_all(nbus.js, "IMAGE", ["image.>"])]
    assert [(e.uploaded_by, e.sha256) for e in events if isinstance(e, ImageStored)] == [
        ("ann", first.sha256),
        ("bob", first.sha256),
    ]


async def test_a_refused_upload_stores_nothing(nbus: Bus) -> None:
    with pytest.raises(ImageRejected):
        await store_image(nbus, b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", "ann")
    assert (await nbus.js.stream_info("IMAGE")).state.messages == 0
    assert (await nbus.js.stream_info("OBJ_images")).state.messages == 0
