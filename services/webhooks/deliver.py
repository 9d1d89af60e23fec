"""POST one signed delivery to a callback URL, through netguard: vetted addresses, no redirects, a timeout."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgspec

from netguard import Resolve, UrlRefused, VettedResolver, check_url, vet
from schemas.webhook import webhook_headers


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one delivery got: the HTTP status (0: none), an error, and whether the URL was refused."""

    status: int = 0
    error: str = ""
    refused: bool = False

    @property
    def delivered(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.status < 300


async def post_delivery(
    url: str,
    body: bytes,
    *,
    secret: str,
    webhook_id: str,
    resolve: Resolve,
    private_hosts: frozenset[str],
    timeout: float,
) -> Outcome:
    """POST `body` signed with `secret`; never follows a redirect, never reaches a non-public address
    unless its host is named in `private_hosts`."""
    try:
        async with asyncio.timeout(timeout):
            host, port = check_url(url)
            await vet(host, port, resolve, private_hosts)  # refuse before the connector even tries
            return await _post(url, body, secret, webhook_id, resolve, private_hosts, timeout)
    except UrlRefused as refused:
        return Outcome(error=f"{refused.code}: {refused.message}", refused=True)
    except TimeoutError:
        return Outcome(error=f"no answer within {timeout:g} s")


async def _post(
    url: str,
    body: bytes,
    secret: str,
    webhook_id: str,
    resolve: Resolve,
    private_hosts: frozenset[str],
    timeout: float,
) -> Outcome:
    headers = webhook_headers(secret, webhook_id, int(time.time()), body)
    connector = aiohttp.TCPConnector(
        resolver=VettedResolver(resolve, private_hosts), use_dns_cache=False, limit=1, force_close=True
    )
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with (
            aiohttp.ClientSession(timeout=client_timeout, connector=connector, trust_env=False) as http,
            http.post(url, data=body, headers=headers, allow_redirects=False) as resp,
        ):
            if 300 <= resp.status < 400:
                return Outcome(status=resp.status, error="redirects are not followed")
            return Outcome(status=resp.status, error="" if resp.status < 300 else f"answered {resp.status}")
    except aiohttp.ClientConnectorError as exc:
        cause = exc.os_error
        if isinstance(cause, UrlRefused):
            return Outcome(error=f"{cause.code}: {cause.message}", refused=True)
        return Outcome(error=f"cannot connect: {exc}")
    except aiohttp.ClientError as exc:
        return Outcome(error=f"delivery failed: {type(exc).__name__}: {exc}")
