"""The arena's pool and its draw: which two models a new battle gets (docs/arena.md, "The pool and the draw").

Pool = the aliases workers serve now, only those of `include` (when it is not empty), never those of
`exclude` (the last `arena.pool.set` holds; read from the log for every battle: it is one message).
The draw balances how often each pair met: among the unordered pairs of the pool, uniformly one of those
with the fewest battles so far (the read model's `battles` table counts them), then a coin flip for
which of the two is side A.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping

from bus import JetStream
from logtools.arena_votes import read_pool
from services.api.presence import live_workers

Pair = tuple[str, str]  # an unordered pair, as (lesser alias, greater alias)


async def pool_now(js: JetStream) -> list[str]:
    """The aliases a battle may draw now, sorted."""
    served = {worker.alias for worker in await live_workers(js)}
    setting = await read_pool(js)  # None: never set, every served model is in the pool
    if setting is not None:
        if setting.include:
            served &= set(setting.include)
        served -= set(setting.exclude)
    return sorted(served)


def draw(pool: list[str], met: Mapping[Pair, int], rng: random.Random | None = None) -> tuple[str, str]:
    """Side A's and side B's models: a pair of the pool that met least often (`met`: battles per pair;
    absent pairs never met), uniformly among those, in a random order. The pool has two models at least."""
    rng = rng or random.SystemRandom()
    pairs = list(itertools.combinations(sorted(set(pool)), 2))
    if not pairs:
        raise ValueError("a draw needs two models in the pool")
    fewest = min(met.get(pair, 0) for pair in pairs)
    first, second = rng.choice([pair for pair in pairs if met.get(pair, 0) == fewest])
    return (first, second) if rng.random() < 0.5 else (second, first)
