"""Where a replay stops: the log as it was at a CHAT sequence or at a time, or where the live projector is.

Each answer is what `replay(until=...)` takes: per stream the last sequence to fold.
"""

from __future__ import annotations

from datetime import datetime

import bus
from schemas.queries import Digest, DigestQuery
from schemas.streams import CHAT, IDENTITY, PROJECTOR_SERVICE
from schemas.subjects import service_endpoint


async def at_chat_seq(nbus: bus.Bus, chat_seq: int) -> dict[str, int]:
    """CHAT up to `chat_seq`, IDENTITY up to the same moment (when that CHAT message was stored)."""
    until = {CHAT.name: chat_seq}
    stamp = await bus.time_at(nbus.js, CHAT.name, chat_seq)
    if stamp is not None:
        until[IDENTITY.name] = await bus.seq_at_time(nbus.js, IDENTITY.name, stamp)
    return until


async def at_time(nbus: bus.Bus, when: datetime) -> dict[str, int]:
    """CHAT and IDENTITY as they were at `when`."""
    return {s: await bus.seq_at_time(nbus.js, s, when) for s in (CHAT.name, IDENTITY.name)}


async def live_digest(nbus: bus.Bus, timeout: float = 120.0) -> Digest:
    """The running projector's digest of its read model; its checkpoints say where a replay must stop
    to compare with it. Raises bus.ServiceError if no projector answers."""
    return await bus.call(
        nbus.nc, service_endpoint(PROJECTOR_SERVICE, "digest"), DigestQuery(), Digest, timeout=timeout
    )
