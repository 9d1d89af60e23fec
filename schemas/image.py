"""Image events: images stored by content, on `image.<sha256>.>` in stream IMAGE (bytes: object store)."""

from __future__ import annotations

from datetime import datetime

import msgspec


class ImageEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of image events."""

    event_id: str
    at: datetime
    sha256: str


class ImageStored(ImageEvent, frozen=True, kw_only=True, tag="image.stored"):
    """A user stored an image (normalised; `sha256` of the stored bytes). Subject `image.<sha256>.stored`."""

    media_type: str
    width: int
    height: int
    size: int
    uploaded_by: str


ImageEventUnion = ImageStored


def image_subject(sha256: str, kind: str) -> str:
    """Subject of an image event, e.g. `image.<sha256>.stored`."""
    return f"image.{sha256}.{kind}"


def subject_of(event: ImageStored) -> str:
    """The subject an image event is appended on."""
    return image_subject(event.sha256, "stored")
