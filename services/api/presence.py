"""Which model aliases workers serve right now, read from the `workers` KV bucket (TTL heartbeats)."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass

import msgspec

import bus
from bus import JetStream
from schemas.api import ModelInfo
from schemas.presence import WorkerPresence
from schemas.sampling import SamplingParams
from schemas.streams import WORKERS_KV
from schemas.subjects import ALL_KEYS, presence_of

log = logging.getLogger(__name__)
_decoder = msgspec.json.Decoder(WorkerPresence)


async def live_workers(js: JetStream, alias: str | None = None) -> list[WorkerPresence]:
    """Workers whose heartbeat has not expired (all, or those serving `alias`)."""
    # Keys are `<alias>.<worker_id>` (schemas.subjects.presence_key); expired and deleted ones are left out.
    entries = await bus.KV(js, WORKERS_KV.bucket).entries(
        presence_of(alias) if alias else ALL_KEYS, timeout=5.0
    )
    workers = []
    for entry in entries:
        try:
            workers.append(_decoder.decode(entry.value))
        except msgspec.DecodeError:
            log.warning("skipping unreadable presence entry %s", entry.key)
    return workers


async def serves(js: JetStream, alias: str) -> bool:
    """True when at least one live worker serves `alias`."""
    return await model_defaults(js, alias) is not None


@dataclass(frozen=True)
class Served:
    """How an alias is served now: its default sampling, and the most tokens a reply may ask (0: any)."""

    defaults: SamplingParams
    max_new_tokens: int = 0

    def refuses(self, params: SamplingParams) -> str | None:
        """Why `params` asks more than the alias allows (None: it does not)."""
        cap = self.max_new_tokens
        if cap and params.max_new_tokens > cap:
            return f"{params.max_new_tokens} new tokens asked; this model allows at most {cap}"
        return None


async def model_defaults(js: JetStream, alias: str) -> Served | None:
    """The default sampling of `alias` (its longest-running live worker's) and the smallest cap its
    workers announce; None when no worker serves it."""
    return served_from(await live_workers(js, alias), alias)


def served_from(live: list[WorkerPresence], alias: str) -> Served | None:
    """How `alias` is served by these live workers (`model_defaults` of one presence read)."""
    workers = sorted((w for w in live if w.alias == alias), key=lambda w: w.started_at)
    if not workers:
        return None
    caps = [w.max_new_tokens for w in workers if w.max_new_tokens]
    return Served(workers[0].defaults, min(caps, default=0))


class ModelDefaults:
    """Each alias's default sampling and cap (`model_defaults`), kept for `max_age` seconds once found.

    Every post and completion needs it before its reply request; reading presence costs a KV scan
    (1.5-3 ms). Heartbeats come every 5 s and live 15 s, so an answer a second old is as true as a
    fresh one. Only served aliases are kept: a worker that has just started is seen at once.
    """

    def __init__(self, js: JetStream, max_age: float = 1.0) -> None:
        self.js = js
        self.max_age = max_age
        self._found: dict[str, tuple[float, Served]] = {}

    async def of(self, alias: str) -> Served | None:
        """The default sampling and cap of `alias`; None when no worker serves it."""
        now = time.monotonic()
        kept = self._found.get(alias)
        if kept is not None and now - kept[0] < self.max_age:
            return kept[1]
        defaults = await model_defaults(self.js, alias)
        if defaults is None:
            self._found.pop(alias, None)
        else:
            self._found[alias] = (now, defaults)
        return defaults


def group_models(workers: list[WorkerPresence]) -> list[ModelInfo]:
    """One ModelInfo per alias with its worker count, active requests and capacity."""
    by_alias: dict[str, list[WorkerPresence]] = defaultdict(list)
    for worker in workers:
        by_alias[worker.alias].append(worker)
    return [
        ModelInfo(
            id=alias,
            created=int(min(w.started_at for w in group).timestamp()),
            workers=len(group),
            active=sum(w.active for w in group),
            capacity=sum(w.capacity for w in group),
            images=any(w.images for w in group),
            max_context=min(w.max_context for w in group),
            engines=sorted({f"{w.engine} {w.dtype} {w.quantization}" for w in group if w.engine}),
        )
        for alias, group in sorted(by_alias.items())
    ]
