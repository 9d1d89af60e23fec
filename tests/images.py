"""Images for tests: deterministic pictures, encoded in any format, and PNGs whose header lies."""

from __future__ import annotations

import io
import random
import struct
import zlib
from typing import Any

from PIL import Image

HTML = b"<html><script>alert(1)</script></html>"


def picture(mode: str = "RGB", size: tuple[int, int] = (32, 24)) -> Image.Image:
    """A deterministic noisy picture, so encoders have real work to do."""
    rng = random.Random(42)
    bands = len(mode)
    return Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * bands))


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    """`image` saved in format `fmt` (Pillow's name: PNG, JPEG, ...)."""
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR claims another size (CRC recomputed so only the size lies)."""
    data = bytearray(encode(Image.new("P", (1, 1)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)
