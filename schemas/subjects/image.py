"""Image subjects: `image.<sha256>.>`."""

from __future__ import annotations

from typing import Literal

import msgspec

from schemas.subjects.roots import IMAGE_ROOT, REST, join

ImageKind = Literal["stored", "purged"]
_STORED: ImageKind = "stored"
_PURGED: ImageKind = "purged"


def image_stored(sha256: str, uploaded_by: str) -> str:
    """Subject of `uploaded_by`'s stored event of an image: `image.<sha256>.stored.<uploaded_by>`."""
    return join(IMAGE_ROOT, sha256, _STORED, uploaded_by)


def image_purged(sha256: str) -> str:
    """Subject of an image's purge: `image.<sha256>.purged`."""
    return join(IMAGE_ROOT, sha256, _PURGED)


def one_image(sha256: str) -> str:
    """One image's whole history: `image.<sha256>.>`."""
    return join(IMAGE_ROOT, sha256, REST)


class ImageSubject(msgspec.Struct, frozen=True):
    """An image event's subject, parsed; `uploaded_by` only for a stored event."""

    sha256: str
    kind: ImageKind
    uploaded_by: str = ""


def parse_image_subject(subject: str) -> ImageSubject | None:
    """The parts of a subject in IMAGE, or None."""
    parts = subject.split(".")
    if len(parts) == 4 and parts[0] == IMAGE_ROOT and parts[2] == _STORED:
        return ImageSubject(parts[1], _STORED, uploaded_by=parts[3])
    if len(parts) == 3 and parts[0] == IMAGE_ROOT and parts[2] == _PURGED:
        return ImageSubject(parts[1], _PURGED)
    return None
