"""normalize(): hostile uploads are refused or reduced to pixels, with no metadata surviving."""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any

import pytest
from PIL import ExifTags, Image, PngImagePlugin

from services.image_store import normalize as normalize_module
from services.image_store.errors import ImageRejected, ImageStoreError
from services.image_store.normalize import MIB, ImageLimits, NormalizedImage, normalize
from tests.images import HTML, encode, picture, png_with_size

FORMAT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
FAKE_ICC = b"FAKE-ICC-PROFILE" * 16


def _rejected(data: bytes, declared: str | None = None, limits: ImageLimits | None = None) -> str:
    with pytest.raises(ImageRejected) as caught:
        normalize(data, declared, limits or ImageLimits())
    assert isinstance(caught.value, ImageStoreError)
    return caught.value.code


def _reopen(result: NormalizedImage) -> Image.Image:
    image = Image.open(io.BytesIO(result.data))
    image.load()
    return image


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_round_trip_keeps_type_and_size_and_is_deterministic(fmt: str) -> None:
    source = picture("P" if fmt == "GIF" else "RGB")
    data = encode(source, fmt)
    result = normalize(data, FORMAT_TYPES[fmt])
    expected_type = "image/png" if fmt == "GIF" else FORMAT_TYPES[fmt]
    assert result.media_type == expected_type
    assert (result.width, result.height) == (32, 24)
    assert result.sha256 == hashlib.sha256(result.data).hexdigest()
    again = normalize(data, None)
    assert again == result
    reopened = _reopen(result)
    assert reopened.format == {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}[expected_type]
    assert reopened.size == (32, 24)
    assert reopened.mode == "RGB"


def test_lossless_png_keeps_the_exact_pixels() -> None:
    source = picture("RGB")
    result = normalize(encode(source, "PNG"), "image/png")
    assert _reopen(result).tobytes() == source.tobytes()


def test_jpeg_exif_with_gps_is_removed_entirely() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SecretCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 22.0, 7.5)
    data = encode(picture(), "JPEG", exif=exif)
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.GPSInfo), "fixture must carry GPS"

    result = normalize(data, "image/jpeg")
    assert b"Exif" not in result.data
    assert b"SecretCam" not in result.data
    reopened = _reopen(result)
    assert len(reopened.getexif()) == 0
    assert "exif" not in reopened.info


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_icc_profile_is_stripped(fmt: str) -> None:
    data = encode(picture(), fmt, icc_profile=FAKE_ICC)
    assert Image.open(io.BytesIO(data)).info.get("icc_profile") == FAKE_ICC, "fixture must carry ICC"
    result = normalize(data, None)
    assert "icc_profile" not in _reopen(result).info
    assert b"ICC_PROFILE" not in result.data and b"iCCP" not in result.data and b"ICCP" not in result.data


def test_jpeg_comment_is_stripped() -> None:
    data = encode(picture(), "JPEG", comment=b"shot at home, 12 Elm St")
    result = normalize(data, "image/jpeg")
    assert b"Elm St" not in result.data
    assert "comment" not in _reopen(result).info


def test_png_text_chunks_are_stripped() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "alice@example.com")
    info.add_text("Comment", "compressed secret", zip=True)
    info.add_itxt("Location", "international secret", lang="en")
    data = encode(picture(), "PNG", pnginfo=info)
    result = normalize(data, "image/png")
    for chunk in (b"tEXt", b"zTXt", b"iTXt", b"alice", b"secret"):
        assert chunk not in result.data
    assert _reopen(result).info == {}


def test_decompression_bomb_is_refused_quickly() -> None:
    data = png_with_size(30000, 30000)
    assert len(data) < 200
    started = time.monotonic()
    assert _rejected(data, "image/png") == "too_many_pixels"
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "size",
    [(10000, 10000), (7000, 6000)],
    ids=["100MP-over-pillow-warning", "42MP-over-our-limit-only"],
)
def test_header_over_the_pixel_limit_is_refused(size: tuple[int, int]) -> None:
    assert _rejected(png_with_size(*size)) == "too_many_pixels"


def test_pixel_limit_comes_from_the_limits_argument() -> None:
    data = encode(picture(size=(20, 10)), "PNG")
    assert _rejected(data, limits=ImageLimits(max_pixels=199)) == "too_many_pixels"
    assert normalize(data, None, ImageLimits(max_pixels=200)).width == 20


