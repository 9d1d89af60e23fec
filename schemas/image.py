"""Image events: images stored by content, on `image.<sha256>.>` in stream IMAGE (bytes: object store).

`image.<sha256>.>` is one image's whole history. The uploader is the last token of a stored
event's subject, so "did this user store this image" is one direct get.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

SHA256_PATTERN = r"^[0-9a-f]{64}\Z"
Sha256 = Annotated[str, msgspec.Meta(pattern=SHA256_PATTERN)]


class ImageEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of image events."""

    event_id: str
    at: datetime
    sha256: str


class ImageStored(ImageEvent, frozen=True, kw_only=True, tag="image.stored"):
    """A user stored an image (normalised; `sha256` of the stored bytes).

    Subject `image.<sha256>.stored.<uploaded_by>`: one per image and uploader.
    """

    media_type: str
    width: int
    height: int
    size: int
    uploaded_by: str


class ImagePurged(ImageEvent, frozen=True, kw_only=True, tag="image.purged"):
    """An unreferenced image's bytes and stored events were removed. Subject `image.<sha256>.purged`."""

    by: str
    reason: str = "unreferenced"


ImageEventUnion = ImageStored | ImagePurged


def is_sha256(value: str) -> bool:
    """Whether value is a lowercase hex sha256 digest."""
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
