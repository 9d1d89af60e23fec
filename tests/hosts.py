"""Stand-ins for the network a URL fetch meets: a loopback canary that counts connections, test host names."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from netguard import system_resolve

BODY = b"\x89PNG\r\n\x1a\n" + b"0" * 100  # what the canary answers (unless it redirects)


@dataclass
class Canary:
    """A loopback HTTP server that counts every TCP connection it receives."""

    port: int
    connections: int = 0
    redirect_to: str | None = None


async def serve_canary(canary: Canary, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer one connection as `canary`: count it, then redirect or send BODY."""
    canary.connections += 1
    try:
        await reader.readuntil(b"\r\n\r\n")
        if canary.redirect_to:
            head = f"HTTP/1.1 302 Found\r\nLocation: {canary.redirect_to}\r\nContent-Length: 0\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n")
        else:
            head = f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {len(BODY)}\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + BODY)
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def resolver(mapping: dict[str, str]) -> Callable[[str, int], Awaitable[list[str]]]:
    """A resolver for test names (as a DNS server would answer), falling back to the system's."""

    async def resolve(host: str, port: int) -> list[str]:
        if host in mapping:
            return [mapping[host]]
        return await system_resolve(host, port)

    return resolve