def test_truncated_jpeg_is_corrupt() -> None:
    data = encode(picture(size=(64, 64)), "JPEG")
    assert _rejected(data[: len(data) // 2], "image/jpeg") == "corrupt"


def test_png_magic_with_garbage_is_corrupt() -> None:
    assert _rejected(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10) == "corrupt"


@pytest.mark.parametrize(
    "data",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
        HTML,
        b"",
        b"BM" + b"\0" * 60,
    ],
    ids=["svg", "xml-svg", "html", "empty", "bmp"],
)
def test_anything_but_the_four_formats_is_bad_format(data: bytes) -> None:
    assert _rejected(data) == "bad_format"
    assert _rejected(data, "image/svg+xml") == "bad_format"


def test_html_after_iend_does_not_survive() -> None:
    data = encode(picture(), "PNG") + HTML
    result = normalize(data, "image/png")
    assert b"<script" not in result.data and b"<html" not in result.data


def test_html_in_a_text_chunk_does_not_survive() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", HTML.decode())
    data = encode(picture(), "PNG", pnginfo=info)
    assert b"<script" in data
    result = normalize(data, "image/png")
    assert b"<script" not in result.data and b"<html" not in result.data


def test_oversize_body_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("Image.open called for an oversize body")

    monkeypatch.setattr(normalize_module.Image, "open", no_decoding)
    assert _rejected(b"\x89PNG\r\n\x1a\n" + b"\0" * (10 * MIB)) == "too_large"
    assert _rejected(b"\xff\xd8\xff" + b"\0" * 1000, limits=ImageLimits(max_bytes=1000)) == "too_large"


def test_body_exactly_at_the_byte_limit_is_accepted() -> None:
    data = encode(picture(), "PNG")
    assert normalize(data, None, ImageLimits(max_bytes=len(data))).media_type == "image/png"


def test_declared_type_must_match_the_bytes() -> None:
    jpeg = encode(picture(), "JPEG")
    assert _rejected(jpeg, "image/png") == "type_mismatch"
    assert _rejected(encode(picture(), "PNG"), "image/svg+xml") == "type_mismatch"
    assert normalize(jpeg, "IMAGE/JPEG").media_type == "image/jpeg"


def test_exif_orientation_is_applied() -> None:
    source = Image.new("RGB", (20, 10), "blue")
    source.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    result = normalize(encode(source, "JPEG", exif=exif), "image/jpeg")
    assert (result.width, result.height) == (10, 20)
    upright = _reopen(result).convert("RGB")
    assert upright.size == (10, 20)
    red, _, blue = upright.getpixel((5, 2))  # type: ignore[misc]
    assert red > 200 and blue < 60, "orientation 6 puts the left (red) half on top"
    assert len(upright.getexif()) == 0


def test_animated_gif_keeps_only_the_first_frame() -> None:
    frames = [Image.new("P", (8, 8), i) for i in (1, 2, 3)]
    for frame, colour in zip(frames, ((255, 0, 0), (0, 255, 0), (0, 0, 255)), strict=True):
        frame.putpalette([0, 0, 0, *colour] * 2)
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    result = normalize(data, "image/gif")
    reopened = _reopen(result)
    assert result.media_type == "image/png"
    assert getattr(reopened, "n_frames", 1) == 1
    assert reopened.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize(
    ("source", "fmt", "params", "media_type", "mode"),
    [
        (Image.new("RGBA", (8, 8), (10, 20, 30, 128)), "PNG", {}, "image/png", "RGBA"),
        (Image.new("LA", (8, 8), (10, 128)), "PNG", {}, "image/png", "RGBA"),
        (Image.new("P", (8, 8), 0), "PNG", {"transparency": 0}, "image/png", "RGBA"),
        (Image.new("P", (8, 8), 0), "GIF", {"transparency": 0}, "image/png", "RGBA"),
        (Image.new("L", (8, 8), 77), "PNG", {}, "image/png", "RGB"),
        (Image.new("1", (8, 8), 1), "PNG", {}, "image/png", "RGB"),
        (Image.new("L", (8, 8), 77), "JPEG", {}, "image/jpeg", "RGB"),
        (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", {}, "image/jpeg", "RGB"),
        (Image.new("RGBA", (8, 8), (10, 20, 30, 128)), "WEBP", {}, "image/png", "RGBA"),
    ],
    ids=[
        "rgba",
        "la",
        "png-palette-trns",
        "gif-trns",
        "grey",
        "bilevel",
        "grey-jpeg",
        "cmyk-jpeg",
        "webp-alpha",
    ],
)
def test_modes_become_rgb_or_rgba(
    source: Image.Image, fmt: str, params: dict[str, Any], media_type: str, mode: str
) -> None:
    result = normalize(encode(source, fmt, **params), None)
    assert result.media_type == media_type
    assert _reopen(result).mode == mode
