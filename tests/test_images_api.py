"""Images over HTTP: upload, URL fetch, read by hash, attach to messages; hostile files, hostile URLs, access.

The API, the image store (NATS micro service) and the projector run in-process against the real
nats-server; every request goes through HTTP and the bus, as in production.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import ExifTags, Image

import bus
import schemas
from bus import Bus
from schemas.chat import MessagePosted
from schemas.image import ImageStored
from tests.apihelp import IMAGE_LIMITS as LIMITS
from tests.apihelp import Api, chat_events, is_error, serve_model, upload
from tests.hosts import Canary, serve_canary
from tests.images import HTML, encode, picture, png_with_size


def _jpeg_with_gps() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SecretCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 22.0, 7.5)
    return encode(picture(size=(64, 48)), "JPEG", exif=exif)


async def _get_image(api: Api, sha256: str, user: str, **headers: str) -> tuple[int, bytes, Any]:
    async with api.client.get(f"/v1/images/{sha256}", headers={**api.auth(user), **headers}) as resp:
        return resp.status, await resp.read(), resp.headers


async def _image_events(nbus: Bus) -> list[schemas.Event]:
    return [schemas.decode_event(m.data) for m in await bus.read_all(nbus.js, "IMAGE", ["image.>"])]


async def _objects(nbus: Bus) -> int:
    return len(await bus.list_objects(nbus.js, "images"))


# ---------------------------------------------------------------- upload and read


async def test_upload_stores_clean_bytes_once_and_serves_them_immutably(api: Api) -> None:
    data = _jpeg_with_gps()
    status, info = await upload(api, data, "image/jpeg")
    assert status == 201, info
    assert (info["media_type"], info["width"], info["height"]) == ("image/jpeg", 64, 48)
    assert info["deduplicated"] is False and info["url"] == f"/v1/images/{info['sha256']}"

    status, body, headers = await _get_image(api, info["sha256"], "ann")
    assert status == 200
    assert hashlib.sha256(body).hexdigest() == info["sha256"]  # the hash is the server's, of what it serves
    assert len(body) == info["size"] and headers["Content-Type"] == "image/jpeg"
    assert "immutable" in headers["Cache-Control"] and "private" in headers["Cache-Control"]
    assert "sandbox" in headers["Content-Security-Policy"]
    assert headers["ETag"] == f'"{info["sha256"]}"' and headers["X-Content-Type-Options"] == "nosniff"
    served = Image.open(io.BytesIO(body))
    assert len(served.getexif()) == 0 and b"SecretCam" not in body  # EXIF GPS absent after storage

    status, _, _ = await _get_image(api, info["sha256"], "ann", **{"If-None-Match": headers["ETag"]})
    assert status == 304

    status, again = await upload(api, data, "image/jpeg")
    assert status == 201 and again["sha256"] == info["sha256"] and again["deduplicated"] is True
    assert await _objects(api.nbus) == 1
    stored = [e for e in await _image_events(api.nbus) if isinstance(e, ImageStored)]
    assert [(e.sha256, e.uploaded_by) for e in stored] == [(info["sha256"], "ann")]


async def test_a_claimed_type_or_hash_from_the_client_is_not_used(api: Api) -> None:
    png = encode(picture(), "PNG")
    status, body = await upload(api, png, "image/jpeg")
    assert (status, body["error"]) == (415, "type_mismatch")
    status, info = await upload(api, png, "application/octet-stream")  # unknown type: the bytes decide
    assert status == 201 and info["media_type"] == "image/png"
    status, body = await upload(api, png, "text/html")
    assert (status, body["error"]) == (415, "unsupported_media_type")
    status, body = await api.call(
        "POST", "/v1/images", data=png, headers={"Content-Type": "image/png"}, user=None
    )
    assert status == 401


# ---------------------------------------------------------------- hostile input


SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def _hostile_cases() -> list[tuple[str, bytes, str, int, str]]:
    jpeg = encode(picture(size=(256, 256)), "JPEG")
    oversize = b"\x89PNG\r\n\x1a\n" + b"\0" * (LIMITS.max_bytes + 1)
    return [
        ("decompression-bomb", png_with_size(30000, 30000), "image/png", 413, "too_many_pixels"),
        ("100-megapixel-png", png_with_size(10000, 10000), "image/png", 413, "too_many_pixels"),
        ("truncated-jpeg", jpeg[: len(jpeg) // 2], "image/jpeg", 422, "corrupt"),
        ("svg", SVG, "image/svg+xml", 415, "bad_format"),
        ("svg-undeclared", SVG, "application/octet-stream", 415, "bad_format"),
        ("html", HTML, "application/octet-stream", 415, "bad_format"),
        ("oversize-body", oversize, "image/png", 413, "too_large"),
        ("empty", b"", "image/png", 400, "empty_body"),
    ]  # fmt: skip


@pytest.mark.parametrize("case", _hostile_cases(), ids=lambda c: c[0])
async def test_hostile_uploads_get_a_4xx_within_2s_and_the_store_keeps_serving(
    api: Api, case: tuple[str, bytes, str, int, str]
) -> None:
    _, data, content_type, expected_status, expected_code = case
    started = time.monotonic()
    status, body = await upload(api, data, content_type)
    assert time.monotonic() - started < 2
    assert (status, body["error"]) == (expected_status, expected_code) and is_error(body)
    assert await _objects(api.nbus) == 0 and await _image_events(api.nbus) == []
    status, info = await upload(api, encode(picture(), "PNG"))
    assert status == 201, info


async def test_an_html_polyglot_png_is_stored_as_pixels_only(api: Api) -> None:
    status, info = await upload(api, encode(picture(), "PNG") + HTML)
    assert status == 201
    _, body, headers = await _get_image(api, info["sha256"], "ann")
    assert b"<script" not in body and b"<html" not in body
    assert headers["Content-Type"] == "image/png"


async def test_a_body_announced_over_the_nats_limit_is_refused_before_it_is_read(api: Api) -> None:
    reader, writer = await asyncio.open_connection(api.client.host, api.client.port)
    head = (
        f"POST /v1/images HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api.keys['ann']}\r\n"
        f"Content-Type: image/png\r\nContent-Length: {100 * 1024 * 1024}\r\n\r\n"
    )
    writer.write(head.encode() + b"\x89PNG")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), timeout=2)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413") and b"too_large" in answer


async def test_a_body_that_trickles_is_refused_in_time(api: Api) -> None:
    reader, writer = await asyncio.open_connection(api.client.host, api.client.port)
    head = (
        f"POST /v1/images HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api.keys['ann']}\r\n"
        "Content-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
    )
    writer.write(head.encode() + b"\x89PNG")  # and then nothing more
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), timeout=5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"timeout" in answer


async def test_an_image_at_the_pixel_limit_is_stored_within_2s(api: Api) -> None:
    side = int(LIMITS.max_pixels**0.5)
    flood = io.BytesIO()
    Image.new("RGB", (side, side), (200, 10, 10)).save(flood, "PNG")  # tiny file, many pixels
    assert len(flood.getvalue()) < 100_000
    started = time.monotonic()
    status, info = await upload(api, flood.getvalue())
    assert status == 201 and (info["width"], info["height"]) == (side, side)
    assert time.monotonic() - started < 2
    status, body = await upload(api, png_with_size(side + 1, side))
    assert (status, body["error"]) == (413, "too_many_pixels")


# ---------------------------------------------------------------- URL fetch (SSRF)


@pytest.fixture
async def pictures() -> AsyncIterator[int]:
    """An image server on loopback (reachable only as the allowed private host pics.home.test)."""
    png = encode(picture(size=(40, 30)), "PNG")

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    app = web.Application()
    app.router.add_get("/cat.png", serve)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server.port or 0
    await server.close()


async def test_a_url_on_an_allowed_host_is_fetched_and_stored(api: Api, pictures: int) -> None:
    status, info = await api.call(
        "POST", "/v1/images/from-url", json={"url": f"http://pics.home.test:{pictures}/cat.png"}
    )
    assert status == 201, info
    assert (info["media_type"], info["width"], info["height"]) == ("image/png", 40, 30)
    assert (await _get_image(api, info["sha256"], "ann"))[0] == 200


async def test_urls_into_the_network_never_reach_the_canary(api: Api, canary: Canary) -> None:
    hop = Canary(port=0)
    server = await asyncio.start_server(lambda r, w: _redirect(hop, r, w), "127.0.0.1", 0)
    hop.port = server.sockets[0].getsockname()[1]
    hop.redirect_to = f"http://127.0.0.1:{canary.port}/cat.png"
    urls = [
        f"http://127.0.0.1:{canary.port}/cat.png",
        f"http://localhost:{canary.port}/cat.png",
        f"http://[::ffff:127.0.0.1]:{canary.port}/cat.png",
        f"http://0x7f000001:{canary.port}/cat.png",
        f"http://2130706433:{canary.port}/cat.png",
        f"http://loopback.test:{canary.port}/cat.png",  # a DNS name that resolves to loopback
        f"http://hop.home.test:{hop.port}/r",  # an allowed host that redirects to the canary
        "file:///etc/passwd",
        f"gopher://127.0.0.1:{canary.port}/",
    ]
    try:
        for url in urls:
            started = time.monotonic()
            status, body = await api.call("POST", "/v1/images/from-url", json={"url": url})
            assert status == 422 and is_error(body), (url, body)
            assert body["error"] in ("forbidden_address", "unresolvable", "bad_url"), (url, body)
            assert time.monotonic() - started < 2
    finally:
        server.close()
        await server.wait_closed()
    assert canary.connections == 0
    assert hop.connections == 1  # the redirect was followed only as far as its check
    assert await _objects(api.nbus) == 0


async def _redirect(hop: Canary, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await serve_canary(hop, reader, writer)


# ---------------------------------------------------------------- access and attaching


async def test_only_the_uploader_sees_or_attaches_an_image(api: Api) -> None:
    await serve_model(api.nbus)
    _, info = await upload(api, _jpeg_with_gps(), "image/jpeg")
    sha = info["sha256"]
    missing = hashlib.sha256(b"nothing").hexdigest()
    bob_status, bob_body, _ = await _get_image(api, sha, "bob")
    none_status, none_body, _ = await _get_image(api, missing, "ann")
    assert (bob_status, none_status) == (404, 404)
    assert bob_body.replace(sha.encode(), b"X") == none_body.replace(missing.encode(), b"X")  # no hint
    assert (await _get_image(api, sha, "root"))[0] == 200  # an admin may look (audit)
    assert (await _get_image(api, "NOT-A-HASH", "ann"))[0] == 400

    bob_chat = (await api.new_chat("bob", model="demo"))["chat_id"]
    status, body = await api.call(
        "POST", f"/v1/chats/{bob_chat}/messages", "bob", json={"content": "look", "images": [sha]}
    )
    assert (status, body["error"]) == (422, "unknown_image")
    assert len(await chat_events(api.nbus, bob_chat)) == 1  # nothing appended

    ann_chat = (await api.new_chat("ann", model="demo"))["chat_id"]
    status, posted = await api.call("POST", f"/v1/chats/{ann_chat}/messages", json={"images": [sha, sha]})
    assert status == 202, posted
    message = next(e for e in await chat_events(api.nbus, ann_chat) if isinstance(e, MessagePosted))
    assert (message.content, message.images) == ("", [sha])
    status, listed = await api.call("GET", f"/v1/chats/{ann_chat}/messages?min_seq={posted['seq']}")
    assert status == 200 and [m["images"] for m in listed["messages"]] == [[sha]]  # the read model has them
    status, body = await api.call(
        "POST", f"/v1/chats/{ann_chat}/messages", json={"content": "x", "images": ["abc"]}
    )
    assert status == 422
    status, body = await api.call(
        "POST", f"/v1/chats/{ann_chat}/messages", json={"content": "x", "images": [sha] * 9}
    )
    assert status == 422

    # bob holding the same picture may use it: content addressing, he proved he has the bytes
    status, again = await upload(api, _jpeg_with_gps(), "image/jpeg", user="bob")
    assert status == 201 and again["sha256"] == sha and again["deduplicated"] is False  # not "ann has it"
    assert (await _get_image(api, sha, "bob"))[0] == 200


async def test_every_image_route_refuses_strangers(api: Api) -> None:
    """Each route under /v1/images/{sha256} answers 404 to bob for ann's image; 401 without a key."""
    _, info = await upload(api, encode(picture(), "PNG"))
    routes = [
        (r.method, r.resource.canonical)
        for r in api.app.router.routes()
        if r.resource is not None and "{sha256}" in r.resource.canonical
    ]
    assert routes
    for method, template in routes:
        path = template.replace("{sha256}", info["sha256"])
        assert (await api.call(method, path, "bob"))[0] == 404, template
        assert (await api.call(method, path, None))[0] == 401, template
    for path in ("/v1/images", "/v1/images/from-url"):
        assert (await api.call("POST", path, None))[0] == 401


