"""A worker's presence in the KV bucket `workers`: what it serves, how busy it is; beaten until it stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

import bus
import schemas
from schemas.presence import WorkerPresence
from schemas.sampling import SamplingParams
from schemas.subjects import presence_key
from services.llm_worker.engine import Engine
from services.llm_worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def presence_of(
    settings: WorkerSettings,
    engine: Engine,
    started_at: datetime,
    defaults: SamplingParams,
    active: int,
    batch_active: int,
) -> WorkerPresence:
    """The heartbeat of a worker with `active` replies under way, `batch_active` of them batch lines."""
    resolved = settings.resolved
    return WorkerPresence(
        worker_id=settings.worker_id,
        alias=settings.alias,
        model=settings.model,
        host=settings.host,
        active=active,
        batch_active=batch_active,
        capacity=settings.capacity,
        images=engine.supports_images,
        started_at=started_at,
        heartbeat_at=schemas.now(),
        defaults=defaults,
        max_context=getattr(engine, "max_context", 0),
        max_new_tokens=settings.max_new_tokens_cap,
        engine=resolved.engine if resolved else "",
        dtype=resolved.dtype if resolved else "",
        quantization=resolved.quantization if resolved else "",
    )


async def beat(presence_kv: bus.KV, presence: WorkerPresence) -> None:
    """Put one heartbeat."""
    await presence_kv.put(presence_key(presence.alias, presence.worker_id), schemas.encode(presence))


async def beat_every(
    presence_kv: bus.KV, every: float, presence: Callable[[], WorkerPresence], stop: asyncio.Event
) -> None:
    """A heartbeat every `every` seconds until `stop`."""
    while not stop.is_set():
        await asyncio.sleep(every)
        try:
            await beat(presence_kv, presence())
        except bus.BusError as exc:  # NATS may be restarting; keep beating
            log.warning("heartbeat failed: %s", exc)
