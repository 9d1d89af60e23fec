"""Turn untrusted upload bytes into a clean, metadata-free image, or refuse them."""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageOps

from schemas.settings_shared import DEFAULT_IMAGE_MAX_BYTES
from services.image_store.errors import ImageRejected

MIB = 1024 * 1024

RejectionCode = Literal["too_large", "bad_format", "type_mismatch", "too_many_pixels", "corrupt"]

# media type -> Pillow plugin name; Image.open is restricted to the sniffed plugin.
_PLUGINS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


@dataclass(frozen=True)
class ImageLimits:
    """Bounds an upload must stay within before any pixel is decoded."""

    max_bytes: int = DEFAULT_IMAGE_MAX_BYTES
    max_pixels: int = 24_000_000


@dataclass(frozen=True)
class NormalizedImage:
    """A re-encoded image: only pixels survive, `sha256` is the hex digest of `data`."""

    data: bytes
    media_type: str
    width: int
    height: int
    sha256: str


def normalize(data: bytes, declared_type: str | None, limits: ImageLimits = ImageLimits()) -> NormalizedImage:
    """Check `data` against `limits`, decode it and re-encode its pixels with no metadata."""
    if len(data) > limits.max_bytes:
        raise ImageRejected("too_large", f"{len(data)} bytes is over the limit of {limits.max_bytes}")
    media_type = sniff_media_type(data)
    if media_type is None:
        raise ImageRejected("bad_format", "not a PNG, JPEG, WebP or GIF image")
    if declared_type is not None and declared_type.split(";")[0].strip().lower() != media_type:
        raise ImageRejected("type_mismatch", f"declared {declared_type!r} but the bytes are {media_type}")
    image = _open_header(data, media_type, limits)
    pixels = _decode(image)
    return _encode(pixels, media_type)


def sniff_media_type(data: bytes) -> str | None:
    """The media type named by the magic bytes, or None if not an accepted format."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _open_header(data: bytes, media_type: str, limits: ImageLimits) -> Image.Image:
    # Image.open reads only the header; Pillow's own bomb warning is made an error too.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[_PLUGINS[media_type]])
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageRejected("too_many_pixels", str(exc)) from exc
    except _DECODE_ERRORS as exc:
        raise ImageRejected("corrupt", f"unreadable {media_type} header: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageRejected("corrupt", f"{width}x{height} is not a valid size")
    if width * height > limits.max_pixels:
        raise ImageRejected("too_many_pixels", f"{width}x{height} is over {limits.max_pixels} pixels")
    return image


def _decode(image: Image.Image) -> Image.Image:
    # Only frame 0 is loaded (animated GIF/WebP/APNG); truncated data raises, never pads.
    try:
        image.load()
        upright = ImageOps.exif_transpose(image)
    except _DECODE_ERRORS as exc:
        raise ImageRejected("corrupt", f"cannot decode image: {exc}") from exc
    has_alpha = upright.mode in _ALPHA_MODES or "transparency" in upright.info
    pixels = upright.convert("RGBA" if has_alpha else "RGB")
    # convert() copies info (ICC, comments, text); encoders fall back to it, so it must go.
    pixels.info = {}
    return pixels


def _encode(pixels: Image.Image, source_type: str) -> NormalizedImage:
    out = io.BytesIO()
    if pixels.mode == "RGBA" or source_type in ("image/png", "image/gif"):
        media_type = "image/png"
        pixels.save(out, format="PNG")
    elif source_type == "image/jpeg":
        media_type = "image/jpeg"
        pixels.save(out, format="JPEG", quality=90, exif=b"", icc_profile=None, comment=b"")
    else:
        media_type = "image/webp"
        pixels.save(out, format="WEBP", lossless=False, quality=90, exif=b"", icc_profile=None, xmp=b"")
    data = out.getvalue()
    return NormalizedImage(
        data=data,
        media_type=media_type,
        width=pixels.width,
        height=pixels.height,
        sha256=hashlib.sha256(data).hexdigest(),
    )
