"""SSRF: a URL a user gives never makes the server connect inside the network (canary on loopback)."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from netguard import is_public
from services.image_store.errors import ImageRejected
from services.image_store.fetch import FetchPolicy, fetch_image
from tests.hosts import BODY, Canary, resolver, serve_canary


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "0x7f000001", "2130706433", "127.1", "[::1]"],
)
async def test_loopback_in_any_spelling_is_refused_without_a_connection(canary: Canary, host: str) -> None:
    with pytest.raises(ImageRejected) as refused:
        await fetch_image(f"http://{host}:{canary.port}/cat.png")
    assert refused.value.code in ("forbidden_address", "unresolvable")
    assert canary.connections == 0


async def test_a_dns_name_that_resolves_to_loopback_is_refused(canary: Canary) -> None:
    resolve = resolver({"images.example.test": "127.0.0.1"})
    with pytest.raises(ImageRejected) as refused:
        await fetch_image(f"http://images.example.test:{canary.port}/cat.png", resolve=resolve)
    assert refused.value.code == "forbidden_address"
    assert canary.connections == 0


async def test_a_redirect_to_the_canary_is_refused_at_the_hop(canary: Canary) -> None:
    # A second loopback server plays a public host (allowed by name) that redirects inside.
    redirector_box: list[Canary] = []
    server = await asyncio.start_server(lambda r, w: serve_canary(redirector_box[0], r, w), "127.0.0.1", 0)
    redirector = Canary(
        port=server.sockets[0].getsockname()[1], redirect_to=f"http://127.0.0.1:{canary.port}/cat.png"
    )
    redirector_box.append(redirector)
    policy = FetchPolicy(private_hosts=frozenset({"public.example.test"}))
    try:
        with pytest.raises(ImageRejected) as refused:
            await fetch_image(
                f"http://public.example.test:{redirector.port}/r",
                policy,
                resolve=resolver({"public.example.test": "127.0.0.1"}),
            )
    finally:
        server.close()
        await server.wait_closed()
    assert refused.value.code == "forbidden_address"
    assert redirector.connections == 1 and canary.connections == 0


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.org/x.png",
        "gopher://x/",
        "http://user:pw@example.org/x",
        "http:///x",
    ],
)
async def test_only_plain_http_and_https_urls(url: str) -> None:
    with pytest.raises(ImageRejected) as refused:
        await fetch_image(url)
    assert refused.value.code == "bad_url"


async def test_a_named_home_host_may_be_private_and_the_byte_cap_holds(canary: Canary) -> None:
    resolve = resolver({"nas.home.test": "127.0.0.1"})
    policy = FetchPolicy(private_hosts=frozenset({"nas.home.test"}))
    body, media_type = await fetch_image(
        f"http://nas.home.test:{canary.port}/cat.png", policy, resolve=resolve
    )
    assert body == BODY and media_type == "image/png" and canary.connections == 1
    small = FetchPolicy(private_hosts=frozenset({"nas.home.test"}), max_bytes=50)
    with pytest.raises(ImageRejected) as refused:
        await fetch_image(f"http://nas.home.test:{canary.port}/cat.png", small, resolve=resolve)
    assert refused.value.code == "too_large"


async def test_a_silent_server_times_out(canary: Canary) -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    policy = FetchPolicy(private_hosts=frozenset({"slow.home.test"}), total_timeout=0.5)
    try:
        with pytest.raises(ImageRejected) as refused:
            await fetch_image(
                f"http://slow.home.test:{port}/x", policy, resolve=resolver({"slow.home.test": "127.0.0.1"})
            )
    finally:
        server.close()
        await server.wait_closed()
    assert refused.value.code == "fetch_timeout"


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254 (cloud metadata)
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::a00:1",  # local-use NAT64 prefix
        "::ffff:0:7f00:1",  # SIIT IPv4-translated 127.0.0.1
        "::127.0.0.1",  # IPv4-compatible
        "fec0::1",  # site-local
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "fd00::1",
        "fe80::1",
        "::1",
        "::",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
    ],
)
def test_addresses_that_reach_inside_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_global_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))
