"""Connect to NATS with reconnects, and the Bus handle that the services share."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.errors import AuthorizationError
from nats.js import JetStreamContext

from bus.errors import BusUnavailable
from schemas.subjects import DEFAULT_INBOX_PREFIX

log = logging.getLogger(__name__)


@dataclass
class Bus:
    """A NATS connection and its JetStream context."""

    nc: Client
    js: JetStreamContext
    closing: list[Client] = field(default_factory=list)

    async def close(self) -> None:
        """Flush pending publishes and close the connection."""
        self.closing.append(self.nc)
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:  # noqa: BLE001 - closing anyway
                await self.nc.close()


async def connect(
    url: str,
    name: str,
    timeout: float = 5.0,
    inbox_prefix: str = DEFAULT_INBOX_PREFIX,
    first_connect: float | None = None,
    tls: ssl.SSLContext | None = None,
) -> Bus:
    """Connect to NATS (credentials may be in the URL) and keep reconnecting forever when cut.

    `inbox_prefix` names where answers to this connection's requests arrive; a worker uses its own
    (WORKER_INBOX_PREFIX) so its NATS user may read those and no one else's answers.
    `first_connect`: seconds the first connection may take before BusUnavailable (saying the last
    error, e.g. an authorization violation); None keeps trying (a service waiting for its server).
    `tls`: the context to verify the server with (and present a client certificate), for servers
    that require TLS; None uses TLS only for `tls://` URLs, with the system's CAs.
    """
    last_error: list[str] = []
    refused = asyncio.Event()  # the server said who we are may not connect: trying again will not help
    refusal: list[str] = []

    async def on_error(exc: Exception) -> None:
        said = str(exc) or type(exc).__name__
        if isinstance(exc, AuthorizationError) or "authorization violation" in said.lower():
            refusal.append(said)  # what the server said, not a later "connection reset"
            refused.set()
        if not last_error or last_error[-1] != said:  # once per distinct error, not every 0.25 s
            log.warning("nats %s: %s", name, said)
        last_error.append(said)
        del last_error[:-1]

    async def on_disconnect() -> None:
        if closing:  # our own close or drain, not a cut
            return
        log.warning("nats %s: disconnected", name)

    async def on_reconnect() -> None:
        last_error.clear()
        log.warning("nats %s: reconnected", name)

    closing: list[Client] = []  # becomes non-empty once the caller closes the connection

    options: dict[str, Any] = {  # nats-py types its seconds as int; it takes floats
        "servers": [u.strip() for u in url.split(",")],
        "name": name,
        "connect_timeout": timeout,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.25,
        "allow_reconnect": True,
        "error_cb": on_error,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": on_reconnect,
        "pending_size": 64 * 1024 * 1024,
        "inbox_prefix": inbox_prefix,
    }
    if tls is not None:
        options["tls"] = tls
    nc = Client()
    connecting = nc.connect(**options)
    if first_connect is None:
        await connecting
    else:
        attempt = asyncio.ensure_future(connecting)
        gave_up = asyncio.ensure_future(refused.wait())
        await asyncio.wait([attempt, gave_up], timeout=first_connect, return_when=asyncio.FIRST_COMPLETED)
        gave_up.cancel()
        if not attempt.done() or attempt.cancelled() or attempt.exception() is not None:
            attempt.cancel()
            closing.append(nc)
            await nc.close()
            why = last_error[-1] if last_error else "no answer"
            if refused.is_set():
                raise BusUnavailable(f"the server refused the credentials ({refusal[0]})")
            raise BusUnavailable(f"no connection within {first_connect:g} s (last error: {why})")
    return Bus(nc=nc, js=nc.jetstream(timeout=timeout), closing=closing)