# ---------------------------------------------------------------- collecting unreferenced images


async def test_images_only_deleted_chats_used_are_collected(api: Api) -> None:
    from datetime import timedelta

    from schemas.image import ImagePurged
    from services.image_store.collect import collect_images

    await serve_model(api.nbus)
    shas = []
    for size in ((10, 10), (11, 10), (12, 10)):
        status, info = await upload(api, encode(picture(size=size), "PNG"))
        shas.append(info["sha256"])
    in_deleted, in_live, never_attached = shas
    gone = (await api.new_chat(model="demo"))["chat_id"]
    kept = (await api.new_chat(model="demo"))["chat_id"]
    for chat, sha in ((gone, in_deleted), (kept, in_live)):
        status, _ = await api.call(
            "POST", f"/v1/chats/{chat}/messages", json={"content": "x", "images": [sha]}
        )
        assert status == 202
    assert (await api.call("DELETE", f"/v1/chats/{gone}"))[0] == 200

    young = await collect_images(api.nbus, by="test", grace=timedelta(hours=1))
    assert (young.referenced, young.too_young, young.purged) == (1, 2, [])
    dry = await collect_images(api.nbus, by="test", grace=timedelta(0), dry_run=True)
    assert sorted(dry.purged) == sorted([in_deleted, never_attached]) and await _objects(api.nbus) == 3

    report = await collect_images(api.nbus, by="test", grace=timedelta(0))
    assert sorted(report.purged) == sorted([in_deleted, never_attached])
    assert [e.name for e in await bus.list_objects(api.nbus.js, "images")] == [in_live]
    assert (await _get_image(api, in_deleted, "ann"))[0] == 404
    assert (await _get_image(api, in_live, "ann"))[0] == 200
    purged = [e.sha256 for e in await _image_events(api.nbus) if isinstance(e, ImagePurged)]
    assert sorted(purged) == sorted([in_deleted, never_attached])
    status, body = await api.call("POST", f"/v1/chats/{kept}/messages", json={"images": [never_attached]})
    assert (status, body["error"]) == (422, "unknown_image")  # purged: nobody can attach it any more
    status, again = await upload(api, encode(picture(size=(12, 10)), "PNG"))  # but it can come back
    assert status == 201 and again["sha256"] == never_attached and again["deduplicated"] is False
    assert (await _get_image(api, never_attached, "ann"))[0] == 200  # really back: readable, attachable
    status, body = await api.call("POST", f"/v1/chats/{kept}/messages", json={"images": [never_attached]})
    assert status == 202, body


async def test_a_fresh_upload_of_an_old_image_keeps_it_from_the_collector(api: Api) -> None:
    from datetime import timedelta

    from services.image_store.collect import collect_images

    data = encode(picture(size=(9, 9)), "PNG")
    status, info = await upload(api, data)
    await asyncio.sleep(1.0)
    status, again = await upload(api, data, user="bob")  # the bytes are old; bob's upload is not
    assert status == 201 and again["sha256"] == info["sha256"]
    report = await collect_images(api.nbus, by="test", grace=timedelta(seconds=0.5))
    assert report.purged == [] and report.too_young == 1
    assert (await _get_image(api, info["sha256"], "bob"))[0] == 200
