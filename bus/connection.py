"""Connect to NATS with reconnects, and the Bus handle that the services share."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

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


async def connect(url: str, name: str, timeout: float = 5.0, inbox_prefix: str = DEFAULT_INBOX_PREFIX) -> Bus:
    """Connect to NATS (credentials may be in the URL) and keep reconnecting forever when cut.

    `inbox_prefix` names where answers to this connection's requests arrive; a worker uses its own
    (WORKER_INBOX_PREFIX) so its NATS user may read those and no one else's answers.
    """

    async def on_error(exc: Exception) -> None:
        log.warning("nats %s: %s", name, exc)

    async def on_disconnect() -> None:
        if closing:  # our own close or drain, not a cut
            return
        log.warning("nats %s: disconnected", name)

    async def on_reconnect() -> None:
        log.warning("nats %s: reconnected", name)

    closing: list[Client] = []  # becomes non-empty once the caller closes the connection

    nc = await nats.connect(
        servers=[u.strip() for u in url.split(",")],
        name=name,
        connect_timeout=timeout,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        allow_reconnect=True,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        pending_size=64 * 1024 * 1024,
        inbox_prefix=inbox_prefix,
    )
    return Bus(nc=nc, js=nc.jetstream(timeout=timeout), closing=closing)
