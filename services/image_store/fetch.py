"""Fetch an image URL for a user without letting the URL reach inside the network (SSRF).

The vetting is netguard's (shared with the webhooks): every address a host resolves to must be global,
the connection goes only to the vetted addresses; here, each redirect hop is checked again, and
timeouts and a byte cap are hard. Named hosts may be allowed to be private (a home network), never
addresses.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import aiohttp

from netguard import Resolve, UrlRefused, VettedResolver, check_url, system_resolve, vet
from schemas.settings_shared import DEFAULT_IMAGE_MAX_BYTES
from services.image_store.errors import ImageRejected

__all__ = ["FetchPolicy", "Resolve", "fetch_image", "system_resolve"]


@dataclass(frozen=True)
class FetchPolicy:
    """Limits of a URL fetch; `private_hosts` are host names allowed to resolve to private addresses."""

    max_bytes: int = DEFAULT_IMAGE_MAX_BYTES
    connect_timeout: float = 3.0
    total_timeout: float = 10.0
    max_redirects: int = 3
    private_hosts: frozenset[str] = field(default_factory=frozenset)


async def fetch_image(
    url: str, policy: FetchPolicy = FetchPolicy(), resolve: Resolve = system_resolve
) -> tuple[bytes, str | None]:
    """The body and Content-Type of an image URL, within the policy; ImageRejected otherwise.

    `policy.total_timeout` bounds the whole fetch: every lookup, redirect and byte.
    """
    try:
        async with asyncio.timeout(policy.total_timeout):
            return await _fetch(url, policy, resolve)
    except UrlRefused as refused:
        raise ImageRejected(refused.code, refused.message) from None
    except TimeoutError:
        raise ImageRejected("fetch_timeout", f"no complete answer within {policy.total_timeout}s") from None


async def _fetch(url: str, policy: FetchPolicy, resolve: Resolve) -> tuple[bytes, str | None]:
    timeout = aiohttp.ClientTimeout(total=policy.total_timeout, sock_connect=policy.connect_timeout)
    resolver = VettedResolver(resolve, policy.private_hosts)
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, limit=1)
    try:
        async with aiohttp.ClientSession(timeout=timeout, connector=connector, trust_env=False) as http:
            for _ in range(policy.max_redirects + 1):
                host, port = check_url(url)
                await vet(host, port, resolve, policy.private_hosts)  # refuse before the connector even tries
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
        if isinstance(cause, UrlRefused):
            raise ImageRejected(cause.code, cause.message) from None
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
