"""Fetch an image URL for a user without letting the URL reach inside the network (SSRF).

Every address a host resolves to must be global (IPv4-mapped, 6to4 and Teredo IPv6 forms are
unwrapped first; the resolver also turns hex and decimal forms such as 0x7f000001 into the
address they mean); the connection goes only to the vetted addresses; each redirect hop is
checked again; timeouts and a byte cap are hard. Named hosts may be allowed to be private
(a home network), never addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from schemas.settings_shared import DEFAULT_IMAGE_MAX_BYTES
from services.image_store.errors import ImageRejected

Resolve = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class FetchPolicy:
    """Limits of a URL fetch; `private_hosts` are host names allowed to resolve to private addresses."""

    max_bytes: int = DEFAULT_IMAGE_MAX_BYTES
    connect_timeout: float = 3.0
    total_timeout: float = 10.0
    max_redirects: int = 3
    private_hosts: frozenset[str] = field(default_factory=frozenset)


async def system_resolve(host: str, port: int) -> list[str]:
    """Addresses of host as the system resolver gives them (numeric forms like 2130706433 included)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# IPv6 ranges whose last 32 bits are an IPv4 address a gateway may reach: NAT64 (RFC 6052, RFC 8215),
# IPv4-compatible (deprecated) and SIIT IPv4-translated addresses.
_EMBEDS_IPV4 = tuple(
    ipaddress.IPv6Network(net) for net in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96", "::ffff:0:0:0/96")
)
# Only global unicast IPv6 (2000::/3) is ever public; this refuses site-local fec0::/10 and the like.
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address embeds (mapped, 6to4, Teredo, NAT64, compatible), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
        if any(address in net for net in _EMBEDS_IPV4):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def is_public(address: IPAddress) -> bool:
    """True for a global unicast address (after unwrapping embedded IPv4)."""
    inner = unwrap(address)
    if inner is not address:
        return inner.is_global and not inner.is_multicast
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST:
        return False
    return address.is_global and not address.is_multicast


class _VettedResolver(AbstractResolver):
    """aiohttp resolver that answers only with addresses that passed the policy."""

    def __init__(self, resolve: Resolve, policy: FetchPolicy) -> None:
        self._resolve = resolve
        self._policy = policy

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        addresses = await vet(host, port, self._resolve, self._policy)
        return [
            ResolveResult(
                hostname=host,
                host=str(a),
                port=port,
                family=socket.AF_INET6 if a.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        return None


async def vet(host: str, port: int, resolve: Resolve, policy: FetchPolicy) -> list[IPAddress]:
    """Resolve host and return its addresses, or refuse when any one of them is not public."""
    try:
        raw = await resolve(host, port)
    except OSError as exc:
        raise ImageRejected("unresolvable", f"cannot resolve {host}: {exc.strerror or exc}") from None
    addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in raw]
    if not addresses:
        raise ImageRejected("unresolvable", f"{host} has no address")
    if host.lower().rstrip(".") in policy.private_hosts:
        return addresses
    if not all(is_public(a) for a in addresses):
        raise ImageRejected("forbidden_address", f"{host} resolves to an address that is not public")
    return addresses


def _check_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ImageRejected("bad_url", "only http and https URLs can be fetched")
    if parts.username is not None or parts.password is not None:
        raise ImageRejected("bad_url", "URLs with credentials are refused")
    if not parts.hostname:
        raise ImageRejected("bad_url", "the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ImageRejected("bad_url", "the URL's port is not a number in range") from None
    return parts.hostname, port


async def fetch_image(
    url: str, policy: FetchPolicy = FetchPolicy(), resolve: Resolve = system_resolve
) -> tuple[bytes, str | None]:
    """The body and Content-Type of an image URL, within the policy; ImageRejected otherwise.

    `policy.total_timeout` bounds the whole fetch: every lookup, redirect and byte.
    """
    try:
        async with asyncio.timeout(policy.total_timeout):
            return await _fetch(url, policy, resolve)
    except TimeoutError:
        raise ImageRejected("fetch_timeout", f"no complete answer within {policy.total_timeout}s") from None


async def _fetch(url: str, policy: FetchPolicy, resolve: Resolve) -> tuple[bytes, str | None]:
    timeout = aiohttp.ClientTimeout(total=policy.total_timeout, sock_connect=policy.connect_timeout)
    connector = aiohttp.TCPConnector(resolver=_VettedResolver(resolve, policy), use_dns_cache=False, limit=1)
    try:
        async with aiohttp.ClientSession(timeout=timeout, connector=connector, trust_env=False) as http:
            for _ in range(policy.max_redirects + 1):
                host, port = _check_url(url)
                await vet(host, port, resolve, policy)  # refuse before the connector even tries
                async with http.get(url, allow_redirects=False, headers={"Accept": "image/*"}) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        url = urljoin(url, resp.headers["Location"])
                        continue
                    if resp.status != 200:
                        raise ImageRejected("http_error", f"the server answered {resp.status}")
                    return await _read_capped(resp, policy.max_bytes), resp.headers.get("Content-Type")
            raise ImageRejected("too_many_redirects", f"more than {policy.max_redirects} redirects")
    except TimeoutError:
        raise ImageRejected("fetch_timeout", f"no complete answer within {policy.total_timeout}s") from None
    except aiohttp.ClientConnectorError as exc:
        cause: Any = exc.os_error
        if isinstance(cause, ImageRejected):
            raise cause from None
        raise ImageRejected("fetch_failed", f"cannot connect: {exc}") from None
    except aiohttp.ClientError as exc:
        raise ImageRejected("fetch_failed", f"fetch failed: {type(exc).__name__}") from None


async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    declared = resp.content_length
    if declared is not None and declared > max_bytes:
        raise ImageRejected("too_large", f"the image is over {max_bytes} bytes")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body.extend(chunk)
        if len(body) > max_bytes:
            raise ImageRejected("too_large", f"the image is over {max_bytes} bytes")
    return bytes(body)
