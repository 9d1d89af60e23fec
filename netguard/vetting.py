"""Vet a URL and the addresses its host resolves to, before and while connecting.

Every address a host resolves to must be global (the resolver also turns hex and decimal forms such as
0x7f000001 into the address they mean); the connection goes only to the vetted addresses (the resolver
below is what aiohttp connects with, so a host that answers differently the second time gains nothing).
Named hosts may be allowed to be private (a home network), never addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from netguard.addresses import IPAddress, is_public

Resolve = Callable[[str, int], Awaitable[list[str]]]


class UrlRefused(Exception):
    """A URL the guard will not connect to; `code`: bad_url, unresolvable or forbidden_address."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


async def system_resolve(host: str, port: int) -> list[str]:
    """Addresses of host as the system resolver gives them (numeric forms like 2130706433 included)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def check_url(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL without credentials; UrlRefused("bad_url") otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("bad_url", "only http and https URLs are allowed")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("bad_url", "URLs with credentials are refused")
    if not parts.hostname:
        raise UrlRefused("bad_url", "the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UrlRefused("bad_url", "the URL's port is not a number in range") from None
    return parts.hostname, port


def literal_address_refused(url: str) -> UrlRefused | None:
    """What can be told of a URL without a lookup: a bad URL, or a host written as an address that is not
    public (`http://10.0.0.1/`); None when only resolving can tell."""
    try:
        host, _ = check_url(url)
    except UrlRefused as refused:
        return refused
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None  # a name (or a numeric spelling only the resolver reads): vetted when connecting
    if not is_public(address):
        return UrlRefused("forbidden_address", f"{host} is not a public address")
    return None


async def vet(host: str, port: int, resolve: Resolve, private_hosts: frozenset[str]) -> list[IPAddress]:
    """Resolve host and return its addresses, or refuse when any one of them is not public (unless the
    host is named in `private_hosts`, lower case)."""
    try:
        raw = await resolve(host, port)
    except OSError as exc:
        raise UrlRefused("unresolvable", f"cannot resolve {host}: {exc.strerror or exc}") from None
    addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in raw]
    if not addresses:
        raise UrlRefused("unresolvable", f"{host} has no address")
    if host.lower().rstrip(".") in private_hosts:
        return addresses
    if not all(is_public(a) for a in addresses):
        raise UrlRefused("forbidden_address", f"{host} resolves to an address that is not public")
    return addresses


class VettedResolver(AbstractResolver):
    """aiohttp resolver that answers only with addresses that passed `vet`."""

    def __init__(self, resolve: Resolve, private_hosts: frozenset[str]) -> None:
        self._resolve = resolve
        self._private_hosts = private_hosts

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        addresses = await vet(host, port, self._resolve, self._private_hosts)
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
